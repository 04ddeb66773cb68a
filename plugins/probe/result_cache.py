"""svm-probe's baseline rows (pixels, K-means, random D, supervised CNN), kept as JSON in the report's cache.

They depend on the images, labels, settings and D's architecture only, not on the GAN, so every checkpoint, GAN
seed and later report on the same data shares them: each is stored under everything it was computed from, as FID
tools keep reference statistics, and checked field by field when read back (``valid_row``).
"""
from typing import Any

#: Part of every svm-probe identity: raise it when a change to the protocol's code changes its numbers.
BASELINE_VERSION = 3
NUMBER = (int, float)
ROW_FIELDS = {"svm": {"dim": int, "seconds": NUMBER, "C": NUMBER, "C_table": list, "solvers": list,
                      "fit_total": NUMBER, "features_seconds": NUMBER, "tested": int},
              "supervised": {"seconds": NUMBER, "kept": list, "tested": int}}


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


def valid_row(row: Any, name: str) -> bool:
    """A stored row with every field the table needs, of the right kind (else it is computed again)."""
    accuracies = row.get("accuracies") if isinstance(row, dict) else None
    fields = ROW_FIELDS[name if name == "supervised" else "svm"]
    if (not accuracies or not isinstance(accuracies, list)
            or any(isinstance(a, bool) or not isinstance(a, NUMBER) for a in accuracies)
            or not all(isinstance(row.get(k), kind) for k, kind in fields.items())):
        return False
    if name == "supervised":
        return all(isinstance(k, int) for k in row["kept"])
    return (all(isinstance(s, str) for s in row["solvers"])
            and all(isinstance(e, list) and len(e) == 2 and all(isinstance(v, NUMBER) for v in e)
                    for e in row["C_table"]))
