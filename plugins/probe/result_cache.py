"""Probe results that do not depend on the GAN being probed, kept as JSON under the cache folder.

A baseline row (raw pixels, K-means, a random D of the checkpoint's architecture, the supervised CNN) and a
baseline line of ``probe-epochs`` are functions of the images, the labels, the protocol's settings and D's
architecture only: every checkpoint of a run, every GAN seed of ``ganlab run EXPERIMENT --seeds K`` and every
later report on the same data shares them. Each is stored once under a hash of everything it was computed from
(``ident``), as reference statistics are in FID tools, and read back instead of recomputed. A missing or
damaged file is computed again; files are replaced atomically, so a report that dies mid-write leaves none
half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Part of every svm-probe identity: raise it when a change to the protocol's code changes its numbers.
BASELINE_VERSION = 1


def _path(cache_dir: Path | str, folder: str, ident: dict) -> Path:
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cache_dir) / folder / f"{key}.json"


def load(cache_dir: Path | str, folder: str, ident: dict) -> Any | None:
    """The value stored for ``ident``, or None (absent, unreadable or damaged)."""
    try:
        return json.loads(_path(cache_dir, folder, ident).read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(cache_dir: Path | str, folder: str, ident: dict, value: Any) -> None:
    """Keep ``value`` (JSON-ready) for ``ident``; a cache folder that cannot be written is not an error."""
    path = _path(cache_dir, folder, ident)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two reports at once never share a temporary file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"ident": ident, "value": value}, default=str))
        tmp.replace(path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def cached(cache_dir: Path | str, folder: str, ident: dict, compute: Callable[[], Any]) -> Any:
    """The value stored for ``ident``, else ``compute()``, stored."""
    value = load(cache_dir, folder, ident)
    if value is None:
        value = compute()
        store(cache_dir, folder, ident, value)
    return value


# ---------------------------------------------------------------------------------- svm-probe's baseline rows

def probe_ident(ctx: Any, train_images: Any, y_train: Any, test_images: Any, y_test: Any, grid: Any) -> dict:
    """What every svm-probe row depends on, the GAN aside: the images and labels, the draws, C's choice, the
    solver, the seed, the device kind and the versions of the code that computes it."""
    import sklearn
    import torch

    from ganlab import __version__, content_digest

    o = ctx.options
    return {"version": BASELINE_VERSION, "ganlab": __version__, "torch": torch.__version__,
            "sklearn": sklearn.__version__, "device": torch.device(ctx.device).type, "seed": ctx.seed,
            "data": content_digest(train_images, y_train, test_images, y_test), "grid": list(grid),
            "protocol": {k: o[k] for k in ("draws", "select_draws", "val_size", "solver", "tol")}}


def row_ident(ident: dict, name: str, labels: str, ctx: Any) -> dict:
    """``ident`` plus what the row ``name`` (pixels, kmeans, random-d, supervised) adds: its preprocessing, K,
    D's architecture (the random D and the CNN are built from it), the CNN's schedule."""
    o, architecture = ctx.options, ctx.gan.config.to_dict()
    extra = {"pixels": {"preprocess": o["preprocess"]},
             "kmeans": {"preprocess": o["kmeans_preprocess"], "k": o["kmeans_k"]},
             "random-d": {"preprocess": o["preprocess"], "bn_stats": o["bn_stats"], "batch_size": o["batch_size"],
                          "architecture": architecture},
             "supervised": {"architecture": architecture, "steps": o["supervised_steps"],
                            "draws": o["supervised_draws"], "patience": o["supervised_patience"]}}[name]
    return {**ident, "row": name, "labels": labels, **extra}


ROW_FIELDS = {"svm": {"dim": int, "seconds": float, "C": float, "C_table": list, "solvers": list, "fit_total": float,
                      "features_seconds": float},
              "supervised": {"seconds": float, "kept": list}}


def valid_row(row: Any, name: str) -> bool:
    """A stored row with every field the table needs, of the right kind (else it is computed again)."""
    fields = ROW_FIELDS["supervised" if name == "supervised" else "svm"]
    if not isinstance(row, dict) or not isinstance(row.get("accuracies"), list) or not row["accuracies"]:
        return False
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in row["accuracies"]):
        return False
    if not all(isinstance(row.get(k), (int, float) if kind is float else kind) for k, kind in fields.items()):
        return False
    if name == "supervised":
        return all(isinstance(k, int) for k in row["kept"])
    return (all(isinstance(s, str) for s in row["solvers"])
            and all(isinstance(e, list) and len(e) == 2 and all(isinstance(v, (int, float)) for v in e)
                    for e in row["C_table"]))
