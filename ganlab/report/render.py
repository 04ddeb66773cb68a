"""Lay out a ``ReportData`` as one self-contained, offline HTML page plus PNG assets.

The renderer computes nothing: it formats the numbers it is given, writes the images and
figures it is given as PNGs, and plots the recorded training history and across-epochs series.
Every string that may come from a plugin goes through Jinja2's autoescape; nothing is ``|safe``.
"""
import math
import numbers
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib

# Reports are written on headless machines. Switching an already-imported pyplot would close the
# figures plugins just made, so only choose the backend when nobody has yet; savefig works on any.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (only to close figures plugins made through pyplot)
import numpy as np  # noqa: E402
from jinja2 import Environment, PackageLoader  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from ganlab.plugin.components import Result  # noqa: E402
from ganlab.report.data import FAILED, OK, SKIPPED, ComponentRun, ReportData  # noqa: E402

ASSETS = "assets"
DPI = 100
MIN_IMAGE_WIDTH = 256  # small grids (e.g. 28 px MNIST) are shown scaled up by whole pixels


def slugify(text: str, fallback: str = "item") -> str:
    """Lowercase letters, digits and single dashes only: safe as a file name part and an HTML id."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:60].strip("-")
    return slug or fallback


def fmt_value(value: Any) -> str:
    """Ints plain, floats to 4 significant digits, anything else as its string."""
    if isinstance(value, np.generic) or (hasattr(value, "numel") and value.numel() == 1):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{float(value):.4g}" if math.isfinite(value) else str(float(value))


def fmt_seconds(seconds: float) -> str:
    if seconds < 0.01:
        return "<0.01 s"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)} min {secs:.0f} s"


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, else ``stem-2``, ``stem-3``, ...: the first not in ``used``, which it joins."""
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


