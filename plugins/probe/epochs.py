"""Evaluator ``probe-epochs``: a cheap linear probe that follows a run across its epochs.

``svm-probe`` is too slow to rerun on every epoch checkpoint; ``probe-epochs`` is ``cheap``, so ``ganlab report
RUN_FOLDER`` plots D's probe accuracy across training against flat lines for raw pixels and K-means. One label
budget (the training images kept by ``train_limit``, minus a ``val_size`` validation split seeded by the report's
seed), one C: chosen once on the validation split by the run's last epoch file (the highest ``epoch_NNNN.pt``
beside the checkpoint, else the checkpoint) and kept for every epoch, so the curve shows D's features changing, not
C (cached under that file's size and time, so a retrained run chooses again; ``C`` > 0 fixes it by hand). The
baselines do not change with the epoch: each is computed once with its own C and cached. Choose an epoch by
``d.val_accuracy``; ``d.test_accuracy`` is the figure to report for it.
"""
from pathlib import Path

from ganlab import Evaluator, Option, Result, Table, epoch_files, hookimpl

from .presentation import ROW_NAMES, SHORT_NAMES
from .settings import DEFAULT_C_GRID, MIN_POSITIVE, SOLVERS, listed, names

BASELINES = ("pixels", "kmeans")


class ProbeEpochs(Evaluator):
    name = "probe-epochs"
    description = ("A cheap linear probe of D's features (one label budget, C fixed from validation) that "
                   "follows a run across epochs, against pixel and K-means lines")
    needs = ("labels", "heldout", "discriminator")
    cheap = True
    plot_together = ("val_accuracy", "test_accuracy")  # D's line against the pixel and K-means lines
    directions = {"*.val_accuracy": "higher", "*.test_accuracy": "higher"}
    options = {
        "train_limit": Option(2000, "training images (0: all); the validation split comes out of these", min=0),
        "test_limit": Option(1000, "held-out images scored (0: all)", min=0),
        "val_size": Option(0.2, "the validation split, out of the training images: a fraction, or a count",
                           min=0),
        "C_grid": Option(list(DEFAULT_C_GRID), "the C values to choose from", min=MIN_POSITIVE),
        "C": Option(0.0, "> 0: this C for D, no selection", min=0),
        "baselines": Option(list(BASELINES), "the flat lines D is compared with", choices=BASELINES),
        "kmeans_k": Option(200, "K-means centroids of the baseline row", min=2),
        "bn_stats": Option("real", "D's BatchNorm statistics: real (recomputed on the training images) or running",
                           choices=("real", "running")),
        "solver": Option("auto", "the SVM solver (see svm-probe.solver)", choices=SOLVERS),
    }

    def run(self, ctx):
        import numpy as np

        from .protocol import validation_split

        o = ctx.options
        baselines = names(o["baselines"], BASELINES, "probe-epochs.baselines")
        grid = tuple(float(c) for c in listed(o["C_grid"]))
        train, y_train = ctx.split(ctx.train_split, limit=o["train_limit"] or None)
        test, y_test = ctx.split(ctx.heldout_split, limit=o["test_limit"] or None)
        split = validation_split(len(y_train), float(o["val_size"]), np.random.default_rng(ctx.seed))
        data = (train, y_train.numpy(), test, y_test.numpy(), *split)
        X_train, X_test = (_features(ctx, ctx.gan.discriminator, images, train) for images in (train, test))
        config = ctx.gan.config
        ident = {"dataset": ctx.dataset, "root": str(Path(ctx.data_root).resolve()) if ctx.data_root else None,
                 "train": [ctx.train_split, o["train_limit"]], "test": [ctx.heldout_split, o["test_limit"]],
                 "seed": ctx.seed, "val_size": o["val_size"], "grid": grid, "solver": o["solver"],
                 "image": [config.image_size, config.channels], "skip_bad": ctx.skip_bad_images}
        C, chosen_by = (float(o["C"]), "set by hand") if o["C"] > 0 else _chosen_C(ctx, ident, X_train, data, grid)
        results = {"d": _fit_and_score(X_train, X_test, data, (C,), o["solver"])}
        for name in baselines:
            results[name] = ctx.cache.json("probe-epochs", {**ident, "what": name, "kmeans_k": o["kmeans_k"]},
                                           lambda name=name: _baseline(ctx, name, data, grid))
        return _result(ctx, results, C, chosen_by, data)


def _features(ctx, discriminator, images, train):
    from ganlab import discriminator_features

    return discriminator_features(discriminator, images, device=ctx.device, bn_stats=ctx.options["bn_stats"],
                                  real_images=train)


