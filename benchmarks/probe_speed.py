"""svm-probe speed (issue 12): the whole probe on 6,000 labelled images, ganlab's default solver vs liblinear.

    .venv/bin/python benchmarks/probe_speed.py [--checkpoint CKPT] [--paths auto,liblinear] [--device cpu]
        [--threads 1] [--converged-liblinear] [--profile] [--crossover]

Setup (the issue's): a 32x32 grey D with ngf = ndf = 32 (``--checkpoint``: a ganlab checkpoint of that
architecture, e.g. ``runs/probe-digits/last.pt``; without it a randomly initialised D, seed 1, which the
output states); 10,000 MNIST test images from ../shared/data/mnist-test split 6,000 train / 2,000 test
(a synthetic 10-class set of noisy class templates if the files are absent); the ``svm-probe`` evaluator
itself (``SvmProbe.run`` with a minimal context) with ``labels_per_class=10,50,all``, ``draws=5``,
baselines pixels, random-d and kmeans, no UMAP and no supervised CNN. Each path runs with a fresh
feature cache, so "whole svm-probe" includes D's features for both D's and the K-means features.

Per path it prints the whole svm-probe's wall time, each phase (features; fits at 10 and 50 per class and
with all labels, C selection included), and per row the accuracy, the solver(s) and the passes over X per
fit: torch counts objective+gradient evaluations (one pass = X W and G^T X), the kernel path 2 passes over
the gathered rows per batch of draws (Gram matrices, weights), liblinear reports iterations (its passes are
internal). Then the ratio liblinear / default and PASS/FAIL against the targets: whole default svm-probe
<= 60 s, ratio >= 10, every row's accuracy within 0.5 points of liblinear's.

``--converged-liblinear`` refits, for the accuracy check, the liblinear rows that stopped at liblinear's
1,000-iteration limit (the K-means features' label-scarce fits do) to convergence on the same draws at the
default path's C. ``--profile`` runs the default path once more under cProfile and prints where the time goes;
``--crossover`` times one C grid (8 values, warm-started where the solver can) per solver for a range of
row counts on the D features (the numbers behind ``solver="auto"``). It reports, it never fails.
"""
from __future__ import annotations

import argparse
import cProfile
import gzip
import os
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, cpu_model, load_average, matmul_gflops  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist-test"
TARGET_SECONDS, TARGET_RATIO, TARGET_POINTS = 60.0, 10.0, 0.5
NAMES = ("d", "pixels", "random-d", "kmeans")
MODES = ("10pc", "50pc", "all")
SETTINGS = {"labels_per_class": ["10", "50", "all"], "draws": 5, "baselines": ["pixels", "random-d", "kmeans"],
            "umap": False}


def mnist_or_synthetic() -> tuple[torch.Tensor, torch.Tensor, str]:
    """8,000 uint8 1 x 32 x 32 images and labels: MNIST test (zero-padded 28 -> 32) or a synthetic set."""
    images, labels = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
    if images.is_file() and labels.is_file():
        raw = np.frombuffer(gzip.open(images).read()[16:], dtype=np.uint8).reshape(-1, 28, 28)[:8000]
        y = np.frombuffer(gzip.open(labels).read()[8:], dtype=np.uint8)[:8000].astype(np.int64)
        x = np.zeros((len(raw), 1, 32, 32), dtype=np.uint8)
        x[:, 0, 2:30, 2:30] = raw
        return torch.from_numpy(x), torch.from_numpy(y), f"MNIST test images from {MNIST} (28x28 padded to 32x32)"
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 255, (10, 1, 32, 32))
    y = np.repeat(np.arange(10), 800)
    x = np.clip(templates[y] * 0.6 + rng.normal(0, 60, (8000, 1, 32, 32)), 0, 255).astype(np.uint8)
    return torch.from_numpy(x), torch.from_numpy(y), "synthetic: 10 random templates + noise (no MNIST files)"


def make_gan(checkpoint: str | None):
    import ganlab
    from ganlab import Discriminator, ModelConfig

    if checkpoint:
        gan = ganlab.load(checkpoint)
        return gan, f"D of {checkpoint} (ndf {gan.config.ndf}, {gan.config.image_size}x{gan.config.image_size})"
    config = ModelConfig(image_size=32, channels=1, nz=100, ngf=32, ndf=32)
    torch.manual_seed(1)
    D = Discriminator(config).eval()
    return SimpleNamespace(discriminator=D, config=config, path=Path("random-D-seed1.pt"), meta={}), \
        "randomly initialised D (seed 1, ndf 32, 32x32): not trained"


