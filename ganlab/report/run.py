"""Running components on one checkpoint: what they share (``Plan``), which ones run, and each one's outcome.

A component that raises is recorded as failed and the rest still run; one past its time limit is stopped and
marked timed out; Ctrl-C ends the report (it is not a component's failure).
"""
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from traceback import format_exc
from typing import Any

import torch
from tqdm.auto import tqdm

from ganlab.api import dataset_source, load
from ganlab.data.datasets import DatasetSource, Layout
from ganlab.errors import GanlabError
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.plugin.components import Component, RunContext, check_result, unmet_needs
from ganlab.plugin.options import check_names, resolve_options
from ganlab.plugin.registry import get_registry
from ganlab.report.data import FAILED, OK, SKIPPED, TIMED_OUT, ComponentRun
from ganlab.report.time_limit import ComponentTimeout, time_limit
from ganlab.store.cache import Cache
from ganlab.store.claims import absolute

Say = Callable[[str], None]


@dataclass
class Plan:
    """What every component run of one report shares: the data, seed, device, options, cache and limits."""

    dataset: str | None
    data_root: str | None
    seed: int
    device: torch.device
    settings: dict[str, Any]
    cache: Cache = field(default_factory=Cache.disabled)
    splits: dict[str, Any] = field(default_factory=dict)  # decoded dataset splits, shared by the runs
    skip_bad_images: bool = False
    timeout: float | None = None  # seconds per component (None: no limit)
    abandon: Callable[[], None] = lambda: None  # runs if a timed-out component refuses to stop
    settle_batchnorm: bool = False  # recompute G's BatchNorm statistics from random z after loading

    def load(self, path: Path) -> LoadedGAN:
        """The checkpoint at ``path`` on the plan's device (G's BatchNorm statistics settled if asked)."""
        gan = load(path, self.device)
        return gan.settle_batchnorm(seed=self.seed) if self.settle_batchnorm else gan


def select_components(only: list[str] | None, skip: list[str] | None) -> list[Component]:
    registry = get_registry()
    available = registry.components()
    for name in (only or []) + (skip or []):
        if name not in available:
            raise GanlabError(f"unknown component {name!r}; available: {', '.join(sorted(available)) or 'none'}"
                              f"{registry.failed_hint()}")
    names = list(dict.fromkeys(only)) if only else sorted(  # a name given twice runs once
        (n for n in available if getattr(available[n], "default", True)),
        key=lambda n: (available[n].kind != "evaluator", n))
    chosen = [available[n] for n in names if n not in (skip or [])]
    if not chosen:
        raise GanlabError("nothing to run: --skip leaves out every component --only names")
    return chosen


def check_settings(settings: dict[str, Any]) -> None:
    """Every --set value, for any component (run here or not), checked before anything runs."""
    known = get_registry().components()
    for key in settings:
        if key.partition(".")[0] not in known:
            raise GanlabError(f"--set {key}: no component named {key.partition('.')[0]!r} "
                              f"(available: {', '.join(sorted(known))})")
    for component in known.values():
        values = resolve_options(component, settings)
        for name, spec in component.options.items():
            key = f"{component.name}.{name}"
            if key in settings and getattr(spec, "of", None):
                check_names(spec, values[name], key, getattr(get_registry(), spec.of))


def check_before_training(only: list[str] | None, settings: dict[str, Any], dataset: str,
                          data_root: str | None) -> None:
    """What would refuse the report after training, checked first: every --set value, and each component in
    ``only`` against the dataset's labels and held-out split (D exists: it is about to be trained)."""
    check_settings(settings)
    _, layout = dataset_of(dataset, data_root)
    for component in select_components(only, None) if only else []:
        reasons = unmet_needs(component, has_labels=bool(layout and layout.labelled),
                              has_heldout=bool(layout and layout.heldout), has_discriminator=True,
                              has_dataset=True, has_gpu=True)
        if reasons:
            raise GanlabError(f"{component.name} cannot run on dataset {dataset}: it {'; '.join(reasons)}; nothing "
                              "was trained")


def dataset_of(dataset: str | None, data_root: str | Path | None) -> tuple[DatasetSource | None, Layout | None]:
    if not dataset:
        return None, None
    source = dataset_source(dataset)
    return source, source.layout(data_root, dataset.partition(":")[2] or None)


def missing_needs(component: Component, gan: LoadedGAN, source: DatasetSource | None, layout: Layout | None,
           device: torch.device, data_root: str | None = None) -> list[str]:
    reasons = unmet_needs(component, has_labels=bool(layout and layout.labelled),
                          has_heldout=bool(layout and layout.heldout), has_discriminator=gan.discriminator is not None,
                          has_dataset=source is not None, has_gpu=device.type == "cuda")
    if reasons and data_root and not Path(data_root).exists():
        reasons[-1] += f" (the data folder {data_root} does not exist: give --data-root DIR)"
    return reasons


