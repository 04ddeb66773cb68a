"""Results over GAN seeds: ``ganlab run EXPERIMENT --seeds K`` trains K GANs and summarises their reports.

A band over label draws says how much a number moves when other images are labelled; it says nothing about how
much it moves when the same recipe trains another GAN. This module reads each seed's ``metrics.json`` and gives
every numeric metric's mean and sample standard deviation (ddof 1) over seeds; components add tables of their
own through the ``ganlab_summarise_seeds`` hook. Every seed's report uses the same report seed, so label draws
are the same images in each.
"""
import json
import math
import statistics
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.store.staged import StagedFolder


def seed_folders(base: str | Path, seeds: list[int]) -> dict[int, Path]:
    """Each seed's folder beside ``base``: ``runs/probe-digits`` -> ``runs/probe-digits-seed3``."""
    return {seed: _beside(base, f"-seed{seed}") for seed in seeds}


def summary_folder(base: str | Path) -> Path:
    """Where the summary goes, beside the seeds' folders: ``reports/probe-digits`` -> ``reports/probe-digits-seeds``."""
    return _beside(base, "-seeds")


def _beside(base: str | Path, suffix: str) -> Path:
    """``base`` with ``suffix`` added to its last name ("." or "x/" become absolute paths that have one)."""
    path = Path(base)
    path = path if path.name and path.name not in (".", "..") else path.resolve()
    return path.with_name(path.name + suffix)


def read_metrics(reports: dict[int, Path]) -> dict[int, dict]:
    """{seed: metrics.json content} from each seed's report folder; a missing or damaged one is a GanlabError."""
    found = {}
    for seed, folder in reports.items():
        path = Path(folder) / "metrics.json"
        try:
            found[seed] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GanlabError(f"cannot read seed {seed}'s report {path}: {exc}; run the experiment again") from None
    return found


def summarise(metrics: dict[int, dict]) -> dict:
    """Mean, std (ddof 1; 0 for one seed), min, max and n over seeds of each numeric metric of each component; a
    metric missing in some seed's report (its component skipped or failed there) is summarised over the others."""
    seeds = sorted(metrics)
    values: dict[str, dict[str, list[float | None]]] = {}
    for i, seed in enumerate(seeds):
        for name, component in metrics[seed].get("components", {}).items():
            for key, value in (component.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    values.setdefault(name, {}).setdefault(key, [None] * len(seeds))[i] = float(value)
    return {"seeds": seeds, "components": {name: {key: _stats(xs) for key, xs in keys.items()}
                                           for name, keys in values.items()}}


def _stats(xs: list[float | None]) -> dict:
    found = [x for x in xs if x is not None]
    return {"mean": statistics.fmean(found), "std": statistics.stdev(found) if len(found) > 1 else 0.0,
            "min": min(found), "max": max(found), "n": len(found), "values": xs}


def markdown(summary: dict, experiment: str, tables: list | None = None) -> str:
    """seeds.md: the components' own tables (``tables``, from ``ganlab_summarise_seeds``), then every metric's
    mean ± std over seeds."""
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [f"# {experiment} over GAN seeds {seeds}", "",
             "Each value: mean ± std (ddof 1) over GAN seeds of the seed's own figure.", ""]
    for table in tables or []:
        lines += [f"## {table.title}", "", *_table(table.columns, table.rows), ""]
    rows = [[name, key, f"{s['mean']:.6g}", f"{s['std']:.3g}", f"{s['min']:.6g}", f"{s['max']:.6g}", s["n"]]
            for name, keys in sorted(summary["components"].items()) for key, s in sorted(keys.items())]
    lines += ["## Every metric", "", *_table(["component", "metric", "mean", "std", "min", "max", "seeds"], rows)]
    return "\n".join(lines) + "\n"


def _table(columns: list, rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in [columns, *rows]]
    return [lines[0], "|" + "---|" * len(columns), *lines[1:]]


def write_summary(out: str | Path, summary: dict, experiment: str, reports: dict[int, Path],
                  tables: list | None = None) -> Path:
    """seeds.json and seeds.md in ``out``, written as one folder (``ganlab.StagedFolder``); returns seeds.md."""
    data = {**summary, "experiment": experiment, "reports": {str(k): str(v) for k, v in reports.items()},
            "tables": [{"title": t.title, "columns": list(t.columns), "rows": t.rows} for t in tables or []]}
    with StagedFolder(out, "seed summary") as folder:
        folder.write_text("seeds.json", json.dumps(data, indent=1, default=str) + "\n")
        folder.write_text("seeds.md", markdown(summary, experiment, tables))
        return folder.commit() / "seeds.md"
