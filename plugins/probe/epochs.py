"""Evaluator ``probe-epochs``: a cheap linear probe that follows a run across its epochs.

``svm-probe`` is the full protocol (several label budgets, many draws, every baseline) and too slow to rerun on
every epoch checkpoint. ``probe-epochs`` is ``cheap``: ``ganlab report RUN_FOLDER`` runs it on each epoch, so
the report plots D's probe accuracy across training against flat lines for raw pixels and K-means.

One label budget (all the training labels kept by ``train_limit``, minus a validation split), one C:

- The split: ``val_size`` of the training images (seeded by the report's seed) is the validation split; the
  SVM is fitted on the rest and scored on the validation split and on the held-out split.
- C is chosen once, on the validation split, from ``C_grid``, with the run's last epoch checkpoint (the
  highest-numbered ``epoch_*.pt`` beside the checkpoint; the checkpoint itself when there is none), and kept
  for every epoch (cached under that file's path, size and time, the dataset, limits, seed and grid, so a
  retrained run chooses again), so the curve shows D's features changing, not C. ``C`` > 0 fixes it by hand.
- D's BatchNorm statistics are recomputed on the training images (``bn_stats``), as in ``svm-probe``.
- Baselines (``pixels``, ``kmeans``: standardised K-means as in ``svm-probe``) do not change with the epoch:
  they are computed once, each with its own C chosen on the same validation split, and cached.

Pick an epoch by ``d.val_accuracy`` only: ``d.test_accuracy`` is the figure to report for the epoch chosen.
"""
from __future__ import annotations

from pathlib import Path

from ganlab import Evaluator, GanlabError, Option, Result, Table, hookimpl

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
        "train_limit": 2000,  # training images (0: all); the validation split comes out of these
        "test_limit": 1000,  # held-out images scored (0: all)
        "val_size": 0.2,
        "C_grid": "1e-4,2e-4,5e-4,1e-3,2e-3,5e-3,1e-2,1e-1",
        "C": 0.0,  # > 0: this C for D, no selection
        "baselines": ",".join(BASELINES),
        "kmeans_k": 200,
        "bn_stats": Option("real", "D's BatchNorm statistics: real (recomputed on the training images) or running",
                           choices=("real", "running")),
        "solver": "auto",
    }

    def run(self, ctx):
        import numpy as np

        from ganlab import discriminator_features, load

        from .protocol import validation_split

        o = ctx.options
        baselines = [b.strip() for b in str(o["baselines"]).split(",") if b.strip()]
        if set(baselines) - set(BASELINES):
            raise GanlabError(f"probe-epochs.baselines takes {', '.join(BASELINES)}, not {o['baselines']!r}")
        if o["bn_stats"] not in ("real", "running"):
            raise GanlabError(f"probe-epochs.bn_stats is 'real' or 'running', not {o['bn_stats']!r}")
        grid = tuple(float(c) for c in str(o["C_grid"]).split(","))
        train, y_train = ctx.split(ctx.train_split, limit=o["train_limit"] or None)
        test, y_test = ctx.split(ctx.heldout_split, limit=o["test_limit"] or None)
        y_train, y_test = y_train.numpy(), y_test.numpy()
        pool, val = validation_split(len(y_train), float(o["val_size"]), np.random.default_rng(ctx.seed))

        def features(images):
            return discriminator_features(ctx.gan.discriminator, images, device=ctx.device, bn_stats=o["bn_stats"],
                                          real_images=train)

        X_train, X_test = features(train), features(test)
        config = ctx.gan.config
        ident = {"dataset": ctx.dataset, "root": str(Path(ctx.data_root).resolve()) if ctx.data_root else None,
                 "train": [ctx.train_split, o["train_limit"]], "test": [ctx.heldout_split, o["test_limit"]],
                 "seed": ctx.seed, "val_size": o["val_size"], "grid": grid, "solver": o["solver"],
                 "image": [config.image_size, config.channels], "skip_bad": ctx.skip_bad_images}
        C, chosen_by = float(o["C"]), "set by hand"
        if C <= 0:
            chooser = _chooser(ctx.gan.path)
            stat = chooser.stat() if chooser is not None else None
            key = {**ident, "what": "C", "bn_stats": o["bn_stats"], "chooser": str(chooser),
                   "file": [stat.st_size, stat.st_mtime_ns] if stat else None}

            def choose():
                X = X_train
                if chooser is not None and ctx.gan.path is not None and not _same(chooser, ctx.gan.path):
                    X = discriminator_features(load(chooser, ctx.device).discriminator, train, device=ctx.device,
                                               bn_stats=o["bn_stats"], real_images=train)
                return [_select(X, y_train, pool, val, grid, o["solver"]),
                        chooser.name if chooser is not None else "this checkpoint"]

            C, chosen_by = ctx.cache.json("probe-epochs", key, choose)
        rows, metrics = [], {}
        d = _scores(X_train, y_train, X_test, y_test, pool, val, C, o["solver"])
        results = {"d": [*d, C]}
        for name in baselines:
            results[name] = ctx.cache.json("probe-epochs", {**ident, "what": name, "kmeans_k": o["kmeans_k"]},
                                   lambda name=name: _baseline(ctx, name, train, test, y_train, y_test, pool, val,
                                                               grid, o))
        labels = {"d": "DCGAN discriminator (this checkpoint)", "pixels": "raw pixels",
                  "kmeans": f"K-means triangle, K = {o['kmeans_k']}, standardised"}
        for name, (val_acc, test_acc, c) in results.items():
            metrics[f"{name}.val_accuracy"], metrics[f"{name}.test_accuracy"] = val_acc, test_acc
            rows.append([labels[name], f"{100 * val_acc:.2f}", f"{100 * test_acc:.2f}", f"{c:g}"])
        how = chosen_by if o["C"] > 0 else f"chosen on the validation split by {chosen_by}"
        text = [f"Fitted on {len(pool)} labelled training images, validation on {len(val)}, tested on "
                f"{len(y_test)} '{ctx.heldout_split}' images. D's C = {C:g} ({how}), "
                "kept for every epoch; each baseline's C chosen on the same validation split. Choose an epoch by "
                "validation accuracy; report its test accuracy."]
        return Result(metrics=metrics, text=text,
                      tables=[Table("Cheap linear probe (one label budget)",
                                    ["features", "validation accuracy %", "test accuracy %", "C"], rows)])


