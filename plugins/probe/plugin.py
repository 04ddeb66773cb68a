"""Evaluator ``svm-probe``: the paper's linear L2-SVM on discriminator features, with baselines.

Rows of one table, each in full-label and label-scarce (N per class, K draws) mode:
trained D, raw pixels, the same D architecture at random initialisation, single-layer K-means
(Coates & Ng 2011) and a supervised CNN with D's architecture trained on the same labels.
The paper's own figures are printed beside them, labelled as such.

Speed (issue 12): the fits run on one CPU thread by default (``threads``), the label-scarce draws
and C grid as one batched kernel-Newton problem per feature set, the full-label grid with one
shared preconditioner and warm starts (see ``solver.py`` for which solver ``auto`` takes when).
The UMAP figure's numba code is cached under the cache folder, so only the first report on a
machine compiles it (see ``embedding.py``); the small ``probe-digits`` experiment leaves it off.
The baseline rows do not depend on the GAN: each is kept under the cache folder and reused by any later
report with the same images, labels, settings and D architecture (``result_cache.py``; ``cache_baselines``).
"""
from __future__ import annotations

import time

from ganlab import Evaluator, Figure, GanlabError, Option, hookimpl

from . import presentation, result_cache
from .intervals import packed
from .presentation import mode_key

CACHE_FOLDER = "svm-probe"  # baseline rows, under the cache folder

BASELINES = ("pixels", "random-d", "kmeans", "supervised")


def parse_modes(text: str) -> list[int | None]:
    """"10,all" -> [10, None] (None = every training label)."""
    modes: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part in ("all", "full"):
            modes.append(None)
        elif part:
            if not part.isdigit() or int(part) < 1:
                raise ValueError(f"labels_per_class takes whole numbers and 'all', not {part!r}")
            modes.append(int(part))
    return modes


def _val_size(value: float) -> int | float:
    return int(value) if value >= 1 else float(value)


