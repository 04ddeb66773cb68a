"""``ganlab report``: load a checkpoint, run the applicable components, write index.html + metrics.json.

Data flows one way: checkpoint -> LoadedGAN -> RunContext -> component.run(ctx) -> Result ->
ReportData -> renderer.
"""
import datetime as _dt
import functools
import math
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid

import ganlab.report.epochs as epochs
from ganlab import __version__
from ganlab.defaults import ReportOptions
from ganlab.errors import GanlabError, a, count
from ganlab.model.checkpoint import resolve
from ganlab.model.devices import select_device
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.plugin.registry import get_registry
from ganlab.report.data import TIMED_OUT, ReportData
from ganlab.report.run import (
    Plan,
    Say,
    check_settings,
    dataset_of,
    heldout_problems,
    missing_needs,
    run_components,
    select_components,
)
from ganlab.store.atomic import os_error
from ganlab.store.cache import Cache
from ganlab.store.claims import absolute, folder_kind
from ganlab.store.staged import StagedFolder

DEFAULTS = ReportOptions()


def make_report(checkpoint: str | Path, *, only: list[str] | None = None, skip: list[str] | None = None,
                out: str | Path | None = None, dataset: str | None = None, data_root: str | None = None,
                seed: int = DEFAULTS.seed, device: str = DEFAULTS.device, settings: dict[str, Any] | None = None,
                all_across_epochs: bool = False, progress: bool = True, say: Say | None = None,
                skip_bad_images: bool = False, select_epoch: str | None = None,
                epoch_points: int | None = DEFAULTS.epoch_points, settle_batchnorm: bool = False,
                component_timeout: float | None = DEFAULTS.component_timeout) -> tuple[ReportData, Path]:
    """Write ``OUT/index.html`` and ``OUT/metrics.json`` for a checkpoint (or a run folder); return the data and OUT.

    The report is built beside ``OUT`` (default ``reports/<checkpoint or run name>``) and swapped in at the end, so
    a failure leaves the previous report whole. A component named in ``only`` that cannot run here is an error
    before anything runs. ``select_epoch`` ("COMPONENT.METRIC", a run folder only): report on the epoch checkpoint
    where that metric is best by its declared direction, looking at every epoch; otherwise the plots across
    training use at most ``epoch_points`` epoch files (None or 0: all).
    """
    checkpoint = absolute(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else None
    path = resolve(checkpoint)
    name = run_dir.name if run_dir else path.stem
    data_root = str(absolute(data_root)) if data_root else None
    run_folder = run_dir or (path.parent if folder_kind(path.parent) == "run" else None)
    folder = StagedFolder(out or Path("reports") / name, "report",  # checked and locked first
                          sources=[Path(p) for p in (data_root, run_folder) if p])
    try:
        plan = Plan(dataset, data_root, seed, select_device(device), settings or {}, cache=Cache(say=say),
                    skip_bad_images=skip_bad_images, timeout=component_timeout or None,
                    settle_batchnorm=settle_batchnorm, abandon=lambda: _abandon(folder, say))
        data = _report_data(path, run_dir, name, plan, only=only, skip=skip, everything=all_across_epochs,
                            progress=progress, say=say, select_epoch=select_epoch, epoch_points=epoch_points)
        from ganlab.report.render import render_report  # matplotlib loads only when a page is drawn

        try:
            render_report(data, folder.staging)
        except OSError as exc:
            raise os_error("write the report into", folder.out, exc) from None
        folder.write_text("metrics.json", data.metrics_json())
        return data, folder.commit()
    finally:
        folder.discard()


def _abandon(folder: StagedFolder, say: Say | None) -> None:
    (say or functools.partial(print, file=sys.stderr))(
        f"a component did not stop within its time limit; the report was not written to {folder.out}")
    folder.discard()


def _prepare(path: Path, plan: Plan, only: list[str] | None, skip: list[str] | None) -> tuple[LoadedGAN, list]:
    """The loaded checkpoint and the chosen components; the dataset and data root recorded in the checkpoint
    fill ``plan``'s when it has none. A component named in ``only`` that cannot run here is an error."""
    gan = plan.load(path)
    plan.dataset = plan.dataset or gan.dataset
    plan.data_root = plan.data_root or (str(absolute(gan.data_root)) if gan.data_root else None)
    components = select_components(only, skip)
    check_settings(plan.settings)
    source, layout = dataset_of(plan.dataset, plan.data_root)
    for component in components if only else []:
        if reasons := missing_needs(component, gan, source, layout, plan.device, plan.data_root):
            raise GanlabError(f"{component.name} cannot run here: it {'; '.join(reasons)} "
                              f"(dataset: {plan.dataset or 'none'})")
    return gan, components


def _report_data(path: Path, run_dir: Path | None, name: str, plan: Plan, *, only, skip, everything: bool,
                 progress: bool, say: Say | None, select_epoch: str | None, epoch_points: int | None) -> ReportData:
    """Run the components (and the across-epochs series of a run folder) into the page's data."""
    warnings = get_registry().errors()  # plugins that failed to load: their components are missing
    for line in warnings if say else []:
        say(f"warning: {line}")
    gan, components = _prepare(path, plan, only, skip)
    series: dict[str, list[tuple[int, float]]] = {}
    problems: list[str] = []
    selected: dict[str, Any] = {}
    if select_epoch:
        epochs.check_selection(select_epoch, run_dir, components, everything)
        series = epochs.across_epochs(run_dir, components, plan, everything=everything, progress=progress,
                                      problems=problems)
        selected = epochs.best_epoch(series, select_epoch, run_dir, components)
        path = selected.pop("checkpoint")
        gan = plan.load(path)
    if say is not None:
        chosen = (f" (epoch {selected['epoch']}: {select_epoch} is best there, {selected['direction']} is better)"
                  if selected else "")
        say(f"report for {path}{chosen} ({count(len(components), 'component')}, dataset {plan.dataset or 'none'})")
    runs = run_components(gan, components, plan, progress=progress, say=say)
    history, history_problems = _history(gan.meta)
    data_problems, data_warnings = heldout_problems(gan, components, runs, plan)
    problems += history_problems + data_problems
    warnings += data_warnings
    problems += [f"{run.name} {run.error.removeprefix('ComponentTimeout: ')}" for run in runs
                 if run.status == TIMED_OUT]
    if run_dir and len(epochs.epoch_checkpoints(run_dir)) > 1 and not select_epoch:
        series = epochs.across_epochs(run_dir, components, plan, everything=everything, progress=progress,
                                      problems=problems, points=epoch_points, done=(gan, runs))
    groups = epochs.series_groups(series, components, problems)
    raw = gan.sample(64, seed=plan.seed)
    problems += model_problems(gan, raw, plan.settle_batchnorm)
    options = gan.meta.get("options")
    training = {"epoch": epochs.meta_int(gan.meta, "epoch"), "step": epochs.meta_int(gan.meta, "step"),
                "format": str(gan.meta.get("format") or ""), "options": options if isinstance(options, dict) else None,
                **({"selected_by": selected} if selected else {})}
    return ReportData(
        title=f"ganlab report: {name}", checkpoint=str(path), config=gan.config.to_dict(), dataset=plan.dataset,
        versions={"ganlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
        seed=plan.seed, date=_dt.datetime.now().isoformat(timespec="seconds"), training=training, history=history,
        samples=make_grid(torch.nan_to_num(raw, 0.0, 1.0, -1.0), nrow=8, normalize=True, value_range=(-1, 1)),
        components=runs, across_epochs=series, across_groups=groups, across_best=epochs.best_epochs(series, components),
        problems=problems, warnings=warnings)


def model_problems(gan: LoadedGAN, samples: torch.Tensor, settled: bool) -> list[str]:
    """What is wrong with the models themselves: NaN or infinite samples or D weights, G's BatchNorm unsettled."""
    problems = []
    if bad := int((~torch.isfinite(samples)).sum()):
        problems.append(f"the generator is broken: {bad} of {samples.numel()} sample values are NaN or infinite")
    weights = [] if gan.discriminator is None else gan.discriminator.state_dict().values()
    values = [t for t in weights if t.is_floating_point()]
    if bad := sum(int((~torch.isfinite(t)).sum()) for t in values):
        problems.append(f"the discriminator is broken: {bad} of {sum(t.numel() for t in values)} weight values "
                        "are NaN or infinite, so every number made with D is meaningless")
    why = None if settled else gan.unsettled_batchnorm()
    if why:
        problems.append(f"{why}; give --settle-batchnorm to recompute G's BatchNorm statistics from 1,024 random "
                        "latent vectors")
    return problems


def _history(meta: dict[str, Any]) -> tuple[dict[str, list[float]], list[str]]:
    """The per-step curves that are lists of numbers; the malformed ones are named as problems, and so is each
    curve with NaN or infinite values, with the epochs they fall in."""
    history = meta.get("history")
    if history is None:
        return {}, []
    if not isinstance(history, dict):
        return {}, [f"the checkpoint's training history is {a(type(history).__name__)}, not a dict; not drawn"]
    kept, problems = {}, []
    for key, values in history.items():
        if isinstance(values, (list, tuple)) and all(isinstance(v, (int, float)) for v in values):
            kept[str(key)] = [float(v) for v in values]
        else:
            problems.append(f"the checkpoint's history entry {str(key)[:40]!r} is not a list of numbers; not drawn")
    ends = [int(s) for s in kept.get("epoch_end_steps", [])]
    for key, values in kept.items():
        steps = [i + 1 for i, v in enumerate(values) if not math.isfinite(v)]
        if key != "epoch_end_steps" and steps:
            where = sorted({1 + sum(step > end for end in ends) for step in steps})
            shown = ", ".join(map(str, where[:10])) + (" ..." if len(where) > 10 else "")
            problems.append(f"the training history's {key} is NaN or infinite at {len(steps)} steps (epoch"
                            f"{'s' if len(where) > 1 else ''} {shown}); training went wrong there")
    return kept, problems
