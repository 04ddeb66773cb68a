"""Plain data handed from the report runner to the renderer (coverage.py-style "view data").

The runner fills these; ``ganlab.report.render`` lays them out; ``metrics.json`` serialises them.
"""
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ganlab.plugin.components import Result

OK, FAILED, SKIPPED, TIMED_OUT = "ok", "failed", "skipped", "timed out"
SCHEMA_VERSION = 2  # of metrics.json; raise it when a key changes meaning or goes away


@dataclass
class ComponentRun:
    """One component's outcome in a report."""

    name: str
    kind: str  # "evaluator" or "analysis"
    description: str
    plugin: str  # the plugin that registered it
    status: str  # OK, FAILED, SKIPPED or TIMED_OUT
    seconds: float = 0.0
    result: Result | None = None
    error: str | None = None  # "ValueError: message" when FAILED
    traceback: str | None = None  # the full Python traceback when FAILED by an exception
    reason: str | None = None  # why it was SKIPPED
    options: dict[str, Any] = field(default_factory=dict)
    directions: dict[str, str | None] = field(default_factory=dict)  # metric -> "higher", "lower" or None


@dataclass
class ReportData:
    """Everything one report page shows."""

    title: str
    checkpoint: str
    config: dict[str, Any]
    dataset: str | None
    versions: dict[str, str]  # ganlab, torch, python
    seed: int
    date: str  # ISO 8601
    training: dict[str, Any]  # epoch, step, options recorded in the checkpoint
    history: dict[str, list[float]]  # per-step loss_D, loss_G, D_x, D_G_z and epoch_end_steps
    samples: Any  # float tensor C x H x W in [0, 1]: a grid of generated images
    components: list[ComponentRun] = field(default_factory=list)
    # metric name -> [(epoch, value), ...] over a run's epoch checkpoints (`ganlab report RUN_DIR`)
    across_epochs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # figure title -> the series drawn in it (components' ``series_figures``); None: a figure per series
    across_groups: dict[str, list[str]] | None = None
    # series -> {"epoch", "value", "direction"}: its best epoch, for series whose metric has a direction
    across_best: dict[str, dict[str, Any]] = field(default_factory=dict)
    # faults outside any component (an unreadable epoch file, a broken generator, malformed metadata)
    problems: list[str] = field(default_factory=list)
    # shown beside the problems without failing the report: plugins that failed to load (their parts are missing),
    # a dataset that changed since training
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.components if c.status == FAILED]

    def metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` content: every metric plus how it was made."""
        return {"schema_version": SCHEMA_VERSION, "checkpoint": self.checkpoint, "dataset": self.dataset,
                "seed": self.seed, "date": self.date, "versions": self.versions, "config": self.config,
                "training": {k: v for k, v in self.training.items() if k != "options"},
                "components": {c.name: _component_metrics(c) for c in self.components},
                "across_epochs": {k: [list(p) for p in v] for k, v in self.across_epochs.items()},
                "across_epochs_best": dict(self.across_best), "problems": list(self.problems),
                "warnings": list(self.warnings)}

    def metrics_json(self) -> str:
        """``metrics()`` as strict JSON (RFC 8259): non-finite numbers become null, listed under ``non_finite``."""
        non_finite: list[str] = []
        content = _plain(self.metrics(), "", non_finite)
        content["non_finite"] = non_finite
        return json.dumps(content, indent=2, allow_nan=False)


def _component_metrics(c: ComponentRun) -> dict[str, Any]:
    result = c.result or Result()
    return {"kind": c.kind, "plugin": c.plugin, "status": c.status, "seconds": round(c.seconds, 3),
            "metrics": dict(result.metrics), "directions": dict(c.directions), "error": c.error,
            "traceback": c.traceback, "reason": c.reason, "options": c.options, "verdict": result.verdict,
            "problems": list(result.problems)}


def _plain(value: Any, where: str, non_finite: list[str]) -> Any:
    """JSON-ready copy of ``value``: numpy/torch scalars as numbers, NaN/inf as None (their paths recorded)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k), non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 or hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        non_finite.append(f"{where} = {value}")
        return None
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
