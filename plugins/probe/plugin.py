"""Evaluator ``svm-probe``: the paper's linear L2-SVM on D's features against raw pixels, a random D, K-means and a
supervised CNN, with all labels and/or N per class; the baseline rows, which do not depend on the GAN, are kept in
the cache (``result_cache.py``).

CPU threads (``threads`` = 0): one per ``THREAD_ELEMENTS`` feature values (training images x D's features), at
most the cores this process may use minus one. Small products gain nothing from more threads, and a product waits
for its slowest thread, so one that shares a core with other work stalls them all: on a busy 2-core machine two
threads made every phase 2-5x slower than one. The supervised CNN trains on torch's own setting, as GAN training
does: its convolutions scale with threads.
"""
import os
import time
import warnings

from ganlab import Evaluator, GanlabError, Option, hookimpl

from . import presentation, result_cache
from .embedding import umap_figure
from .intervals import packed
from .presentation import mode_key
from .settings import DEFAULT_C_GRID, MIN_POSITIVE, SOLVERS, listed, names

CACHE_FOLDER = "svm-probe"  # baseline rows, under the cache folder
BASELINES = ("pixels", "random-d", "kmeans", "supervised")
THREAD_ELEMENTS = 2**22  # feature values per CPU thread (16 MiB of float32)