def _chosen_C(ctx, ident, X_train, data, grid) -> list:
    """[C, the checkpoint that chose it]: the run's last epoch file chooses once, and the cache keeps it."""
    from ganlab import load

    from .protocol import select_C

    chooser = _chooser(ctx.gan.path)
    stat = chooser.stat() if chooser is not None else None
    key = {**ident, "what": "C", "bn_stats": ctx.options["bn_stats"], "chooser": str(chooser),
           "file": [stat.st_size, stat.st_mtime_ns] if stat else None}

    def choose():
        X = X_train
        if chooser is not None and not _same(chooser, ctx.gan.path):
            X = _features(ctx, load(chooser, ctx.device).discriminator, data[0], data[0])
        C = grid[0] if len(grid) == 1 else select_C(X, data[1], [data[4]], data[5], grid, ctx.options["solver"],
                                                     preprocess=None)[0]
        return [float(C), chooser.name if chooser else "this checkpoint"]

    return ctx.cache.json("probe-epochs", key, choose)


def _chooser(path) -> Path | None:
    """The checkpoint that chooses C: the highest-numbered epoch_NNNN.pt beside ``path``, else ``path`` itself."""
    if path is None:
        return None
    path = Path(path).resolve()
    epochs = epoch_files(path.parent)
    return epochs[-1][1] if epochs else path


def _same(a, b) -> bool:
    """The same file (last.pt is a hard link to the newest epoch file)."""
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def _fit_and_score(X_train, X_test, data, grid, solver, preprocess=None) -> list[float]:
    """[validation accuracy, test accuracy, C] of the SVM fitted on the pool rows at the grid's C of least
    validation error (at its only C if it has one: then the validation split may be empty)."""
    from .protocol import fit_grid, select_C
    from .views import FeatureView

    y_train, y_test, pool, val = data[1], data[3], data[4], data[5]
    if len(grid) > 1:
        C, _, [(probe, st)] = select_C(X_train, y_train, [pool], val, grid, solver, preprocess=preprocess,
                                       return_fits=True)
    else:
        C, [(probes, st, _, _)] = grid[0], fit_grid(X_train, y_train, [pool], grid, solver, preprocess=preprocess)
        probe = probes[C]
    return [probe.score(FeatureView(X_train, val, st), y_train[val]),
            probe.score(FeatureView(X_test, None, st), y_test), float(C)]


def _baseline(ctx, name, data, grid) -> list[float]:
    """[validation accuracy, test accuracy, C] of a baseline, its own C chosen on the validation split."""
    from .kmeans_features import image_features

    X_train, X_test = image_features(ctx, name, data[0], data[2])
    preprocess = "standardize" if name == "kmeans" else None
    return _fit_and_score(X_train, X_test, data, grid, ctx.options["solver"], preprocess)


def _result(ctx, results, C, chosen_by, data) -> Result:
    labels = {**ROW_NAMES, "kmeans": f"K-means triangle, K = {ctx.options['kmeans_k']}, standardised"}
    rows, metrics = [], {}
    for name, (val_acc, test_acc, c) in results.items():
        metrics[f"{name}.val_accuracy"], metrics[f"{name}.test_accuracy"] = val_acc, test_acc
        rows.append([labels[name], f"{100 * val_acc:.2f}", f"{100 * test_acc:.2f}", f"{c:g}"])
    how = chosen_by if ctx.options["C"] > 0 else f"chosen on the validation split by {chosen_by}"
    text = [f"Fitted on {len(data[4])} labelled training images, validation on {len(data[5])}, tested on "
            f"{len(data[3])} '{ctx.heldout_split}' images. D's C = {C:g} ({how}), kept for every epoch; each "
            "baseline's C chosen on the same validation split. Choose an epoch by validation accuracy; report its "
            "test accuracy."]
    table = Table("Cheap linear probe (one label budget)", ["features", "validation accuracy %", "test accuracy %",
                                                            "C"], rows)
    return Result(metrics=metrics, text=text, tables=[table], verdict=_verdict(results, len(data[4])))


def _verdict(results: dict, labelled: int) -> str:
    """D's accuracy at this checkpoint against each baseline line, in points (one fit each: no interval)."""
    d_val, d_test, _ = results["d"]
    others = ", ".join(f"{SHORT_NAMES[name]} {100 * test:.1f}%" for name, (_, test, _) in results.items()
                       if name != "d")
    return (f"D's features: {100 * d_test:.1f}% on held-out images with {labelled} labels (validation "
            f"{100 * d_val:.1f}%)" + (f", against {others}" if others else "")
            + "; across a run folder this picks the epoch (--select-epoch probe-epochs.d.val_accuracy)")


@hookimpl
def ganlab_register_evaluators(register):
    register(ProbeEpochs())