class SvmProbe(Evaluator):
    name = "svm-probe"
    description = ("Linear L2-SVM on D's max-pooled conv features (the paper's section 5.1), "
                   "against raw pixels, a random D, K-means and a supervised CNN")
    needs = ("labels", "heldout", "discriminator")
    directions = {"*.accuracy": "higher", "*.error": "lower", "d_minus_*.difference": "higher", "*": None}
    options = {
        "labels_per_class": "10,all",  # label-scarce sizes and/or "all"
        "draws": 10,  # class-balanced draws per label-scarce size
        "select_draws": 0,  # draws used to choose C, from their own random stream (0: as many as draws)
        "val_size": 0.2,  # validation split from the training split: a fraction, or a count
        "C_grid": "1e-4,2e-4,5e-4,1e-3,2e-3,5e-3,1e-2,1e-1",
        # kernel, liblinear, torch, or auto: kernel (batched Newton on the Gram matrix) up to 2,000 rows (and
        # rows <= 4 x dims), liblinear for <= 128 dims, torch L-BFGS otherwise and above 1 GB; see solver.py
        "solver": "auto",
        # stopping tolerance: liblinear's tol; torch: max |gradient| relative to its value at w = 0
        "tol": 1e-4,
        # "none": the paper's L2-SVM on the raw features; "standardize": zero mean, unit variance per
        # feature (fitted on each training subset), which flatters weak features such as a random D's
        "preprocess": Option("none", "none (the paper: raw features) or standardize", choices=("none", "standardize")),
        "ci95": False,  # report +- 1.96 std (SVHN Table 2 style)
        "baselines": ",".join(BASELINES),
        # centroids; Coates & Ng's 1-layer row (80.6% in the paper's Table 1) used 1,600 (6,400 features with
        # the 4 quadrants) on 4,800-map settings tuned for CIFAR-10: 200 keeps the CPU cost modest
        "kmeans_k": 200,
        # Coates & Ng standardise the encoded features before the linear SVM ("none": raw, like D's row)
        "kmeans_preprocess": Option("standardize", "the K-means row: standardize (Coates & Ng) or none",
                                    choices=("none", "standardize")),
        # "real": D's BatchNorm statistics recomputed on the training split's real images first (the authors'
        # protocol); "running": the running averages kept in training (updated by real and generated batches)
        "bn_stats": Option("real", "D's BatchNorm statistics: real (recomputed on the training images) or running",
                           choices=("real", "running")),
        "supervised_steps": 300,  # at most
        "supervised_draws": 3,
        "supervised_patience": Option(100, "stop the supervised CNN after this many steps without a better "
                                      "validation accuracy (checked every 25) and keep its best weights; 0: run "
                                      "every supervised_steps step and keep the last", min=0),
        "train_split": "train",
        "test_split": "",  # "": the dataset's held-out split ("test" for most)
        "train_limit": 0,  # 0: every image of the split
        "test_limit": 0,
        "umap": True,  # numba-compiled: the first report on a machine compiles it (~40 s), later ones load it
        "umap_points": 2000,
        "batch_size": 256,
        # CPU threads while the probe runs (0: torch's setting). 1 by default: on the shared 2-core
        # machine two threads made every phase 2-5x slower (D features 8.0 s vs 1.8 s, see benchmarks/).
        # The supervised CNN trains on torch's setting, as GAN training does: its convolutions scale (a
        # batch-64 step at 32x32, ndf 32: 12 ms on 2 threads, 21 ms on 1, idle machine)
        "threads": 1,
        "cache_baselines": Option(True, "reuse baseline rows (pixels, random-d, kmeans, supervised) computed before "
                                  "on the same images, labels, settings and D architecture: they do not depend on "
                                  "the GAN; false: compute them again"),
    }

    def run(self, ctx):
        import warnings

        import torch
        from sklearn.exceptions import ConvergenceWarning

        threads = int(ctx.options.get("threads", 0) or 0)
        if threads < 0:
            raise GanlabError("svm-probe.threads takes 0 (torch's setting) or a positive number of CPU threads")
        before = torch.get_num_threads()
        # liblinear warns once per unconverged fit; count them for the report instead of flooding the terminal
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                if threads and torch.device(ctx.device).type == "cpu":
                    torch.set_num_threads(threads)
                result = self._run(ctx, cnn_threads=before)
            finally:
                torch.set_num_threads(before)
        unconverged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        if unconverged:
            result.text.append(f"liblinear stopped at its iteration limit in {unconverged} fits (their accuracy is "
                               "still measured; large C values converge slowest).")
        return result

    def _run(self, ctx, cnn_threads: int):
        o = ctx.options
        modes = parse_modes(o["labels_per_class"])
        baselines = [b.strip() for b in str(o["baselines"]).split(",") if b.strip()]
        unknown = sorted(set(baselines) - set(BASELINES))
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)}")
        grid = tuple(float(c) for c in str(o["C_grid"]).split(","))
        train_images, y_train = ctx.split(o["train_split"], limit=o["train_limit"] or None)
        test_split = o["test_split"] or ctx.heldout_split
        test_images, y_test = ctx.split(test_split, limit=o["test_limit"] or None)
        data = (train_images, y_train.numpy(), test_images, y_test.numpy())
        ident = (result_cache.probe_ident(ctx, *data, grid) if o["cache_baselines"] and baselines else None)
        stored = self._stored(ctx, ident, baselines, modes)
        svm_names = ["d"] + [name for name in baselines if name != "supervised"]
        features = {name: getattr(self, f"_{name.replace('-', '_')}_features")(ctx, train_images, test_images)
                    for name in svm_names if name == "d" or any((name, m) not in stored for m in modes)}
        rows = {}
        for mode in modes:
            for name in self._progress(ctx, svm_names, f"L2-SVM fits, {mode_key(mode)}"):
                rows[name, mode] = stored.get((name, mode)) or self._svm_row(ctx, ident, name, mode, features,
                                                                                data, grid)
            if "supervised" in baselines:
                rows["supervised", mode] = (stored.get(("supervised", mode))
                                            or self._supervised_row(ctx, ident, mode, data, cnn_threads))
        result = presentation.result(ctx, rows, modes, stored, features["d"][0].shape[1], test_split, len(y_test))
        if o["umap"]:
            result.figures.append(self._umap(ctx, features["d"][1], data[3]))
        return result

    @staticmethod
    def _progress(ctx, names, desc):
        if ctx.progress is None or ctx.quiet:
            return names
        return ctx.progress(names, desc=desc, total=len(names))

    @staticmethod
    def _where(ctx, ident, name, mode):
        return result_cache.row_ident(ident, name, mode_key(mode), ctx)

    def _stored(self, ctx, ident, baselines, modes) -> dict:
        """(row, labels_per_class) -> the baseline rows an earlier report kept (checked field by field)."""
        stored = {}
        for name in baselines if ident is not None else ():
            for mode in modes:
                found = ctx.cache.json(CACHE_FOLDER, self._where(ctx, ident, name, mode))
                if result_cache.valid_row(found, name):
                    stored[name, mode] = found
        return stored

    def _svm_row(self, ctx, ident, name, mode, features, data, grid) -> dict:
        """The numbers of one L2-SVM row, computed (and a baseline's kept in the cache)."""
        o = ctx.options
        X_train, X_test, extract_seconds = features[name]
        result = self._probe(ctx, X_train, data[1], X_test, data[3], mode, grid,
                             o["kmeans_preprocess"] if name == "kmeans" else o["preprocess"])
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

    def _supervised_row(self, ctx, ident, mode, data, threads) -> dict:
        accuracies, seconds, kept = self._supervised(ctx, data[0], data[1], data[2], data[3], mode, threads)
        row = {"accuracies": [float(a) for a in accuracies], "seconds": float(seconds),
               "kept": [int(k) for k in kept], "tested": len(data[3])}
        if ident is not None:
            ctx.cache.put_json(CACHE_FOLDER, self._where(ctx, ident, "supervised", mode), row)
        return row

    # --- feature sets: (X_train, X_test, seconds) ------------------------------------------------
    def _d_features(self, ctx, train_images, test_images, discriminator=None, tag="D"):
        from ganlab import cached_features, feature_cache_key

        o = ctx.options
        if o["bn_stats"] not in ("real", "running"):
            raise GanlabError(f"svm-probe.bn_stats is 'real' or 'running', not {o['bn_stats']!r}")
        discriminator = discriminator or ctx.gan.discriminator
        start = time.perf_counter()
        out = []
        for split, images, limit in ((o["train_split"], train_images, o["train_limit"]),
                                     (o["test_split"] or ctx.heldout_split, test_images, o["test_limit"])):
            key = feature_cache_key(ctx.gan.path, tag, ctx.dataset, split, limit or None, bn_stats=o["bn_stats"])
            # both splits are normalised with the training split's statistics
            out.append(cached_features(ctx.cache, key, discriminator, images, device=ctx.device,
                                       batch_size=o["batch_size"], progress=ctx.progress, bn_stats=o["bn_stats"],
                                       real_images=train_images))
        return out[0], out[1], time.perf_counter() - start

    def _pixels_features(self, ctx, train_images, test_images):
        from ganlab import to_unit_range

        start = time.perf_counter()
        X = [to_unit_range(images).flatten(1).numpy() for images in (train_images, test_images)]
        return X[0], X[1], time.perf_counter() - start

    def _random_d_features(self, ctx, train_images, test_images):
        import torch

        from ganlab import Discriminator

        torch.manual_seed(ctx.seed)
        return self._d_features(ctx, train_images, test_images, Discriminator(ctx.gan.config),
                                tag=f"random-D-seed{ctx.seed}")

    def _kmeans_features(self, ctx, train_images, test_images):
        from .kmeans_features import kmeans_train_test

        start = time.perf_counter()
        X_train, X_test = kmeans_train_test(train_images, test_images, k=ctx.options["kmeans_k"], seed=ctx.seed,
                                            device=ctx.device, progress=not ctx.quiet)
        return X_train, X_test, time.perf_counter() - start

    # --- protocols ---------------------------------------------------------------------------------
    def _probe(self, ctx, X_train, y_train, X_test, y_test, labels_per_class, grid, preprocess):
        from .protocol import evaluate

        o = ctx.options
        return evaluate(X_train, y_train, X_test, y_test, labels_per_class=labels_per_class, draws=o["draws"],
                        select_draws=o["select_draws"] or None, C_grid=grid, val_size=_val_size(o["val_size"]),
                        seed=ctx.seed, solver=o["solver"], ci95=o["ci95"], device=ctx.device,
                        preprocess=None if preprocess == "none" else preprocess,
                        fit_kwargs={"tol": o["tol"]})

    def _supervised(self, ctx, train_images, y_train, test_images, y_test, labels_per_class, threads):
        import numpy as np
        import torch

        from .protocol import balanced_draw, validation_split
        from .supervised import accuracy, train_classifier

        o = ctx.options
        rng = np.random.default_rng(ctx.seed)
        pool, val = validation_split(len(y_train), _val_size(o["val_size"]), rng)
        draws = 1 if labels_per_class is None else o["supervised_draws"]
        accuracies, seconds, kept = [], [], []
        probe_threads = torch.get_num_threads()
        if torch.device(ctx.device).type == "cpu":
            torch.set_num_threads(threads)
        try:
            for draw in range(draws):
                rows = pool if labels_per_class is None else balanced_draw(y_train, labels_per_class, rng, pool=pool)
                start = time.perf_counter()
                # the same validation images that choose the SVM's C choose the CNN's stopping step
                model, step = train_classifier(ctx.gan.config, train_images[rows], y_train[rows],
                                               num_classes=int(y_train.max()) + 1, steps=o["supervised_steps"],
                                               seed=ctx.seed + draw, device=ctx.device, val_images=train_images[val],
                                               val_labels=y_train[val], patience=o["supervised_patience"])
                seconds.append(time.perf_counter() - start)
                kept.append(step)
                accuracies.append(accuracy(model, test_images, y_test, device=ctx.device))
        finally:
            torch.set_num_threads(probe_threads)
        return accuracies, float(np.mean(seconds)), kept

    def _umap(self, ctx, X_test, y_test):
        from .embedding import umap_figure

        fig, n = umap_figure(X_test, y_test, points=ctx.options["umap_points"], seed=ctx.seed,
                             cache=ctx.cache)
        return Figure(f"UMAP of D features, {n} test images coloured by label", fig)


@hookimpl
def ganlab_register_evaluators(register):
    register(SvmProbe())
