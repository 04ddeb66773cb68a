"""``ganlab report``: load a checkpoint, run the applicable components, write index.html + metrics.json.

Data flows one way: checkpoint -> LoadedGAN -> RunContext -> component.run(ctx) -> Result ->
ReportData -> renderer. A component that raises is recorded as failed; the rest still run.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from traceback import format_exc
from typing import Any

import torch
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from ganlab import __version__
from ganlab.api import load
from ganlab.checkpoint import resolve
from ganlab.components import Component, RunContext, check_result, unmet_needs
from ganlab.datasets import DatasetSource, Layout
from ganlab.devices import select_device
from ganlab.errors import GanlabError
from ganlab.loaded_gan import LoadedGAN
from ganlab.options import resolve_options
from ganlab.registry import Registry, get_registry
from ganlab.report_data import FAILED, OK, SKIPPED, ComponentRun, ReportData
from ganlab.report_output import ReportFolder
from ganlab.run_folder import os_error

Say = Callable[[str], None]
EPOCH_POINTS = 10  # epochs evaluated for the plots across training, by default


def cache_dir() -> Path:
    """Where components cache features: $GANLAB_CACHE, else ~/.cache/ganlab."""
    return Path(os.environ.get("GANLAB_CACHE") or Path.home() / ".cache" / "ganlab")


def select_components(only: list[str] | None, skip: list[str] | None) -> list[Component]:
    registry = get_registry()
    available = registry.components()
    for name in (only or []) + (skip or []):
        if name not in available:
            raise GanlabError(f"unknown component {name!r}; available: {', '.join(sorted(available)) or 'none'}"
                              f"{registry.failed_hint()}")
    names = only if only else sorted(available, key=lambda n: (available[n].kind != "evaluator", n))
    return [available[n] for n in names if n not in (skip or [])]


def _dataset(registry: Registry, dataset: str | None, data_root: str | Path | None,
             ) -> tuple[DatasetSource | None, Layout | None]:
    if not dataset:
        return None, None
    source = registry.get("datasets", dataset.partition(":")[0])
    return source, source.layout(data_root, dataset.partition(":")[2] or None)


def _unmet(component: Component, gan: LoadedGAN, source: DatasetSource | None, layout: Layout | None,
           device: torch.device) -> list[str]:
    return unmet_needs(component, has_labels=bool(layout and layout.classes),
                       has_heldout=bool(layout and layout.heldout), has_discriminator=gan.discriminator is not None,
                       has_dataset=source is not None, has_gpu=device.type == "cuda")


def run_components(gan: LoadedGAN, components: list[Component], *, dataset: str | None, data_root: str | None,
                   seed: int, device: torch.device, settings: dict[str, Any], progress: bool = True,
                   splits: dict[str, Any] | None = None, say: Say | None = None,
                   skip_bad_images: bool = False) -> list[ComponentRun]:
    """Run each component, recording its status, time, result or error.

    ``splits`` caches decoded dataset splits; pass the same dict to share them between calls. ``say``
    gets one line per component (ok, skipped with the reason, failed with the error).
    """
    registry = get_registry()
    source, layout = _dataset(registry, dataset, data_root)
    splits = {} if splits is None else splits
    # Check every option before anything runs, so a typo fails in a second, not after a long component.
    all_options = {component.name: resolve_options(component, settings) for component in components}
    known = registry.components()
    for key in settings:
        if key.partition(".")[0] not in known:
            raise GanlabError(f"--set {key}: no component named {key.partition('.')[0]!r} "
                              f"(available: {', '.join(sorted(known))})")
    runs = []
    interrupted = False
    for component in components:
        options = all_options[component.name]
        run = ComponentRun(component.name, component.kind, component.description,
                           registry.component_owner(component.name), SKIPPED, options=options)
        reasons = _unmet(component, gan, source, layout, device)
        if interrupted:
            run.reason = "the report was interrupted (Ctrl-C) before it ran"
        elif reasons:
            run.reason = "; ".join(reasons)
        else:
            ctx = RunContext(gan=gan, device=device, seed=seed, cache_dir=cache_dir(), options=options,
                             dataset=dataset, data_root=Path(data_root) if data_root else None,
                             progress=lambda it=None, **kw: tqdm(it, disable=not progress, leave=False, **kw),
                             quiet=not progress, split_cache=splits, source=source, layout=layout,
                             skip_bad_images=skip_bad_images, detectors=dict(registry.detectors),
                             feature_spaces=dict(registry.feature_spaces))
            torch.manual_seed(seed)
            start = time.perf_counter()
            try:
                run.result = check_result(component.run(ctx), component.name)
                run.status = OK
            except GanlabError as exc:
                run.status, run.error, run.traceback = FAILED, f"GanlabError: {exc}", format_exc()
            except SystemExit as exc:  # a plugin calling sys.exit() must not end the report
                run.status, run.traceback = FAILED, format_exc()
                run.error = f"SystemExit: {component.name} called sys.exit({exc.code!r})"
            except KeyboardInterrupt:
                run.status, run.traceback = FAILED, format_exc()
                run.error = "KeyboardInterrupt: interrupted; the components after it did not run"
                interrupted = True
            except Exception as exc:  # a component's bug must not lose the rest of the report
                run.status, run.error, run.traceback = FAILED, f"{type(exc).__name__}: {exc}", format_exc()
            run.seconds = time.perf_counter() - start
        if say is not None:
            say(status_line(run))
        runs.append(run)
    return runs


def status_line(run: ComponentRun) -> str:
    """One terminal line per component: ok with its time, skipped with the reason, failed with the error's line."""
    if run.status == OK:
        return f"  {run.name}: ok ({run.seconds:.1f} s)"
    if run.status == SKIPPED:
        return f"  {run.name}: skipped ({run.reason})"
    first = (str(run.error).strip().splitlines() or ["?"])[0]
    return f"  {run.name}: FAILED ({first})"


