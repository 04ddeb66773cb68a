"""A run folder's epochs: the cheap components' metrics across training, how they are grouped into figures, and
the epoch a validation metric chooses (``--select-epoch``)."""
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ganlab.errors import GanlabError
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.plugin.components import Component, best_point
from ganlab.report.data import FAILED, TIMED_OUT, ComponentRun
from ganlab.report.run import Plan, run_components
from ganlab.store.claims import epoch_files


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    return [path for _, path in epoch_files(run_dir)]


def spread(paths: list[Path], points: int | None) -> list[Path]:
    """At most ``points`` of ``paths``, evenly spread, the first and the last always kept (None or 0: all)."""
    if not points or len(paths) <= points:
        return list(paths)
    if points == 1:
        return [paths[-1]]
    return [paths[i] for i in sorted({round(k * (len(paths) - 1) / (points - 1)) for k in range(points)})]


def _same_checkpoint(a: LoadedGAN, b: LoadedGAN) -> bool:
    """Both from one run at the same epoch and step (an epoch file and the last.pt written beside it)."""
    return (meta_int(a.meta, "step") is not None and Path(a.path).parent == Path(b.path).parent
            and all(meta_int(a.meta, k) == meta_int(b.meta, k) for k in ("epoch", "step")))


def across_epochs(run_dir: Path, components: list[Component], plan: Plan, *, everything: bool, progress: bool,
                  problems: list[str], points: int | None = None,
                  done: tuple[LoadedGAN, list[ComponentRun]] | None = None) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(epoch, value)] for cheap components (all with ``everything``) over at most ``points`` of a run's
    epochs (see :func:`spread`). ``done``: a checkpoint and its component runs made with the same settings, reused
    for the epoch file that is the same checkpoint. An unreadable epoch file or a failed run adds to ``problems``.
    """
    chosen = [c for c in components if everything or c.cheap]
    series: dict[str, list[tuple[int, float]]] = {}
    if not chosen:
        return series
    names = {c.name for c in chosen}
    for path in tqdm(spread(epoch_checkpoints(run_dir), points), desc="across epochs", disable=not progress):
        try:
            gan = plan.load(path)
        except GanlabError as exc:
            problems.append(f"across epochs: skipped {path.name}: {exc}")
            continue
        epoch = meta_int(gan.meta, "epoch")
        if epoch is None:
            problems.append(f"across epochs: skipped {path.name}: its epoch number is missing or not a number")
            continue
        reuse = [run for run in done[1] if run.name in names] if done and _same_checkpoint(gan, done[0]) else None
        for run in reuse or run_components(gan, chosen, plan, progress=False):
            if run.status in (FAILED, TIMED_OUT):
                problems.append(f"across epochs: {run.name} failed on {path.name}: {run.error}")
            for metric, value in (run.result.metrics if run.result else {}).items():
                series.setdefault(f"{run.name}.{metric}", []).append((epoch, float(value)))
    return series


def series_groups(series: dict[str, list[tuple[int, float]]], components: list[Component],
                  problems: list[str]) -> dict[str, list[str]]:
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
            problems.append(f"{component.name}.series_figures failed ({type(exc).__name__}: {exc}); its "
                            "across-epochs series are drawn one per figure")
            figures = Component.series_figures(component, names)
        for title, chosen in figures.items():
            lines = [prefix + n for n in chosen if prefix + n in series]
            if lines:
                groups[f"{component.name}: {title}"] = lines
    groups.update({name: [name] for name in series if name not in claimed})
    return groups


def check_selection(metric: str, run_dir: Path | None, components: list[Component], everything: bool) -> None:
    """Before any work: --select-epoch needs a run folder with epochs and a component that runs on each."""
    name = metric.split(".", 1)[0]
    if run_dir is None or len(epoch_checkpoints(run_dir)) < 2:
        raise GanlabError(f"--select-epoch {metric} needs a run folder with two or more epoch_NNNN.pt checkpoints")
    found = [c for c in components if c.name == name]
    if not found or "." not in metric:
        raise GanlabError(f"--select-epoch {metric}: give COMPONENT.METRIC of a component in this report "
                          f"(e.g. probe-epochs.d.val_accuracy)")
    if not (found[0].cheap or everything):
        raise GanlabError(f"--select-epoch {metric}: {name} does not run across epochs (not cheap); add "
                          "--across-epochs")
    declared = [f"{pattern} ({way})" for pattern, way in (found[0].directions or {}).items() if way]
    if found[0].direction(metric.split(".", 1)[1]) is None:  # found out now, not after every epoch is measured
        raise GanlabError(f"--select-epoch {metric}: {name} does not say whether higher or lower is better for it "
                          f"(or has no such metric), so no epoch is best; it declares {', '.join(declared) or 'none'}")


def series_direction(name: str, components: list[Component]) -> str | None:
    """The declared direction of the across-epochs series ``COMPONENT.METRIC``."""
    component_name, _, metric = name.partition(".")
    return next((c.direction(metric) for c in components if c.name == component_name), None)


def best_epochs(series: dict[str, list[tuple[int, float]]], components: list[Component]) -> dict[str, dict]:
    """series -> {"epoch", "value", "direction"} of its best epoch, for the series that have a direction."""
    ways = {name: series_direction(name, components) for name in series}
    found = {name: best_point(points, ways[name]) for name, points in series.items()}
    return {name: {"epoch": best[0], "value": best[1], "direction": ways[name]}
            for name, best in found.items() if best is not None}


def best_epoch(series: dict[str, list[tuple[int, float]]], metric: str, run_dir: Path,
                components: list[Component]) -> dict[str, Any]:
    """{"metric", "epoch", "value", "direction", "checkpoint"} of the epoch where ``metric`` is best by its
    declared direction (the earliest on a tie); a metric without a direction is refused."""
    points = series.get(metric)
    if not points:
        known = ", ".join(sorted(k for k in series if k.startswith(metric.split(".", 1)[0] + "."))) or "none"
        raise GanlabError(f"--select-epoch {metric}: no such metric across epochs (available: {known})")
    way = series_direction(metric, components)
    if way is None:
        with_way = ", ".join(sorted(k for k in series if series_direction(k, components))) or "none"
        raise GanlabError(f"--select-epoch {metric}: its component does not say whether higher or lower is better, "
                          f"so no epoch is best; choose one that does (e.g. {with_way})")
    best = best_point(points, way)
    if best is None:
        raise GanlabError(f"--select-epoch {metric}: the metric is NaN or infinite on every epoch")
    epoch, value = best
    files = dict(epoch_files(run_dir))
    if epoch not in files:
        raise GanlabError(f"--select-epoch: epoch {epoch}'s checkpoint is not in {run_dir}")
    return {"metric": metric, "epoch": epoch, "value": value, "direction": way, "checkpoint": files[epoch]}


def meta_int(meta: dict[str, Any], key: str) -> int | None:
    """``meta[key]`` when it is a whole number, else None (a checkpoint from another tool may hold anything)."""
    value = meta.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