def probe_threads(elements: int) -> int:
    """CPU threads for a probe on ``elements`` feature values (rows x dims): the rule in the module doc."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores - 1, elements // THREAD_ELEMENTS))


def parse_modes(values) -> list[int | None]:
    """["10", "all"] -> [10, None] (None: every training label)."""
    parts = [str(part).lower() for part in listed(values)]
    for part in parts:
        if part not in ("all", "full") and (not (part.isascii() and part.isdigit()) or int(part) < 1):
            raise GanlabError(f"svm-probe.labels_per_class takes whole numbers and 'all', not {part!r}")
    return [None if part in ("all", "full") else int(part) for part in parts]


def drawable(ctx, modes: list, labels, split: bool) -> tuple[list, str | None]:
    """The label budgets a class-balanced draw can take from the training labels (those outside the validation
    split, when one is cut), and why the others are left out (None: none is); when no budget is left, a
    GanlabError that says which budgets would do."""
    from .protocol import scarcest_class

    label, count = scarcest_class(labels, _val_size(ctx.options["val_size"]) if split else 0, ctx.seed)
    kept = [mode for mode in modes if mode is None or mode <= count]
    if kept == modes:
        return modes, None
    classes = ctx.layout.classes if ctx.layout and ctx.layout.classes else ()
    name = classes[label] if 0 <= label < len(classes) else str(label)
    why = (f"{' and '.join(str(m) for m in modes if m not in kept)} labels per class: not run, class {name!r} has "
           f"{count} training images" + (" outside the validation split" if split else ""))
    if not kept:
        raise GanlabError(f"{why}; give --set svm-probe.labels_per_class=all or a number up to {count}")
    return kept, f"{why} (--set svm-probe.labels_per_class takes numbers up to {count}, and all)."


def _val_size(value: float) -> int | float:
    return int(value) if value >= 1 else float(value)


class SvmProbe(Evaluator):
    name = "svm-probe"
    description = ("Linear L2-SVM on D's max-pooled conv features (the paper's section 5.1), "
                   "against raw pixels, a random D, K-means and a supervised CNN")
    needs = ("labels", "heldout", "discriminator")
    directions = {"*.accuracy": "higher", "*.error": "lower", "d_minus_*.difference": "higher", "*": None}
    options = {
        "labels_per_class": Option(["10", "all"], "label-scarce sizes (labels per class) and/or all"),
        "draws": Option(10, "class-balanced draws per label-scarce size", min=1),
        "select_draws": Option(0, "draws that choose C, from a random stream of their own (0: as many as draws)",
                               min=0),
        "val_size": Option(0.2, "the validation split, out of the training split: a fraction, or a count",
                           min=0),
        "C_grid": Option(list(DEFAULT_C_GRID), "the C values to choose from", min=MIN_POSITIVE),
        "solver": Option("auto", "auto: kernel (batched Newton) up to 2,000 rows and 4 x dims, liblinear up to "
                         "128 dims, torch L-BFGS otherwise and above 1 GB (solver.py)", choices=SOLVERS),
        "tol": Option(1e-4, "liblinear's tol; torch: max |gradient| relative to its value at w = 0"),
        "preprocess": Option("none", "none (the paper: raw features) or standardize (on each training subset; it "
                             "flatters weak features such as a random D's)", choices=("none", "standardize")),
        "ci95": Option(False, "report mean +- 1.96 std over the draws (SVHN Table 2 style)"),
        "baselines": Option(list(BASELINES), "the rows D is compared with", choices=BASELINES),
        "kmeans_k": Option(200, "K-means centroids (Coates & Ng's 80.6% used 1,600; 200 keeps the CPU cost modest)"),
        "kmeans_preprocess": Option("standardize", "the K-means row: standardize (Coates & Ng) or none",
                                    choices=("none", "standardize")),
        "bn_stats": Option("real", "D's BatchNorm statistics: real (recomputed on the training images, the "
                           "authors' protocol) or running (kept in training)", choices=("real", "running")),
        "supervised_steps": Option(300, "at most this many steps of the supervised CNN"),
        "supervised_draws": Option(3, "draws of the labelled subset for the supervised CNN row (a CNN each)", min=1),
        "supervised_patience": Option(100, "stop the supervised CNN after this many steps without a better "
                                      "validation accuracy (checked every 25) and keep its best weights; 0: run "
                                      "every supervised_steps step and keep the last", min=0),
        "train_split": Option("train", "the split the probe trains on (and its validation part is cut from)"),
        "test_split": Option("", "the split to test on ('': the dataset's held-out split)"),
        "train_limit": Option(0, "training images (0: every image of the split)", min=0),
        "test_limit": Option(0, "test images (0: every image of the split)", min=0),
        "umap": Option(True, "draw the UMAP figure (numba: the first report on a machine compiles it, ~40 s)"),
        "umap_points": Option(2000, "test images drawn in the UMAP figure", min=10),
        "batch_size": Option(256, "images per forward pass when extracting D's features", min=1),
        "threads": Option(0, "CPU threads while the probe runs; 0: one per 4M feature values (training images x "
                          "D's features), at most the usable cores minus one", min=0),
        "cache_baselines": Option(True, "reuse baseline rows computed before on the same images, labels, settings "
                                  "and D architecture (they do not depend on the GAN); false: compute them again"),
    }

    def run(self, ctx):
        import torch
        from sklearn.exceptions import ConvergenceWarning

        from ganlab import feature_dim

        o = ctx.options
        modes, baselines = parse_modes(o["labels_per_class"]), names(o["baselines"], BASELINES, "svm-probe.baselines")
        train_images, y_train = ctx.split(o["train_split"], limit=o["train_limit"] or None)
        test_images, y_test = ctx.split(o["test_split"] or ctx.heldout_split, limit=o["test_limit"] or None)
        data = (train_images, y_train.numpy(), test_images, y_test.numpy())
        grid = tuple(float(c) for c in listed(o["C_grid"]))
        # a validation split is cut to choose C among several, and for the supervised CNN's stopping step
        modes, left_out = drawable(ctx, modes, data[1], split=len(grid) > 1 or "supervised" in baselines)
        ident = result_cache.probe_ident(ctx, *data, grid) if o["cache_baselines"] and baselines else None
        stored = self._stored(ctx, ident, baselines, modes)
        before = torch.get_num_threads()
        # liblinear warns once per unconverged fit; count them for the report instead of flooding the terminal
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                if torch.device(ctx.device).type == "cpu":
                    elements = len(y_train) * feature_dim(ctx.gan.discriminator)
                    torch.set_num_threads(o["threads"] or probe_threads(elements))
                rows, features = self._svm_rows(ctx, modes, baselines, data, grid, ident, stored)
            finally:
                torch.set_num_threads(before)
            for mode in modes if "supervised" in baselines else ():  # on torch's own threads: convolutions scale
                rows["supervised", mode] = stored.get(("supervised", mode)) or self._supervised_row(ctx, ident, mode,
                                                                                                    data)
            figures = [umap_figure(features["d"][1], data[3], points=o["umap_points"], seed=ctx.seed,
                                   cache=ctx.cache)] if o["umap"] else []
        result = presentation.result(ctx, rows, modes, stored, features["d"][0].shape[1],
                                     o["test_split"] or ctx.heldout_split, len(data[3]))
        result.figures += figures
        result.text += [left_out] if left_out else []
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        if unconverged:
            result.text.append(f"liblinear stopped at its iteration limit in {unconverged} fits (their accuracy is "
                               "still measured; large C values converge slowest).")
        return result

    def _svm_rows(self, ctx, modes, baselines, data, grid, ident, stored) -> tuple[dict, dict]:
        """((row, labels_per_class) -> row, name -> features) of D and the baselines an SVM probes."""
        svm_names = ["d"] + [name for name in baselines if name != "supervised"]
        features = {name: self._features(ctx, name, data[0], data[2])
                    for name in svm_names if name == "d" or any((name, m) not in stored for m in modes)}
        rows = {}
        for mode in modes:
            shown = svm_names if ctx.progress is None or ctx.quiet else ctx.progress(
                svm_names, desc=f"L2-SVM fits, {mode_key(mode)}", total=len(svm_names))
            for name in shown:
                rows[name, mode] = stored.get((name, mode)) or self._svm_row(ctx, ident, name, mode, features,
                                                                                data, grid)
        return rows, features

    @staticmethod
    def _where(ctx, ident, name, mode):
        return result_cache.row_ident(ident, name, mode_key(mode), ctx)

    def _stored(self, ctx, ident, baselines, modes) -> dict:
        """(row, labels_per_class) -> the baseline rows an earlier report kept (checked field by field)."""
        keys = [(name, mode) for name in baselines for mode in modes] if ident is not None else []
        found = {key: ctx.cache.json(CACHE_FOLDER, self._where(ctx, ident, *key)) for key in keys}
        return {key: row for key, row in found.items() if result_cache.valid_row(row, key[0])}

    def _svm_row(self, ctx, ident, name, mode, features, data, grid) -> dict:
        """The numbers of one L2-SVM row, computed (and a baseline's kept in the cache)."""
        from .protocol import evaluate

        o = ctx.options
        X_train, X_test, extract_seconds = features[name]
        preprocess = o["kmeans_preprocess"] if name == "kmeans" else o["preprocess"]
        result = evaluate(X_train, data[1], X_test, data[3], labels_per_class=mode, draws=o["draws"],
                          select_draws=o["select_draws"] or None, C_grid=grid, val_size=_val_size(o["val_size"]),
                          seed=ctx.seed, solver=o["solver"], ci95=o["ci95"], device=ctx.device,
                          preprocess=None if preprocess == "none" else preprocess, fit_kwargs={"tol": o["tol"]})
        row = {"dim": int(result.feature_dim), "accuracies": [float(a) for a in result.accuracies],
               "seconds": float(result.fit_seconds), "C": float(result.best_C),
               "C_table": [[float(c), float(e)] for c, e in result.C_table.items()],
               "solvers": list(result.solvers), "fit_total": float(result.total_fit_seconds),
               "features_seconds": float(extract_seconds), "tested": len(data[3])}
        if result.correct is not None:
            row["correct"] = packed(result.correct)
        if name != "d" and ident is not None:
            ctx.cache.put_json(CACHE_FOLDER, self._where(ctx, ident, name, mode), row)
        return row

    def _supervised_row(self, ctx, ident, labels_per_class, data) -> dict:
        """D's architecture trained on the labels alone."""
        import numpy as np

        from .protocol import balanced_draw, validation_split
        from .supervised import accuracy, train_classifier

        o, (train_images, y_train, test_images, y_test) = ctx.options, data
        rng = np.random.default_rng(ctx.seed)
        pool, val = validation_split(len(y_train), _val_size(o["val_size"]), rng)
        accuracies, seconds, kept = [], [], []
        for draw in range(1 if labels_per_class is None else o["supervised_draws"]):
            rows = pool if labels_per_class is None else balanced_draw(y_train, labels_per_class, rng, pool=pool)
            start = time.perf_counter()
            # the validation images that choose the SVM's C (when it has several) choose the CNN's stopping step
            model, step = train_classifier(ctx.gan.config, train_images[rows], y_train[rows],
                                           num_classes=int(y_train.max()) + 1, steps=o["supervised_steps"],
                                           seed=ctx.seed + draw, device=ctx.device, val_images=train_images[val],
                                           val_labels=y_train[val], patience=o["supervised_patience"])
            seconds.append(time.perf_counter() - start)
            kept.append(int(step))
            accuracies.append(float(accuracy(model, test_images, y_test, device=ctx.device)))
        row = {"accuracies": accuracies, "seconds": float(np.mean(seconds)), "kept": kept, "tested": len(y_test)}
        if ident is not None:
            ctx.cache.put_json(CACHE_FOLDER, self._where(ctx, ident, "supervised", labels_per_class), row)
        return row

    def _features(self, ctx, name, train_images, test_images):
        """(X_train, X_test, seconds) of a feature set: a baseline made from the images, or D's pooled features of
        both splits (for random-d the same architecture at random init, seeded), each kept in the feature cache
        under its own tag."""
        import torch

        from ganlab import Discriminator, cached_features, feature_cache_key

        from .kmeans_features import image_features

        start = time.perf_counter()
        if name not in ("d", "random-d"):
            return (*image_features(ctx, name, train_images, test_images), time.perf_counter() - start)
        o, discriminator, tag = ctx.options, ctx.gan.discriminator, "D"
        if name == "random-d":
            torch.manual_seed(ctx.seed)
            discriminator, tag = Discriminator(ctx.gan.config), f"random-D-seed{ctx.seed}"
        out = []
        for split, images, limit in ((o["train_split"], train_images, o["train_limit"]),
                                     (o["test_split"] or ctx.heldout_split, test_images, o["test_limit"])):
            key = feature_cache_key(ctx.gan.path, tag, ctx.dataset, split, limit or None, bn_stats=o["bn_stats"])
            # both splits are normalised with the training split's statistics
            out.append(cached_features(ctx.cache, key, discriminator, images, device=ctx.device,
                                       batch_size=o["batch_size"], progress=ctx.progress, bn_stats=o["bn_stats"],
                                       real_images=train_images))
        return out[0], out[1], time.perf_counter() - start


@hookimpl
def ganlab_register_evaluators(register):
    register(SvmProbe())


@hookimpl
def ganlab_summarise_seeds(summary):
    from .presentation import seed_table

    table = seed_table(summary)
    return [table] if table else None