def _epoch_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("epoch_*.pt"))


def spread(paths: list[Path], points: int | None) -> list[Path]:
    """At most ``points`` of ``paths``, evenly spread, the first and the last always kept (None or 0: all)."""
    if not points or len(paths) <= points:
        return list(paths)
    if points == 1:
        return [paths[-1]]
    return [paths[i] for i in sorted({round(k * (len(paths) - 1) / (points - 1)) for k in range(points)})]


def _same_checkpoint(a: LoadedGAN, b: LoadedGAN | None) -> bool:
    """Both from one run at the same epoch and step (an epoch file and the last.pt written beside it)."""
    return (b is not None and meta_int(a.meta, "step") is not None
            and all(meta_int(a.meta, k) == meta_int(b.meta, k) for k in ("epoch", "step"))
            and Path(a.path).parent == Path(b.path).parent)


def across_epochs(run_dir: Path, components: list[Component], *, everything: bool, dataset: str | None,
                  data_root: str | None, seed: int, device: torch.device, settings: dict[str, Any],
                  progress: bool, splits: dict[str, Any], problems: list[str], points: int | None = None,
                  done: tuple[LoadedGAN, list[ComponentRun]] | None = None) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(epoch, value)] for cheap components (all with ``everything``) over a run's epochs.

    ``points``: at most this many epoch files, evenly spread (see :func:`spread`; None: every one). ``done``:
    a checkpoint and its component runs already made with the same settings; the epoch file that is the
    same checkpoint reuses them instead of running again. An epoch file that cannot be read, or a component
    that fails on it, adds a line to ``problems``.
    """
    chosen = [c for c in components if everything or c.cheap]
    series: dict[str, list[tuple[int, float]]] = {}
    if not chosen:
        return series
    names = {c.name for c in chosen}
    for path in tqdm(spread(_epoch_checkpoints(run_dir), points), desc="across epochs", disable=not progress):
        try:
            gan = load(path, device)
        except GanlabError as exc:
            problems.append(f"across epochs: skipped {path.name}: {exc}")
            continue
        epoch = meta_int(gan.meta, "epoch")
        if epoch is None:
            problems.append(f"across epochs: skipped {path.name}: its epoch number is missing or not a number")
            continue
        reuse = [run for run in done[1] if run.name in names] if done and _same_checkpoint(gan, done[0]) else None
        for run in reuse or run_components(gan, chosen, dataset=dataset, data_root=data_root, seed=seed,
                                           device=device, settings=settings, progress=False, splits=splits):
            if run.status == FAILED:
                problems.append(f"across epochs: {run.name} failed on {path.name}: {run.error}")
            for metric, value in (run.result.metrics if run.result else {}).items():
                series.setdefault(f"{run.name}.{metric}", []).append((epoch, float(value)))
    return series


def series_groups(series: dict[str, list[tuple[int, float]]], components: list[Component],
                  problems: list[str] | None = None) -> dict[str, list[str]]:
    """Figure title ("component: title") -> the series drawn in it: each component's ``series_figures``, and a
    figure of its own for a series no component claims. A ``series_figures`` that fails or returns something
    else than a dict of lists falls back to the default grouping, with a line in ``problems``."""
    groups: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for component in components:
        prefix = f"{component.name}."
        names = [k.removeprefix(prefix) for k in series if k.startswith(prefix)]
        if not names:
            continue
        claimed.update(prefix + n for n in names)
        try:
            figures = component.series_figures(list(names))
            figures = {str(title): [str(n) for n in chosen] for title, chosen in dict(figures).items()}
        except Exception as exc:  # a plugin's grouping bug costs its grouping, not the report
            if problems is not None:
                problems.append(f"{component.name}.series_figures failed ({type(exc).__name__}: {exc}); its "
                                "across-epochs series are drawn one per figure")
            figures = Component.series_figures(component, names)
        for title, chosen in figures.items():
            lines = [prefix + n for n in chosen if prefix + n in series]
            if lines:
                groups[f"{component.name}: {title}"] = lines
    groups.update({name: [name] for name in series if name not in claimed})
    return groups


def _check_selection(metric: str, run_dir: Path | None, components: list[Component], everything: bool) -> None:
    """Before any work: --select-epoch needs a run folder with epochs and a component that runs on each."""
    name = metric.split(".", 1)[0]
    if run_dir is None or len(_epoch_checkpoints(run_dir)) < 2:
        raise GanlabError(f"--select-epoch {metric} needs a run folder with two or more epoch_*.pt checkpoints")
    found = [c for c in components if c.name == name]
    if not found or "." not in metric:
        raise GanlabError(f"--select-epoch {metric}: give COMPONENT.METRIC of a component in this report "
                          f"(e.g. probe-epochs.d.val_accuracy)")
    if not (found[0].cheap or everything):
        raise GanlabError(f"--select-epoch {metric}: {name} does not run across epochs (not cheap); add "
                          "--across-epochs")


def _best_epoch(series: dict[str, list[tuple[int, float]]], metric: str, run_dir: Path) -> dict[str, Any]:
    """{"metric", "epoch", "value", "checkpoint"} of the epoch where ``metric`` is highest (earliest on a tie)."""
    points = series.get(metric)
    if not points:
        known = ", ".join(sorted(k for k in series if k.startswith(metric.split(".", 1)[0] + "."))) or "none"
        raise GanlabError(f"--select-epoch {metric}: no such metric across epochs (available: {known})")
    points = [p for p in points if math.isfinite(p[1])]  # a NaN would win every comparison it comes first in
    if not points:
        raise GanlabError(f"--select-epoch {metric}: the metric is NaN or infinite on every epoch")
    epoch, value = max(points, key=lambda p: (p[1], -p[0]))
    files = {meta_epoch: path for path in _epoch_checkpoints(run_dir)
             for meta_epoch in [_epoch_number(path)] if meta_epoch is not None}
    if epoch not in files:
        raise GanlabError(f"--select-epoch: epoch {epoch}'s checkpoint is not in {run_dir}")
    return {"metric": metric, "epoch": epoch, "value": value, "checkpoint": files[epoch]}


def _epoch_number(path: Path) -> int | None:
    digits = path.stem.removeprefix("epoch_")
    return int(digits) if digits.isdigit() else None


def meta_int(meta: dict[str, Any], key: str) -> int | None:
    """``meta[key]`` when it is a whole number, else None (a checkpoint from another tool may hold anything)."""
    value = meta.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _history(meta: dict[str, Any]) -> tuple[dict[str, list[float]], list[str]]:
    """The per-step curves that are lists of numbers; the malformed ones are named as problems."""
    history = meta.get("history")
    if history is None:
        return {}, []
    if not isinstance(history, dict):
        return {}, [f"the checkpoint's training history is a {type(history).__name__}, not a dict; not drawn"]
    kept, problems = {}, []
    for key, values in history.items():
        if isinstance(values, (list, tuple)) and all(isinstance(v, (int, float)) for v in values):
            kept[str(key)] = [float(v) for v in values]
        else:
            problems.append(f"the checkpoint's history entry {str(key)[:40]!r} is not a list of numbers; not drawn")
    return kept, problems


def make_report(checkpoint: str | Path, *, only: list[str] | None = None, skip: list[str] | None = None,
                out: str | Path | None = None, dataset: str | None = None, data_root: str | None = None,
                seed: int = 0, device: str = "auto", settings: dict[str, Any] | None = None,
                all_across_epochs: bool = False, progress: bool = True,
                say: Say | None = None, skip_bad_images: bool = False,
                select_epoch: str | None = None, epoch_points: int | None = EPOCH_POINTS,
                ) -> tuple[ReportData, Path]:
    """Write ``OUT/index.html`` and ``OUT/metrics.json`` for a checkpoint (or a run folder).

    The report is built in a folder beside ``OUT`` and swapped in at the end, so a failure leaves the
    previous report whole. Components named in ``only`` that cannot run here are an error before anything
    runs. Returns the report data and the output folder (default ``reports/<checkpoint or run name>``).

    ``select_epoch`` ("COMPONENT.METRIC", e.g. ``probe-epochs.d.val_accuracy``; a run folder only): the
    across-epochs series are computed first and the components run on the epoch checkpoint where that
    metric is highest (the earliest on a tie) instead of the last one. Use a validation metric. Selection
    looks at every epoch; otherwise the plots across training use at most ``epoch_points`` epoch files,
    evenly spread with the first and last (None or 0: every one).
    """
    from ganlab.render import render_report

    settings = settings or {}
    torch_device = select_device(device)
    checkpoint = Path(checkpoint)
    run_dir = checkpoint if checkpoint.is_dir() else None
    path = resolve(checkpoint)
    name = run_dir.name if run_dir else path.stem
    folder = ReportFolder(Path(out) if out else Path("reports") / name)  # checked and created before any work
    try:
        gan = load(path, torch_device)
        recorded = gan.meta.get("dataset")
        recorded = recorded if isinstance(recorded, dict) else {}
        dataset = dataset or gan.dataset
        data_root = data_root or (recorded.get("root") if isinstance(recorded.get("root"), str) else None)
        components = select_components(only, skip)
        registry = get_registry()
        source, layout = _dataset(registry, dataset, data_root)
        for component in components if only else []:
            reasons = _unmet(component, gan, source, layout, torch_device)
            if reasons:
                raise GanlabError(f"{component.name} cannot run here: it {'; '.join(reasons)} "
                                  f"(dataset: {dataset or 'none'})")
        splits: dict[str, Any] = {}
        series: dict[str, list[tuple[int, float]]] = {}
        problems: list[str] = []
        selected = None
        if select_epoch:
            _check_selection(select_epoch, run_dir, components, all_across_epochs)
            series = across_epochs(run_dir, components, everything=all_across_epochs, dataset=dataset,
                                   data_root=data_root, seed=seed, device=torch_device, settings=settings,
                                   progress=progress, splits=splits, problems=problems)
            selected = _best_epoch(series, select_epoch, run_dir)
            path = selected["checkpoint"]
            gan = load(path, torch_device)
        if say is not None:
            chosen = f" (epoch {selected['epoch']}: highest {select_epoch})" if selected else ""
            say(f"report for {path}{chosen} ({len(components)} components, dataset {dataset or 'none'})")
        runs = run_components(gan, components, dataset=dataset, data_root=data_root, seed=seed, device=torch_device,
                              settings=settings, progress=progress, splits=splits, say=say,
                              skip_bad_images=skip_bad_images)
        history, history_problems = _history(gan.meta)
        problems += history_problems
        if run_dir and len(_epoch_checkpoints(run_dir)) > 1 and not select_epoch:
            series = across_epochs(run_dir, components, everything=all_across_epochs, dataset=dataset,
                                   data_root=data_root, seed=seed, device=torch_device, settings=settings,
                                   progress=progress, splits=splits, problems=problems, points=epoch_points,
                                   done=(gan, runs))
        groups = series_groups(series, components, problems)
        raw = gan.sample(64, seed=seed)
        if not bool(torch.isfinite(raw).all()):
            problems.append(f"the generator is broken: {int((~torch.isfinite(raw)).sum())} of {raw.numel()} "
                            "sample values are NaN or infinite")
        samples = make_grid(torch.nan_to_num(raw, 0.0, 1.0, -1.0), nrow=8, normalize=True, value_range=(-1, 1))
        data = ReportData(
            title=f"ganlab report: {name}", checkpoint=str(path.resolve()), config=gan.config.to_dict(),
            dataset=dataset,
            versions={"ganlab": __version__, "torch": torch.__version__, "python": platform.python_version()},
            seed=seed, date=_dt.datetime.now().isoformat(timespec="seconds"),
            training={"epoch": meta_int(gan.meta, "epoch"), "step": meta_int(gan.meta, "step"),
                      "format": str(gan.meta.get("format") or ""),
                      "options": gan.meta.get("options") if isinstance(gan.meta.get("options"), dict) else None,
                      **({"selected_by": {k: v for k, v in selected.items() if k != "checkpoint"}}
                         if selected else {})},
            history=history, samples=samples, components=runs, across_epochs=series, across_groups=groups,
            problems=problems)
        try:
            render_report(data, folder.staging)
        except OSError as exc:
            raise os_error("write the report into", folder.out, exc) from None
        folder.write_text("metrics.json", data.metrics_json())
        return data, folder.commit()
    finally:
        folder.discard()