def context(gan, images, labels, options, cache_dir, device):
    from ganlab import Cache

    splits = {"train": (images[:6000], labels[:6000]), "test": (images[6000:8000], labels[6000:8000])}
    return SimpleNamespace(gan=gan, device=torch.device(device), seed=0, cache=Cache(Path(cache_dir)), options=options,
                           dataset="mnist", progress=None, quiet=True, heldout_split="test", train_split="train",
                           split=lambda name, limit=None: splits[name])


def run_path(solver: str, gan, images, labels, device: str, threads: int, profile: bool = False) -> dict:
    """One whole svm-probe run; returns wall time, phase times and per-row records."""
    from ganlab import Option
    from ganlab_plugins.probe import plugin, protocol

    probe = plugin.SvmProbe()
    defaults = {name: value.default if isinstance(value, Option) else value for name, value in probe.options.items()}
    options = {**defaults, **SETTINGS, "solver": solver, "threads": threads}
    rows, phases, counts = [], {}, {"torch": [], "kernel": [], "liblinear": []}
    real_evaluate, real_fit, real_sets = protocol.evaluate, protocol.fit_linear_svm, protocol.fit_sets

    def evaluate(*args, **kwargs):
        start = time.perf_counter()
        result = real_evaluate(*args, **kwargs)
        mode = "all" if kwargs.get("labels_per_class") is None else f"{kwargs['labels_per_class']}pc"
        name = NAMES[sum(r["mode"] == mode for r in rows)]
        limit = bool(counts["liblinear"]) and max(counts["liblinear"]) >= 1000   # liblinear's max_iter default
        rows.append({"name": name, "mode": mode, "seconds": time.perf_counter() - start, "acc": result.accuracy_mean,
                     "C": result.best_C, "solvers": "+".join(result.solvers), "passes": counts_flush(),
                     "at_limit": limit, "call": (args, kwargs) if limit else None})
        return result

    def fit_linear_svm(*args, **kwargs):
        out = real_fit(*args, **kwargs)
        counts[out.solver].append(out.n_evals_ if out.solver != "liblinear" else out.n_iter_)
        return out

    def fit_sets(*args, **kwargs):
        fits = real_sets(*args, **kwargs)
        counts["kernel"].extend(p.n_evals_ / p.extra_["batched"] for probes, *_ in fits for p in
                                list(probes.values())[:1])
        return fits

    def counts_flush():
        text = ", ".join(f"{k} {np.mean(v):.1f}" + (" it" if k == "liblinear" else "")
                         for k, v in counts.items() if v)
        for v in counts.values():
            v.clear()
        return text or "-"

    real_features = probe._features

    def timed(ctx, name, *a, **k):
        start = time.perf_counter()
        out = real_features(ctx, name, *a, **k)
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return out
    probe._features = timed
    protocol.evaluate, protocol.fit_linear_svm, protocol.fit_sets = evaluate, fit_linear_svm, fit_sets
    profiler = cProfile.Profile() if profile else None
    try:
        with tempfile.TemporaryDirectory(prefix="probe-speed-") as cache, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx = context(gan, images, labels, options, cache, device)
            start, cpu = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            probe.run(ctx)
            if profiler:
                profiler.disable()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        protocol.evaluate, protocol.fit_linear_svm, protocol.fit_sets = real_evaluate, real_fit, real_sets
    for mode in MODES:
        phases[f"fits {mode}"] = sum(r["seconds"] for r in rows if r["mode"] == mode)
    return {"wall": wall, "cpu": cpu, "phases": phases, "rows": rows, "profile": profiler}