class _Assets:
    """Writes PNGs under out_dir/assets with names built only from slugs and counters."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / ASSETS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()

    def _path(self, stem: str) -> tuple[Path, str]:
        name = _unique(slugify(stem), self.used)
        return self.dir / f"{name}.png", f"{ASSETS}/{name}.png"

    def figure(self, stem: str, fig: Any) -> dict[str, Any]:
        """Save a matplotlib figure and always close it, so a long report does not leak figures."""
        path, src = self._path(stem)
        try:
            fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
            return {"src": src}
        except Exception as exc:  # one broken plugin figure should not cost the whole report
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if isinstance(fig, MplFigure):  # plt.close rejects anything else
                plt.close(fig)

    def image(self, stem: str, image: Any) -> dict[str, Any]:
        path, src = self._path(stem)
        try:
            pil = to_pil(image)
            pil.save(path)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        scale = max(1, MIN_IMAGE_WIDTH // max(pil.width, 1))
        return {"src": src, "width": pil.width * scale, "height": pil.height * scale, "pixelated": scale > 1}


def to_pil(image: Any) -> PILImage.Image:
    """A float C x H x W tensor in [0, 1] or a uint8 H x W (x C) array -> a PIL image."""
    if hasattr(image, "detach"):  # torch tensor, channels first
        arr = image.detach().cpu().float().clamp(0, 1).numpy()
        arr = ((arr.transpose(1, 2, 0) if arr.ndim == 3 else arr) * 255 + 0.5).astype(np.uint8)
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:  # floats in [0, 1] given as an array
            arr = (np.clip(arr.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    return PILImage.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


def history_figure(history: dict[str, list[float]]) -> MplFigure | None:
    """Losses in one axes, discriminator outputs in another; dotted lines where epochs ended."""
    panels = [("Losses", [("loss_D", "loss D"), ("loss_G", "loss G")]),
              ("Discriminator output", [("D_x", "D(x)"), ("D_G_z", "D(G(z))")])]
    if not any(history.get(key) for _, series in panels for key, _ in series):
        return None
    fig = MplFigure(figsize=(11, 3.4))
    axes = fig.subplots(1, 2)
    for ax, (title, series) in zip(axes, panels):
        for key, label in series:
            if values := history.get(key):
                ax.plot(range(1, len(values) + 1), values, label=label, linewidth=0.9)
        for step in history.get("epoch_end_steps") or []:
            ax.axvline(step, color="0.6", linestyle=":", linewidth=0.8)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def series_figure(name: str, lines: dict[str, list[tuple[int, float]]],
                  best: dict[str, dict[str, Any]] | None = None) -> MplFigure:
    """One metric over epochs, or several (a legend names each line by its metric name); a line whose metric
    has a direction gets a star at its best epoch (``best``: series -> {"epoch", "value", "direction"})."""
    fig = MplFigure(figsize=(4.6, 3.0))
    ax = fig.subplots()
    starred = False
    for label, points in lines.items():
        points = sorted(points)
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        markersize=3 if len(lines) > 1 else 6, linewidth=1.2, label=label)
        if mark := (best or {}).get(label):
            ax.plot([mark["epoch"]], [mark["value"]], marker="*", markersize=13, color=line.get_color(),
                    markeredgecolor="black", linestyle="none",
                    label=None if starred else f"best epoch ({mark['direction']} is better)")
            starred = True
    if len(lines) > 1 or starred:
        ax.legend(fontsize=7)
    ax.set(title=name, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig  # one axes: savefig's bbox_inches="tight" trims it; tight_layout would cost ~70 ms a figure


def _split_error(error: str | None) -> tuple[str, str]:
    """"ValueError: boom" -> ("ValueError", "boom"), so the type can be shown prominently."""
    text = error or "unknown error"
    head, sep, rest = text.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head):
        return head, rest
    return "Error", text


def _in_tables(value: str, tables: list[dict[str, Any]]) -> bool:
    """Whether a table cell already shows this formatted number (so the metrics list need not repeat it)."""
    if not re.fullmatch(r"-?[\d.]+(e[+-]?\d+)?", value):
        return False
    pattern = re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])")
    return any(pattern.search(cell) for table in tables for row in table["rows"] for cell in row)


def _headline(run: ComponentRun) -> str:
    """The summary line of a component without a verdict: why it failed or was skipped, or what it does."""
    if run.status == FAILED:
        return (run.error or "failed").strip().splitlines()[0][:300]
    if run.status == SKIPPED:
        return run.reason or "skipped"
    return run.description if run.status == OK else run.error or run.status


def _pairs(mapping: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), fmt_value(v)) for k, v in (mapping or {}).items()]


def _component_view(run: ComponentRun, index: int, assets: _Assets, ids: set[str]) -> dict[str, Any]:
    # Asset names carry the component's position as well as its slug, so two components whose
    # names slug alike never overwrite each other's files.
    stem = f"c{index:02d}-{slugify(run.name)}"
    result = run.result or Result()
    tables = [{"title": t.title, "columns": [str(c) for c in t.columns],
               "rows": [[fmt_value(cell) for cell in row] for row in t.rows]} for t in result.tables]
    metrics = _pairs(result.metrics)
    shown = [(k, v) for k, v in metrics if not _in_tables(v, tables)]
    return {"run": run, "anchor": _unique(f"component-{slugify(run.name)}", ids), "time": fmt_seconds(run.seconds),
            "error": _split_error(run.error) if run.status == FAILED else None, "traceback": run.traceback,
            "options": dict(_pairs(run.options)), "metrics": shown, "tables": tables,
            "in_tables": len(metrics) - len(shown), "verdict": result.verdict.strip(), "headline": _headline(run),
            "figures": [{"title": f.title, **assets.figure(f"{stem}-figure-{i}", f.figure)}
                        for i, f in enumerate(result.figures, 1)],
            "images": [{"title": im.title, **assets.image(f"{stem}-image-{i}", im.image)}
                       for i, im in enumerate(result.images, 1)],
            "text": [str(t) for t in result.text]}


def render_report(data: ReportData, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` and its PNGs under ``out_dir/assets/``; return the page's path."""
    out_dir = Path(out_dir)
    assets = _Assets(out_dir)
    history = data.history or {}
    fig = history_figure(history)
    ids: set[str] = set()
    components = [_component_view(run, i, assets, ids) for i, run in enumerate(data.components, 1)]
    series = data.across_epochs or {}
    groups = data.across_groups if data.across_groups is not None else {name: [name] for name in series}
    plots = [(title, {name: series.get(name, []) for name in names}) for title, names in groups.items()]
    across = [{"name": title, **assets.figure(f"across-epochs-{i:02d}-{slugify(title)}",
                                              series_figure(title, lines, data.across_best))}
              for i, (title, lines) in enumerate(plots, 1) if any(lines.values())]
    options = (data.training or {}).get("options")
    training = {k: v for k, v in (data.training or {}).items() if k != "options" and v is not None}
    environment = Environment(loader=PackageLoader("ganlab", "templates"), autoescape=True, trim_blocks=True,
                              lstrip_blocks=True)
    page = environment.get_template("report.html").render(
        data=data, history_img=assets.figure("training-history", fig) if fig is not None else None,
        epoch_marks=bool(history.get("epoch_end_steps")),
        samples=assets.image("samples", data.samples) if data.samples is not None else None,
        components=components, across=across,
        best=[(name, b["epoch"], fmt_value(b["value"]), b["direction"]) for name, b in data.across_best.items()],
        config=_pairs(data.config), training=_pairs(training), training_options=_pairs(options),
        versions=[(str(k), str(v)) for k, v in (data.versions or {}).items()],
        counts={s: sum(c["run"].status == s for c in components) for s in (OK, FAILED, SKIPPED)},
        skipped=SKIPPED, failed=FAILED, ok=OK,
        # every line a reader must not miss: the page's own problems, then each component's
        problems=[*data.problems, *data.warnings, *(f"{run.name}: {line}" for run in data.components
                                                     for line in (run.result or Result()).problems)],
        headline=[(k, v) for k, v in _pairs(training) if k in ("epoch", "step")])
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8", errors="surrogateescape")  # a path that is not UTF-8 keeps its bytes
    return index