def run_components(gan: LoadedGAN, components: list[Component], plan: Plan, *, progress: bool = True,
                   say: Say | None = None) -> list[ComponentRun]:
    """Run each component, recording its status, time, result or error; ``say`` gets a ``status_line`` each. One
    still running after ``plan.timeout`` seconds is stopped and marked timed out; Ctrl-C ends the report, it is
    not a component's failure."""
    registry = get_registry()
    source, layout = dataset_of(plan.dataset, plan.data_root)
    runs = []
    for component in components:
        run = ComponentRun(component.name, component.kind, component.description,
                           registry.component_owner(component.name), SKIPPED,
                           options=resolve_options(component, plan.settings))  # check_settings checked them first
        reasons = missing_needs(component, gan, source, layout, plan.device, plan.data_root)
        try:
            run.reason = "; ".join(reasons) or component.available(run.options) or None
        except Exception as exc:  # an optional package a plugin cannot import, say: that component fails alone
            run.status, run.error = FAILED, f"{type(exc).__name__} in available(): {exc}"
        if run.reason is None and run.status != FAILED:
            ctx = RunContext(gan=gan, device=plan.device, seed=plan.seed, cache=plan.cache, options=run.options,
                             dataset=plan.dataset, data_root=Path(plan.data_root) if plan.data_root else None,
                             progress=lambda it=None, **kw: tqdm(it, disable=not progress, leave=False, **kw),
                             quiet=not progress, split_cache=plan.splits, source=source, layout=layout,
                             skip_bad_images=plan.skip_bad_images, detectors=dict(registry.detectors),
                             feature_spaces=dict(registry.feature_spaces))
            _run_one(component, ctx, run, plan)
        if say is not None:
            say(status_line(run))
        runs.append(run)
    return runs


def _run_one(component: Component, ctx: RunContext, run: ComponentRun, plan: Plan) -> None:
    """Run one component into ``run``: its result and time, or why it failed or timed out."""
    torch.manual_seed(plan.seed)
    start = time.perf_counter()
    try:
        with time_limit(plan.timeout, plan.abandon):
            run.result = check_result(component.run(ctx), component.name)
        run.status = OK
        run.directions = {metric: component.direction(metric) for metric in run.result.metrics}
    except ComponentTimeout as exc:
        run.status, run.error = TIMED_OUT, f"ComponentTimeout: {exc} (--component-timeout)"
    except GanlabError as exc:
        run.status, run.error, run.traceback = FAILED, f"GanlabError: {exc}", format_exc()
    except SystemExit as exc:  # a plugin calling sys.exit() must not end the report
        run.status, run.traceback = FAILED, format_exc()
        run.error = f"SystemExit: {component.name} called sys.exit({exc.code!r})"
    except Exception as exc:  # a component's bug must not lose the rest of the report
        run.status, run.error, run.traceback = FAILED, f"{type(exc).__name__}: {exc}", format_exc()
    run.seconds = time.perf_counter() - start


def status_line(run: ComponentRun) -> str:
    """One terminal line per component: ok with its time, skipped with the reason, failed with the error's line."""
    if run.status == OK:
        return f"  {run.name}: ok ({run.seconds:.1f} s)"
    if run.status == SKIPPED:
        return f"  {run.name}: skipped ({run.reason})"
    if run.status == TIMED_OUT:
        return f"  {run.name}: TIMED OUT ({run.error.removeprefix('ComponentTimeout: ')})"
    first = (str(run.error).strip().splitlines() or ["?"])[0]
    return f"  {run.name}: FAILED ({first})"


def heldout_problems(gan: LoadedGAN, components: list[Component], runs: list[ComponentRun],
                     plan: Plan) -> tuple[list[str], list[str]]:
    """(problems, warnings) about held-out numbers that may not be held out: G and D trained on a split that holds
    the held-out images, or on a split whose size has changed since (a split drawn by seed moves with it)."""
    used = [run.name for run, component in zip(runs, components) if run.status == OK and "heldout" in component.needs]
    recorded = gan.meta.get("dataset")
    source, layout = dataset_of(plan.dataset, plan.data_root)
    if not used or not isinstance(recorded, dict) or recorded.get("name") != plan.dataset or not layout:
        return [], []
    if (str(absolute(gan.data_root)) if gan.data_root else None) != plan.data_root:  # not the images trained on
        return [], []
    split, size, heldout = recorded.get("split") or "train", recorded.get("size"), layout.heldout
    if {heldout, "all"} & set(str(split).split("+")):
        return [f"G and D were trained on the {split!r} split, which holds the held-out {heldout!r} images: "
                f"{', '.join(used)} measured images they were trained on; train on 'train' for held-out numbers"], []
    options = gan.meta.get("options") if isinstance(gan.meta.get("options"), dict) else {}
    # only a dataset whose splits depend on its files (a user's folder) can change under a run
    if source.inspect is None or any(options.get(k) for k in ("limit", "exclude", "skip_bad_images")) \
            or not isinstance(size, int):
        return [], []
    try:
        now = len(source.open(split, Path(plan.data_root) if plan.data_root else None, False,
                              plan.dataset.partition(":")[2] or None))
    except Exception:  # whatever the folder now holds, the components that ran read it; this is only a warning
        return [], []
    if now == size:
        return [], []
    return [], [f"the {split!r} split of {plan.dataset} holds {now} images, {size} when G and D were trained: if a "
                f"held-out split is drawn from the same images, {', '.join(used)} may have measured images they saw"]