def _chooser(path) -> Path | None:
    """The checkpoint that chooses C: the highest-numbered epoch_*.pt beside ``path``, else ``path`` itself."""
    if path is None:
        return None
    path = Path(path).resolve()
    epochs = sorted(p for p in path.parent.glob("epoch_*.pt") if p.stem.removeprefix("epoch_").isdigit())
    return max(epochs, key=lambda p: int(p.stem.removeprefix("epoch_"))) if epochs else path


def _same(a, b) -> bool:
    """The same file (last.pt is a hard link to the newest epoch file)."""
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _select(X, y, pool, val, grid, solver) -> float:
    from .protocol import select_C

    if len(grid) == 1:
        return grid[0]
    best, _ = select_C(X, y, [pool], val, grid, solver, preprocess=None)
    return float(best)


def _scores(X_train, y_train, X_test, y_test, pool, val, C, solver, preprocess=None) -> list[float]:
    """[validation accuracy, test accuracy] of the SVM fitted at C on the pool rows."""
    from .protocol import Standardizer, _view
    from .solver import fit_linear_svm

    st = Standardizer().fit(X_train, pool) if preprocess == "standardize" else None
    probe = fit_linear_svm(_view(X_train, pool, st), y_train[pool], C, solver=solver)
    return [float(probe.score(_view(X_train, val, st), y_train[val])), float(probe.score(_view(X_test, None, st),
                                                                                         y_test))]


def _baseline(ctx, name, train, test, y_train, y_test, pool, val, grid, o) -> list[float]:
    """[validation accuracy, test accuracy, C] of a baseline, C chosen on the validation split."""
    from ganlab import to_unit_range

    from .protocol import select_C

    preprocess = None
    if name == "pixels":
        X_train, X_test = (to_unit_range(x).flatten(1).numpy() for x in (train, test))
    else:
        from .kmeans_features import kmeans_train_test

        X_train, X_test = kmeans_train_test(train, test, k=o["kmeans_k"], seed=ctx.seed, device=ctx.device,
                                            progress=not ctx.quiet)
        preprocess = "standardize"
    if len(grid) == 1:
        C = grid[0]
    else:
        C, _ = select_C(X_train, y_train, [pool], val, grid, o["solver"], preprocess=preprocess)
    return [*_scores(X_train, y_train, X_test, y_test, pool, val, float(C), o["solver"], preprocess), float(C)]


@hookimpl
def ganlab_register_evaluators(register):
    register(ProbeEpochs())