def converged_check(a: dict, b: dict, worst: float) -> float:
    """Rows where liblinear stopped at its 1,000-iteration limit: refit liblinear to convergence
    (max_iter 100,000) on the same draws at the C the default path chose, and compare with that instead."""
    from ganlab_plugins.probe import protocol

    print("\nliblinear rows that stopped at max_iter=1000, refit with max_iter=100,000 at the default path's C:")
    diffs = []
    for x, y in zip(a["rows"], b["rows"]):
        if not y["at_limit"]:
            diffs.append(abs(x["acc"] - y["acc"]) * 100)
            continue
        call_args, call_kwargs = y["call"]
        kw = {**call_kwargs, "C_grid": (x["C"], x["C"]), "solver": "liblinear",
              "fit_kwargs": {**(call_kwargs.get("fit_kwargs") or {}), "max_iter": 100_000}}
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = protocol.evaluate(*call_args, **kw)
        diffs.append(abs(x["acc"] - ref.accuracy_mean) * 100)
        print(f"  {x['name']:<9} {x['mode']:<6} default {100 * x['acc']:.2f}, liblinear at max_iter 1000 "
              f"{100 * y['acc']:.2f}, converged liblinear {100 * ref.accuracy_mean:.2f} "
              f"({time.perf_counter() - start:.0f} s)")
    print(f"  largest difference against converged liblinear: {max(diffs):.2f} points (was {worst:.2f})")
    return max(diffs)


def print_profile(profiler) -> None:
    stats = pstats.Stats(profiler)
    wanted = {"discriminator_features": "D features (2 D's, 8,000 images each)", "fit": "K-means: fit",
              "transform": "K-means: transform (8,000 images)", "fit_sets": "kernel path: all label-scarce fits",
              "gram": "  Gram matrices", "newton_batched": "  Newton iterations", "_solve_active": "    factorisations",
              "_val_errors": "  validation scores", "fit_torch": "torch path: full-label fits",
              "__call__": "  passes over X (objective + gradient)", "build": "  preconditioner builds",
              "shared_basis": "  shared basis: randomised SVD and X U (one pass)",
              "fit_liblinear": "liblinear", "score": "test/validation scoring (LinearProbe.score)"}
    found = {}
    for (path, _, func), (_, _, _, cum, _) in stats.stats.items():
        key = func if func in wanted else None
        if key == "fit" and "kmeans_features" not in path or key == "transform" and "kmeans_features" not in path:
            continue
        if key == "__call__" and "torch_solver" not in path or key == "build" and "preconditioner" not in path:
            continue
        if key:
            found[key] = found.get(key, 0.0) + cum
    total = max(v for (_, _, _, v, _) in stats.stats.values())
    print(f"\nProfile of the default path (cProfile, cumulative seconds; total {total:.1f} s):")
    for key, label in wanted.items():
        if key in found:
            print(f"  {label:<48} {found[key]:7.2f} s  {100 * found[key] / total:5.1f} %")


