"""What evaluators and analyses are: their interface, the context they run in, and their results. A component
computes; it never renders: ``run(ctx)`` returns a ``Result`` of plain data that the report lays out."""
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganlab.errors import GanlabError, a
from ganlab.store.cache import Cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ganlab.data.datasets import DatasetSource, Layout
    from ganlab.model.loaded_gan import LoadedGAN

# What a component may need; a component whose needs are not met is skipped with the reason.
NEEDS = {
    "labels": "a dataset with labels of 2 classes or more",
    "heldout": "a held-out (test) split of the dataset",
    "discriminator": "the checkpoint's discriminator",
    "train_set": "the training dataset",
    "gpu": "a CUDA GPU",
}


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Figure:
    title: str
    figure: Any  # a matplotlib.figure.Figure


@dataclass
class Image:
    title: str
    image: Any  # float tensor C x H x W in [0, 1] (e.g. torchvision.utils.make_grid output), or a uint8 H x W x C array


@dataclass
class Result:
    """What a component hands back: every field optional, all plain data (docs/reference.md). ``verdict``: one line
    in plain words that answers the component's question, on the report's first screen; ``problems``: lines a
    reader must not miss (a collapsed generator, NaN weights), listed at the very top."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    verdict: str = ""
    problems: list[str] = field(default_factory=list)


class Named:
    """Base of what plugins register by name: ``name`` (lowercase, digits, dashes) and a one-line ``description``."""

    name: str = ""
    description: str = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Component(Named):
    """Base of evaluators and analyses: subclass ``Evaluator`` or ``Analysis``, not this. Set the attributes below
    (docs/reference.md explains each: ``needs`` are keys of ``NEEDS``, users override ``options`` with ``--set
    NAME.OPTION=VALUE``, ``cheap`` ones rerun on every epoch checkpoint, ``directions`` maps metric names or globs
    to "higher", "lower" or None) and implement ``run`` (and ``available`` when it needs an optional package)."""

    kind = "component"
    needs: frozenset[str] | set[str] | tuple[str, ...] = frozenset()
    options: dict[str, Any] = {}
    cheap: bool = False
    default: bool = True  # False: runs only when named (--only, an experiment's components), e.g. a slow extra
    plot_together: tuple[str, ...] = ()
    directions: dict[str, str | None] = {}

    def direction(self, metric: str) -> str | None:
        """Which way ``metric`` is better ("higher", "lower"), or None (neither, or not declared)."""
        if metric in self.directions:
            return self.directions[metric]
        return next((way for pattern, way in self.directions.items() if fnmatchcase(metric, pattern)), None)

    def available(self, options: dict[str, Any]) -> str | None:
        """None when the component can run on this machine with these options, else the reason it cannot (an
        optional package or a file it needs is missing): the report then skips it with that reason."""
        return None

    def run(self, ctx: "RunContext") -> Result:  # pragma: no cover - interface
        raise NotImplementedError

    def series_figures(self, names: list[str]) -> dict[str, list[str]]:
        """Figure title -> which of ``names`` (this component's metrics that have across-epochs series) it draws,
        a line each. The default: a figure per ``plot_together`` ending that two or more names share, then a
        figure per name left. Override to group otherwise; a name in no figure is not drawn (its series stays in
        metrics.json)."""
        figures: dict[str, list[str]] = {}
        for ending in self.plot_together or ():
            chosen = [n for n in names if n.endswith(f".{ending}")]
            if len(chosen) > 1:
                figures[ending] = chosen
        drawn = {n for chosen in figures.values() for n in chosen}
        for n in names:
            if n not in drawn:
                figures[n if n not in figures else f"{n} (alone)"] = [n]
        return figures


class Evaluator(Component):
    """Measures a model: returns metrics (and optionally tables/figures)."""

    kind = "evaluator"


class Analysis(Component):
    """Looks into a model: returns figures, image grids, text (and optionally metrics)."""

    kind = "analysis"


@dataclass
class RunContext:
    """Everything a component may use (docs/reference.md describes each field): ``gan`` on ``device``, ``cache``
    (``ganlab.Cache``; a context made without one keeps nothing), the dataset and ``split(name)``."""

    gan: "LoadedGAN"
    device: "torch.device"
    seed: int
    options: dict[str, Any]
    cache: Cache = field(default_factory=Cache.disabled)  # ctx.cache.array(...), .json(...), ...
    dataset: str | None = None
    data_root: Path | None = None
    progress: Callable[..., Any] | None = None  # tqdm-like factory: progress(iterable, desc=..., total=...)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ganlab"))
    quiet: bool = False  # no progress bars (e.g. while re-running components on every epoch)
    split_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    source: "DatasetSource | None" = None
    layout: "Layout | None" = None
    skip_bad_images: bool = False  # drop unreadable image files (counted on stderr) instead of failing
    detectors: dict[str, Any] = field(default_factory=dict)  # name -> ganlab.Detector, as plugins registered
    feature_spaces: dict[str, Any] = field(default_factory=dict)  # name -> ganlab.FeatureSpace

    @property
    def heldout_split(self) -> str | None:
        """The held-out split's name ("test" for most datasets), or None."""
        return self.layout.heldout if self.layout else None

    @property
    def train_split(self) -> str:
        """The split the model was trained on, as recorded in its checkpoint (default "train")."""
        recorded = self.gan.meta.get("dataset")
        split = recorded.get("split") if isinstance(recorded, dict) else None
        return split if isinstance(split, str) and split else "train"

    def split(self, name: str, limit: int | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(images uint8 N x C x H x W at the model's size and channels, labels int64 N; -1 if unlabelled)."""
        from ganlab.data.datasets import load_split

        if self.source is None:
            raise GanlabError("this report has no dataset; give --dataset NAME (and --data-root DIR)")
        key = f"{name}:{limit}"
        if key not in self.split_cache and not self.skip_bad_images:
            self._share_whole_split(name, limit, key)
        if key not in self.split_cache:
            cfg = self.gan.config
            variant = (self.dataset or "").partition(":")[2] or None
            self.split_cache[key] = load_split(self.source, name, variant=variant, root=self.data_root,
                                               image_size=cfg.image_size, channels=cfg.channels, limit=limit,
                                               progress=not self.quiet, skip_bad=self.skip_bad_images)
        return self.split_cache[key]

    def _share_whole_split(self, name: str, limit: int | None, key: str) -> None:
        """A limit at or above a split's size loads the whole split, in the same order: share one copy."""
        for cached, value in list(self.split_cache.items()):
            cached_name, _, cached_limit = cached.rpartition(":")
            n = len(value[0])
            whole = cached_limit == "None" or n < int(cached_limit)  # a limit that did not bind
            if cached_name == name and whole and (limit is None or limit >= n):
                self.split_cache[key] = value
                return


def best_point(points: list[tuple[int, float]], direction: str | None) -> tuple[int, float] | None:
    """The (epoch, value) that ``direction`` calls best (the earliest on a tie; NaN and inf never), or None."""
    finite = [p for p in points if math.isfinite(p[1])]
    if direction not in ("higher", "lower") or not finite:
        return None
    sign = 1 if direction == "higher" else -1
    return max(finite, key=lambda p: (sign * p[1], -p[0]))


def unmet_needs(component: Component, *, has_labels: bool, has_heldout: bool, has_discriminator: bool,
                has_dataset: bool, has_gpu: bool) -> list[str]:
    """Human reasons why ``component`` cannot run here (empty when it can)."""
    have = {"labels": has_labels, "heldout": has_heldout, "discriminator": has_discriminator,
            "train_set": has_dataset, "gpu": has_gpu}
    return [f"needs {NEEDS.get(need, need)}" for need in sorted(component.needs) if not have.get(need, False)]


def _check_image(data: Any, where: str) -> None:
    """Raise ValueError unless ``data`` is an image the page can show (see ``Image``)."""
    import numpy as np
    import torch

    if isinstance(data, torch.Tensor):
        if data.ndim != 3 or data.shape[0] not in (1, 3):
            raise ValueError(f"{where} has shape {tuple(data.shape)}; expected C x H x W with C = 1 or 3")
        if not bool(torch.isfinite(data).all()):
            raise ValueError(f"{where} contains NaN or inf")
        low, high = float(data.min()), float(data.max())
        if low < 0 or high > 1:
            raise ValueError(f"{where} has values from {low:.3g} to {high:.3g}; expected [0, 1] "
                             "(make_grid(..., normalize=True, value_range=(-1, 1)) maps G's output there)")
    elif isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or not (data.ndim == 2 or data.ndim == 3 and data.shape[2] in (1, 3, 4)):
            raise ValueError(f"{where} is a {data.dtype} array of shape {data.shape}; expected uint8 H x W or "
                             "H x W x C with C = 1, 3 or 4")
    else:
        raise ValueError(f"{where} is {a(type(data).__name__)}; expected a tensor C x H x W or a uint8 array")


def check_result(result: Any, component: str) -> Result:
    """``result`` as a valid ``Result`` (metrics as Python numbers; NaN and inf allowed), or ``ValueError`` naming
    what is wrong (checked when ``run`` returns; docs/reference.md lists the rules)."""
    import numpy as np
    import torch

    if not isinstance(result, Result):
        raise ValueError(f"{component}.run returned {a(type(result).__name__)}, not a ganlab.Result")
    metrics = {}
    for name, value in dict(result.metrics).items():
        if (isinstance(value, torch.Tensor) and value.numel() == 1
                or isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{component} returned metric {name!r} = {str(value)[:60]!r} "
                             f"({type(value).__name__}), not a number")
        metrics[str(name)] = value if isinstance(value, numbers.Integral) else float(value)
    for kind, items, cls in (("table", result.tables, Table), ("figure", result.figures, Figure),
                             ("image", result.images, Image)):
        for item in items:
            if not isinstance(item, cls):
                raise ValueError(f"{component} returned {a(type(item).__name__)} among its {kind}s, "
                                 f"not a ganlab.{cls.__name__}")
    for image in result.images:
        _check_image(image.image, f"{component}'s image {image.title!r}")
    for figure in result.figures:
        if not callable(getattr(figure.figure, "savefig", None)):
            raise ValueError(f"{component}'s figure {figure.title!r} is {a(type(figure.figure).__name__)}; expected "
                             "a matplotlib Figure (an Axes' .figure)")
    for table in result.tables:  # a string would be read a character a column (or row)
        if isinstance(table.columns, str) or isinstance(table.rows, str):
            raise ValueError(f"{component}'s table {table.title!r}: give columns as a list of names and rows as "
                             "lists of cells")
    for name in ("text", "problems"):
        lines = getattr(result, name)
        if isinstance(lines, str) or not all(isinstance(t, str) for t in lines):
            raise ValueError(f"{component} returned {name} that is not a list of strings (give [{name}] for one)")
    if not isinstance(result.verdict, str) or "\n" in result.verdict.strip():
        raise ValueError(f"{component} returned a verdict that is not one line of text")
    result.metrics = metrics
    return result