def crossover(gan, images, labels, device: str) -> None:
    """Seconds for one 8-value C grid per solver at several row counts of the D features (all dims)."""
    from ganlab import discriminator_features
    from ganlab_plugins.probe.kernel import fit_sets
    from ganlab_plugins.probe.preconditioner import shared_basis
    from ganlab_plugins.probe.settings import DEFAULT_C_GRID
    from ganlab_plugins.probe.solver import fit_linear_svm, resolve_solver

    X = discriminator_features(gan.discriminator, images[:6000])
    y = labels[:6000].numpy()
    print(f"\nCrossover: one C grid ({len(DEFAULT_C_GRID)} values) on n rows x {X.shape[1]} D features, seconds")
    print(f"{'rows':>6} {'kernel':>8} {'torch':>8} {'liblinear':>10}   auto picks")
    for n in (500, 1000, 2000, 3000, 4800):
        rows = np.sort(np.random.default_rng(n).choice(6000, n, replace=False))
        times = {}
        start = time.perf_counter()
        fit_sets(X, y, [rows], DEFAULT_C_GRID, classes=np.unique(y), device=device)
        times["kernel"] = time.perf_counter() - start
        start = time.perf_counter()
        basis, previous = shared_basis(X, device=device), None
        for C in DEFAULT_C_GRID:
            previous = fit_linear_svm(X[rows], y[rows], C, solver="torch", init=previous, tol=1e-4,
                                      precondition=basis.subset(rows), device=device)
        times["torch"] = time.perf_counter() - start
        if n <= 2000 or os.environ.get("CROSSOVER_LIBLINEAR"):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for C in DEFAULT_C_GRID:
                    fit_linear_svm(X[rows], y[rows], C, solver="liblinear", tol=1e-4)
            times["liblinear"] = time.perf_counter() - start
        pick = resolve_solver("auto", n * X.shape[1] * 4, shape=(n, X.shape[1]))
        print(f"{n:>6} {times['kernel']:8.1f} {times['torch']:8.1f} {times.get('liblinear', float('nan')):10.1f}   "
              f"{pick} (fastest measured: {min(times, key=times.get)})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="ganlab checkpoint with a 32x32 grey D (default: a random D)")
    parser.add_argument("--paths", default="auto,liblinear", help="solvers to run, in order (first = ganlab's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="svm-probe.threads for every path (0: its rule)")
    parser.add_argument("--profile", action="store_true", help="profile the default path once more")
    parser.add_argument("--crossover", action="store_true", help="time each solver on a C grid by row count")
    parser.add_argument("--converged-liblinear", action="store_true",
                        help="refit liblinear rows that hit max_iter to convergence for the accuracy check")
    args = parser.parse_args()
    images, labels, source = mnist_or_synthetic()
    gan, what = make_gan(args.checkpoint)
    gan.discriminator.to(args.device)
    print(f"machine: {cpu_model()}, {cpu_count()} cores, torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(f"load average before: {load_average()}; fp32 matmul {matmul_gflops():.1f} GFLOP/s (torch's threads)")
    print(f"data: {source}; 6,000 train / 2,000 test, 10 classes\nD: {what}\nsvm-probe settings: {SETTINGS}, "
          f"threads {args.threads}")
    results = {}
    for solver in filter(None, args.paths.split(",")):
        results[solver] = run_path(solver, gan, images, labels, args.device, args.threads)
        r = results[solver]
        print(f"\n[{solver}] whole svm-probe {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU; load {load_average()}")
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items()))
        print(f"  {'features':<9} {'labels':<6} {'acc %':>7} {'C':>7} {'fit s':>7}  solver: passes over X per fit")
        for row in r["rows"]:
            print(f"  {row['name']:<9} {row['mode']:<6} {100 * row['acc']:7.2f} {row['C']:7.0e} {row['seconds']:7.2f}"
                  f"  {row['solvers']}: {row['passes']}")
    base, ref = args.paths.split(",")[0], "liblinear"
    if ref in results and base != ref:
        a, b = results[base], results[ref]
        head = f"{'whole svm-probe':>16} {'fits, 10/class':>15} {'fits, 50/class':>15} {'fits, all':>10}"
        print(f"\n{'solver':<10} {head}")
        for name, r in ((base, a), (ref, b)):
            p = r["phases"]
            print(f"{name:<10} {r['wall']:15.1f}s {p['fits 10pc']:14.1f}s {p['fits 50pc']:14.1f}s "
                  f"{p['fits all']:9.1f}s")
        ratio = b["wall"] / a["wall"]
        worst = max(abs(x["acc"] - y["acc"]) * 100 for x, y in zip(a["rows"], b["rows"]))
        if args.converged_liblinear:
            worst = converged_check(a, b, worst)
        print(f"ratio liblinear / {base}: whole {ratio:.1f}x; fits "
              + ", ".join(f"{m} {b['phases'][f'fits {m}'] / max(a['phases'][f'fits {m}'], 1e-9):.1f}x" for m in MODES))
        verdict = "PASS" if a["wall"] <= TARGET_SECONDS else "FAIL"
        print(f"{base} whole svm-probe {a['wall']:.1f} s <= {TARGET_SECONDS:.0f} s: {verdict}")
        print(f"ratio {ratio:.1f}x >= {TARGET_RATIO:.0f}x: {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
        print(f"largest accuracy difference {worst:.2f} points <= {TARGET_POINTS}: "
              f"{'PASS' if worst <= TARGET_POINTS else 'FAIL'}")
    if args.profile and args.paths:
        print_profile(run_path(args.paths.split(",")[0], gan, images, labels, args.device, args.threads,
                               profile=True)["profile"])
    if args.crossover:
        before = torch.get_num_threads()
        torch.set_num_threads(args.threads or before)
        crossover(gan, images, labels, args.device)
        torch.set_num_threads(before)
    print(f"\nload average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
