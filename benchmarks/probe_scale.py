"""Linear-probe scale: time and peak RSS of the SVM solvers at CIFAR-10-protocol sizes, plus D-feature throughput.

    .venv/bin/python benchmarks/probe_scale.py --quick          # 10,000 x 7,168, torch solver only, ~1.5 min
    .venv/bin/python benchmarks/probe_scale.py                  # 50,000 x 7,168 and 50,000 x 28,672, ~12 min
    .venv/bin/python benchmarks/probe_scale.py --with-liblinear # + liblinear where it fits
                                                                # (50,000 x 7,168: 12 GB, >15 min)

The issue: the CIFAR-10 protocol means 50,000 x 28,672 features (5.7 GB as float32); liblinear copies
its dense input and will not fit comfortably, so the torch solver (full-batch L-BFGS on LinearSVC's
squared-hinge objective, reading X in row chunks) must finish that size within 8 GB peak RSS.

Data: synthetic, learnable 10-class features written once (in row chunks, so generation stays
low-memory) into .npy files that the fits open as read-only np.memmap: v = m_y + z R + e with class
means m_k = 1 + (separation / sqrt(D)) u_k (u_k ~ N(0, I), so class distances do not grow with D),
a shared rank-16 nuisance z R (unit variance per feature) and N(0, 1) noise e, then x = LeakyReLU_0.2(v)
(D's activation; about 3/4 of the values are positive, as max-pooled D features mostly are). A
test split of min(10,000, N/5) rows is drawn the same way.

Fits: every fit runs in a fresh child process, so peak RSS is per solver. The child opens the memmaps,
fits a per-feature Standardizer on the training rows (protocol.Standardizer, one chunked pass; the fit
sees its lazy view, never a standardised copy; --preprocess none fits the raw memmap), fits one C
(default 1e-3) and scores the test split. Peak RSS is the child's VmHWM from /proc/self/status (the
kernel's high-water mark of its resident set), read right after the fit ("fit peak", the 8 GB
criterion) and again after test scoring (the training memmap is closed before scoring). Not
getrusage(RUSAGE_SELF).ru_maxrss: on Linux a child's ru_maxrss starts at the *parent's* peak (the
kernel carries the pre-exec address space's high-water mark across fork + exec), so it would report
the parent's extraction benchmark instead of the fit; ru_maxrss is only the fallback where there is
no /proc. The high-water mark counts every resident page the process maps, including
the page-cache pages of the memmap it has read (RssFile): a full pass over a 5.7 GB memmap adds up to
5.7 GB of RSS even though those pages are clean and reclaimable. To separate that from the solver's
own memory, two baseline children run per size: "open" (imports torch/numpy/sklearn and the solver,
opens the memmap) and "read" (the same plus two full chunked passes over X, i.e. the memmap's pages).
The solver's overhead is printed as the difference and ratio to each, and the parent also polls
/proc/<pid>/status for the peak anonymous (private) RSS, RssAnon.

liblinear (sklearn LinearSVC) materialises the standardised view as float32 (4 B/value), converts it
to float64 (8 B/value) and hands liblinear its own copy of the rows (about 16 B/value); it runs only
with --with-liblinear, and a size whose estimate (28 B/value + the memmap's pages + 0.5 GB) exceeds
80% of MemAvailable is skipped with the reason unless --force-liblinear. Each fit child is killed after
--timeout seconds ("timed out after N s").

Feature extraction: features.extract on random uint8 32x32 images for the dcgan32 (ndf 64, 7,168
features) and imagenet32 (28,672 features) discriminators, as images/s and achieved GFLOP/s against a
fp32 2048^3 matmul measured in the same run (best of 5 reps before and after). FLOP counting rule:
forward only, conv layers only, 2 FLOPs per multiply-add; per Conv2d MACs = H_out x W_out x C_out x
(C_in / groups) x kh x kw, with H_out = (H + 2 pad - kh) // stride + 1 computed analytically from D's
layers, every conv of D included (its final 4x4 logit conv runs in extract too); BatchNorm, LeakyReLU,
max-pooling and the uint8 -> [-1, 1] conversion are not counted.

Exit status is 0 whether or not the criterion is met: this script reports, tests do not time.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, cpu_model, load_average  # noqa: E402

GB = 1e9  # decimal GB throughout, as in "5.7 GB as float32"
RSS_LIMIT_BYTES = 8 * GB
CRITERION_SIZE = (50_000, 28_672)
DEFAULT_SIZES = "50000x7168,50000x28672"
QUICK_SIZES = "10000x7168"
NUISANCE_RANK = 16
DATA_VERSION = 1  # bump when the generator changes so cached files are regenerated


# ----------------------------------------------------------------------------- small helpers

def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            parts = value.split()
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / RssAnon / RssFile of a live process, in bytes (empty once it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def maxrss_bytes() -> int:
    """This process's peak RSS: VmHWM where /proc exists (see the module doc for why not ru_maxrss)."""
    hwm = proc_status(os.getpid()).get("VmHWM")
    if hwm:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def fmt_gb(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / GB:.2f} GB"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        n, _, d = item.partition("x")
        sizes.append((int(n.replace("_", "")), int(d.replace("_", ""))))
    if not sizes:
        raise ValueError("no sizes")
    return sizes


def test_rows(n: int) -> int:
    return max(100, min(10_000, n // 5))


# ----------------------------------------------------------------------------- synthetic features

def data_paths(workdir: Path, n: int, d: int, seed: int) -> dict[str, Path]:
    stem = f"probe_{n}x{d}_seed{seed}"
    return {"train": workdir / f"{stem}_train.npy", "test": workdir / f"{stem}_test.npy",
            "labels": workdir / f"{stem}_labels.npz", "meta": workdir / f"{stem}.json"}


def _write_split(path: Path, labels, means, nuisance, seed: int, split: int, chunk_rows: int) -> None:
    import numpy as np

    n, d = labels.size, means.shape[1]
    tmp = path.with_name(path.name + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        rng = np.random.default_rng([seed, split, a])
        v = rng.standard_normal((b - a, d), dtype=np.float32)          # noise e
        v += means[labels[a:b]]                                        # class mean m_y
        v += rng.standard_normal((b - a, NUISANCE_RANK), dtype=np.float32) @ nuisance  # shared z R
        np.maximum(v, 0.2 * v, out=v)                                  # LeakyReLU(0.2)
        out[a:b] = v
    out.flush()
    del out
    tmp.replace(path)


def make_data(workdir: Path, n: int, d: int, *, classes: int, separation: float,
              seed: int) -> tuple[dict, float | None]:
    """Write (or reuse) the train/test memmaps and labels; returns (paths, seconds spent or None if reused)."""
    import numpy as np

    paths = data_paths(workdir, n, d, seed)
    n_test = test_rows(n)
    meta = {"version": DATA_VERSION, "n": n, "d": d, "n_test": n_test, "classes": classes,
            "separation": separation, "seed": seed, "nuisance_rank": NUISANCE_RANK}
    if all(p.exists() for p in paths.values()):
        try:
            if json.loads(paths["meta"].read_text()) == meta:
                return paths, None
        except (OSError, ValueError):
            pass
    paths["meta"].unlink(missing_ok=True)  # written last: its presence marks a complete set
    start = time.perf_counter()
    rng = np.random.default_rng([seed, d])
    means = (1.0 + separation / np.sqrt(d) * rng.standard_normal((classes, d))).astype(np.float32)
    nuisance = (rng.standard_normal((NUISANCE_RANK, d)) / np.sqrt(NUISANCE_RANK)).astype(np.float32)
    y_train = rng.permutation(np.arange(n) % classes).astype(np.int64)
    y_test = rng.permutation(np.arange(n_test) % classes).astype(np.int64)
    chunk_rows = max(1, (32 << 20) // (4 * d))  # ~32 MiB of float32 per chunk (+ a few temporaries)
    _write_split(paths["train"], y_train, means, nuisance, seed, 0, chunk_rows)
    _write_split(paths["test"], y_test, means, nuisance, seed, 1, chunk_rows)
    np.savez(paths["labels"], train=y_train, test=y_test)
    paths["meta"].write_text(json.dumps(meta))
    return paths, time.perf_counter() - start


# ----------------------------------------------------------------------------- the child process

def child_main(spec: dict) -> None:
    """One measurement in a fresh process; prints 'RESULT {json}' on stdout."""
    t0 = time.perf_counter()
    import warnings

    # torch.from_numpy on a read-only memmap warns once per chunk; nothing writes into those views
    warnings.filterwarnings("ignore", message=".*non-writable.*")
    import numpy as np
    import sklearn.svm  # noqa: F401  (the baseline imports what a liblinear fit imports)
    import torch

    from ganlab import block_rows
    from ganlab_plugins.probe import protocol, solver

    torch.set_num_threads(spec["threads"])
    res: dict = {"mode": spec["mode"], "import_s": time.perf_counter() - t0}
    X = np.load(spec["train"], mmap_mode="r")
    labels = np.load(spec["labels"])
    y_train, y_test = labels["train"], labels["test"]
    res["rss_open"] = maxrss_bytes()
    mode = spec["mode"]

    if mode == "read":  # two full chunked passes over the memmap, the way the solver reads it
        rows = block_rows(X.shape[1])
        for key in ("pass1_s", "pass2_s"):
            start = time.perf_counter()
            total = 0.0
            for a in range(0, X.shape[0], rows):
                total += float(torch.from_numpy(np.asarray(X[a:a + rows])).sum())
            res[key] = time.perf_counter() - start
        res["checksum"] = total
    elif mode in ("torch", "liblinear"):
        X_test = np.load(spec["test"], mmap_mode="r")
        start = time.perf_counter()
        if spec["preprocess"] == "standardize":
            st = protocol.Standardizer().fit(X)
            Xv, Xtv = st.view(X), st.view(X_test)
        else:
            Xv, Xtv = X, X_test
        res["standardize_s"] = time.perf_counter() - start
        res["rss_after_standardize"] = maxrss_bytes()
        kwargs = {"max_iter": spec["max_iter"], "tol": spec["tol"]}
        if mode == "torch":  # threads: torch's setting above
            kwargs.update(device="cpu")
        start = time.perf_counter()
        probe = solver.fit_linear_svm(Xv, y_train, spec["C"], solver=mode, **kwargs)
        res["fit_s"] = time.perf_counter() - start
        res["rss_fit"] = maxrss_bytes()
        res.update(n_iter=int(probe.n_iter_), n_evals=probe.n_evals_, converged=bool(probe.converged_),
                   grad_rel=probe.extra_.get("grad_rel"),
                   objective=None if probe.objective_ is None else float(np.sum(probe.objective_)))
        del Xv, X  # close the training memmap before scoring, so scoring's pages do not stack on the fit's
        gc.collect()
        start = time.perf_counter()
        res["test_acc"] = probe.score(Xtv, y_test)
        res["score_s"] = time.perf_counter() - start
    res["rss_end"] = maxrss_bytes()
    print("RESULT " + json.dumps(res), flush=True)


def run_child(spec: dict, timeout: float | None) -> dict:
    """Run child_main(spec) in a fresh interpreter, polling its /proc status; never raises on failure."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    peak = {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    out = err = ""
    status = "ok"
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                for key, value in proc_status(proc.pid).items():
                    if key in peak:
                        peak[key] = max(peak[key], value)
                if timeout is not None and time.perf_counter() - start > timeout:
                    proc.kill()
                    out, err = proc.communicate()
                    status = "timeout"
                    break
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - start
    result: dict = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if status == "ok" and (proc.returncode != 0 or not result):
        status = f"failed (exit {proc.returncode})"
        tail = "\n".join(err.strip().splitlines()[-8:])
        print(f"    child {spec['mode']} failed, exit {proc.returncode}; stderr tail:\n{tail}")
    result.update(status=status, wall_s=wall, poll_peak_anon=peak["RssAnon"] or None,
                  poll_peak_file=peak["RssFile"] or None, poll_hwm=peak["VmHWM"] or None)
    if status == "timeout":
        result["timeout_s"] = timeout
    return result


# ----------------------------------------------------------------------------- feature extraction

def analytic_conv_flops(discriminator, image_size: int) -> float:
    """Forward FLOPs per image of D's convolutions: 2 x MACs, MACs = Hout Wout Cout (Cin/groups) kh kw."""
    from torch import nn

    side, total = image_size, 0.0
    for module in discriminator.main:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            (sh, _), (ph, _) = module.stride, module.padding
            side = (side + 2 * ph - kh) // sh + 1
            macs = side * side * module.out_channels * (module.in_channels // module.groups) * kh * kw
            total += 2.0 * macs
    return total


def _common(name: str):
    """``benchmarks/common.py``'s ``name``, or None where that module (or name) is missing."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        import common
    except ImportError:
        return None
    return getattr(common, name, None)


def matmul_gflops_best() -> float:
    """Best-of-5 GFLOP/s of a 2048^3 fp32 matmul (common.matmul_gflops, or the same measurement here)."""
    matmul_gflops = _common("matmul_gflops")
    if matmul_gflops is not None:
        return matmul_gflops(2048, repeats=5)
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def extraction_bench(images_n: int, batch_size: int, reps: int, seed: int) -> list[dict]:
    import torch

    from ganlab import PRESETS, Discriminator, feature_dim
    from ganlab import discriminator_features as extract

    torch.manual_seed(seed)
    rows = []
    for name in ("dcgan32", "imagenet32"):
        cfg = PRESETS[name]
        D = Discriminator(cfg).eval()
        flops = analytic_conv_flops(D, cfg.image_size)
        conv_flops = _common("conv_flops")  # cross-check against the hook-based counter, where present
        example = torch.zeros(2, cfg.channels, cfg.image_size, cfg.image_size)
        check = conv_flops(D, example).total if conv_flops is not None else None
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (images_n, cfg.channels, cfg.image_size, cfg.image_size),
                               dtype=torch.uint8, generator=g)
        extract(D, images[:batch_size], device="cpu", batch_size=batch_size)  # warm-up (untimed)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            feats = extract(D, images, device="cpu", batch_size=batch_size)
            best = min(best, time.perf_counter() - start)
        rows.append({"name": name, "ndf": cfg.ndf, "kernel": cfg.kernel_size, "dim": feature_dim(D),
                     "shape": tuple(feats.shape), "flops": flops, "check": check, "seconds": best,
                     "images": images_n, "img_s": images_n / best, "gflops": images_n * flops / best / 1e9})
        del feats, images, D
        gc.collect()
    return rows


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sizes", default=None,
                   help=f"comma-separated NxD (default {DEFAULT_SIZES}; --quick: {QUICK_SIZES})")
    p.add_argument("--quick", action="store_true",
                   help=f"scaled-down run: sizes {QUICK_SIZES}, 512 extraction images")
    p.add_argument("--workdir", default=None,
                   help="folder for the feature memmaps; reused across runs and kept (default: a temporary folder, "
                        "deleted at the end)")
    p.add_argument("--keep", action="store_true", help="keep the generated files (default: delete a temporary workdir)")
    p.add_argument("--cleanup", action="store_true", help="delete the generated files even in a given --workdir")
    p.add_argument("--C", type=float, default=1e-3, help="SVM regularisation constant (default 1e-3)")
    p.add_argument("--preprocess", choices=("standardize", "none"), default="standardize",
                   help="standardise with protocol.Standardizer (default, as the protocol does) or fit raw features")
    p.add_argument("--max-iter", type=int, default=15,
                   help="torch: L-BFGS iterations (default 15, which keeps the default run under ~15 min on a loaded "
                        "2-core machine; the RSS peak is reached in the first pass, so the cap does not change it); "
                        "liblinear: LinearSVC max_iter is 1000 unless --liblinear-max-iter")
    p.add_argument("--liblinear-max-iter", type=int, default=1000)
    p.add_argument("--tol", type=float, default=None, help="solver tolerance (default: the solver's own)")
    p.add_argument("--with-liblinear", action="store_true", help="also fit liblinear where it fits in RAM")
    p.add_argument("--force-liblinear", action="store_true",
                   help="fit liblinear even where its estimated memory exceeds 80%% of MemAvailable "
                        "(implies --with-liblinear)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds before a fit child is killed (default 1200)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable core count)")
    p.add_argument("--separation", type=float, default=4.5, help="class-mean distance scale of the synthetic data")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--extract-images", type=int, default=None,
                   help="images for the extraction benchmark (default 2048; --quick 512)")
    p.add_argument("--extract-batch", type=int, default=256)
    p.add_argument("--extract-reps", type=int, default=None, help="timed extraction reps, best reported (default 1)")
    p.add_argument("--skip-extract", action="store_true")
    p.add_argument("--skip-fits", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child is None:
        args.sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
        args.extract_images = args.extract_images or (512 if args.quick else 2048)
        args.extract_reps = args.extract_reps or 1
        args.threads = args.threads or cpu_count()
        args.with_liblinear = args.with_liblinear or args.force_liblinear
        if args.max_iter < 1 or args.timeout <= 0:
            p.error("--max-iter must be >= 1 and --timeout > 0")
    return args


def liblinear_estimate(n: int, d: int) -> float:
    """Bytes a liblinear fit needs: float32 copy + float64 copy + liblinear's rows + memmap pages + runtime."""
    return n * d * (4 + 8 + 16) + n * d * 4 + 0.5 * GB


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._child is not None:
        child_main(json.loads(args._child))
        return 0

    import torch
    torch.set_num_threads(args.threads)
    mem = meminfo()
    own_tmp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="ganlab-probe-scale-")) if own_tmp else Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"probe_scale  {time.strftime('%Y-%m-%d %H:%M:%S')}  {platform.node()}")
    print(f"machine: {cpu_model()}, {cpu_count()} cores usable, torch {torch.__version__} ({args.threads} threads), "
          f"python {platform.python_version()}; RAM {fmt_gb(mem.get('MemTotal'))} "
          f"(available {fmt_gb(mem.get('MemAvailable'))}); load average {load_average()}")
    print(f"workdir: {workdir} ({'temporary' if own_tmp else 'given'}; "
          f"{shutil.disk_usage(workdir).free / GB:.0f} GB free)")

    # ---------------------------------------------------------------- feature extraction vs matmul
    extraction, matmul = [], []
    if not args.skip_extract:
        matmul.append(matmul_gflops_best())
        print(f"fp32 matmul 2048^3: {matmul[-1]:.1f} GFLOP/s (best of 5)")
        extraction = extraction_bench(args.extract_images, args.extract_batch, args.extract_reps, args.seed)
        matmul.append(matmul_gflops_best())
        print(f"fp32 matmul 2048^3 after extraction: {matmul[-1]:.1f} GFLOP/s; best {max(matmul):.1f}")

    # ---------------------------------------------------------------- solver fits
    spec_common = {"threads": args.threads, "C": args.C, "preprocess": args.preprocess, "tol": args.tol}
    results: dict[tuple[int, int], dict] = {}
    generated: list[Path] = []
    try:
        for n, d in ([] if args.skip_fits else args.sizes):
            print(f"\n== {n} x {d} ({n * d * 4 / GB:.2f} GB float32; test {test_rows(n)} rows) ==")
            paths, gen_s = make_data(workdir, n, d, classes=args.classes, separation=args.separation, seed=args.seed)
            generated += list(paths.values())
            total_bytes = (n + test_rows(n)) * d * 4
            if gen_s is None:
                print(f"  data: reusing {paths['train'].name}")
            else:
                print(f"  data: generated in {gen_s:.1f} s ({total_bytes / GB / gen_s:.2f} GB/s incl. test split)")
            spec = dict(spec_common, train=str(paths["train"]), test=str(paths["test"]), labels=str(paths["labels"]))
            row: dict = {}
            for mode in ("open", "read"):
                row[mode] = r = run_child(dict(spec, mode=mode), None)
                extra = (f", pass over X {r.get('pass1_s', float('nan')):.2f} s then "
                         f"{r.get('pass2_s', float('nan')):.2f} s" if mode == "read" else "")
                print(f"  baseline {mode:<4}: peak RSS {fmt_gb(r.get('rss_end'))}{extra}")
            row["torch"] = r = run_child(dict(spec, mode="torch", max_iter=args.max_iter), args.timeout)
            report_fit("torch", r, args.timeout)
            est = liblinear_estimate(n, d)
            avail = meminfo().get("MemAvailable", 0)
            if not args.with_liblinear:
                row["liblinear"] = {"status": "skipped: not requested (--with-liblinear)"}
            elif est > 0.8 * avail and not args.force_liblinear:
                row["liblinear"] = {"status": f"skipped: needs ~{est / GB:.1f} GB (dense float32 + float64 copies + "
                                              f"liblinear's rows + memmap pages) > 80% of {avail / GB:.1f} GB "
                                              f"available "
                                              f"(--force-liblinear)"}
            else:
                row["liblinear"] = r = run_child(dict(spec, mode="liblinear", max_iter=args.liblinear_max_iter),
                                                 args.timeout)
                report_fit("liblinear", r, args.timeout)
            if not row["liblinear"].get("wall_s"):
                print(f"  liblinear: {row['liblinear']['status']}")
            results[(n, d)] = row
    finally:
        if own_tmp and not args.keep or args.cleanup:
            removed = sum(p.stat().st_size for p in generated if p.exists())
            for p in generated:
                p.unlink(missing_ok=True)
            if own_tmp:
                shutil.rmtree(workdir, ignore_errors=True)
            print(f"\ncleanup: removed {removed / GB:.2f} GB of generated files")
        else:
            print(f"\nkept generated files in {workdir}")

    print_summary(args, extraction, matmul, results)
    return 0


def report_fit(name: str, r: dict, timeout: float) -> None:
    if r["status"] == "timeout":
        print(f"  {name}: timed out after {timeout:.0f} s (peak RSS seen {fmt_gb(r.get('poll_hwm'))})")
        return
    if r["status"] != "ok":
        print(f"  {name}: {r['status']}")
        return
    passes = r.get("n_evals")
    per_pass = f", {r['fit_s'] / passes:.2f} s/pass over {passes} passes" if passes else ""
    grad = f", final rel. gradient {r['grad_rel']:.1e}" if r.get("grad_rel") is not None else ""
    print(f"  {name}: fit {r['fit_s']:.1f} s ({r['n_iter']} iterations{per_pass}), "
          f"{'converged' if r['converged'] else 'NOT converged (iteration cap)'}{grad}; "
          f"objective {r['objective']:.6g}; standardize {r['standardize_s']:.1f} s; "
          f"test accuracy {100 * r['test_acc']:.2f}% (scoring {r['score_s']:.1f} s); "
          f"peak RSS fit {fmt_gb(r['rss_fit'])}, after scoring {fmt_gb(r['rss_end'])}, "
          f"peak RssAnon (polled) {fmt_gb(r.get('poll_peak_anon'))}")


def print_summary(args, extraction: list[dict], matmul: list[float], results: dict) -> None:
    print("\n" + "=" * 100)
    print("SUMMARY")
    if extraction:
        best = max(matmul)
        print(f"\nfeature extraction (features.extract, {args.extract_images} random uint8 32x32 images, batch "
              f"{args.extract_batch}, best of {args.extract_reps}; {args.threads} threads) vs fp32 matmul "
              f"{best:.1f} GFLOP/s (best of {len(matmul)} probes in this run):")
        print("FLOPs: forward only, every Conv2d of D, 2 x MACs, MACs = Hout x Wout x Cout x Cin/groups x kh x kw "
              "(analytic); BatchNorm, LeakyReLU, max-pool, uint8 conversion not counted.")
        print(f"  {'D':<11} {'ndf':>4} {'k':>2} {'features':>9} {'MFLOP/img':>10} {'img/s':>9} {'GFLOP/s':>8} "
              f"{'% matmul':>9}")
        for e in extraction:
            check = "" if e["check"] is None else (
                "  (= common.conv_flops)" if abs(e["check"] - e["flops"]) <= 1e-6 * e["flops"]
                else f"  (common.conv_flops says {e['check'] / 1e6:.2f} M)")
            print(f"  {e['name']:<11} {e['ndf']:>4} {e['kernel']:>2} {e['dim']:>9} {e['flops'] / 1e6:>10.2f} "
                  f"{e['img_s']:>9.1f} {e['gflops']:>8.2f} {100 * e['gflops'] / best:>8.1f}%{check}")
    if results:
        prep = "standardised (protocol.Standardizer view)" if args.preprocess == "standardize" else "raw"
        print(f"\nsolver fits: C={args.C:g} on {prep} features, {args.classes} classes, "
              f"torch max_iter {args.max_iter}, "
              f"each fit in a fresh process; RSS = the child's VmHWM (includes the memmap's page-cache pages)")
        head = (f"  {'N x D':<13} {'solver':<9} {'fit s':>7} {'iters':>5} {'passes':>6} {'s/pass':>6} {'conv':>4} "
                f"{'rel grad':>8} {'test acc':>8} {'peak fit':>8} {'- read':>7} {'/ open':>6} {'/ read':>6} "
                f"{'anon pk':>7}")
        print(head)
        for (n, d), row in results.items():
            open_rss = row["open"].get("rss_end")
            read_rss = row["read"].get("rss_end")
            print(f"  {f'{n}x{d}':<13} {'(open)':<9} {'':>7} {'':>5} {'':>6} {'':>6} {'':>4} {'':>8} {'':>8} "
                  f"{fmt_gb(open_rss)[:-3]:>8}  (baseline: imports + open memmap)")
            rp = row["read"].get("pass2_s")
            print(f"  {'':<13} {'(read)':<9} {'':>7} {'':>5} {'':>6} {rp if rp is None else f'{rp:.2f}':>6} {'':>4} "
                  f"{'':>8} {'':>8} {fmt_gb(read_rss)[:-3]:>8}  (baseline: + full passes over X)")
            for solver_name in ("torch", "liblinear"):
                r = row.get(solver_name, {})
                if r.get("status") != "ok":
                    why = r.get("status", "n/a")
                    if why == "timeout":
                        why = f"timed out after {r['timeout_s']:.0f} s (peak seen {fmt_gb(r.get('poll_hwm'))})"
                    print(f"  {'':<13} {solver_name:<9} {why}")
                    continue
                passes = r.get("n_evals")
                per_pass = f"{r['fit_s'] / passes:.2f}" if passes else "-"
                grad = f"{r['grad_rel']:.1e}" if r.get("grad_rel") is not None else "-"
                peak = r["rss_fit"]
                print(f"  {'':<13} {solver_name:<9} {r['fit_s']:>7.1f} {r['n_iter']:>5} {passes or '-':>6} "
                      f"{per_pass:>6} {'yes' if r['converged'] else 'no':>4} {grad:>8} {100 * r['test_acc']:>7.2f}% "
                      f"{peak / GB:>8.2f} "
                      f"{(peak - read_rss) / GB if read_rss else float('nan'):>+7.2f} "
                      f"{peak / open_rss if open_rss else float('nan'):>6.2f} "
                      f"{peak / read_rss if read_rss else float('nan'):>6.2f} "
                      f"{(r.get('poll_peak_anon') or float('nan')) / GB:>7.2f}")
        print("  (GB; '- read' = solver peak minus the read baseline = the solver's own memory; '/ open', '/ read' = "
              "ratios; anon pk = polled peak RssAnon, private memory only; s/pass = fit seconds / passes over X; "
              "rel grad = torch's final max|grad| / max|grad at 0|, tol 1e-5)")

    row = results.get(CRITERION_SIZE)
    label = f"torch solver peak RSS < {RSS_LIMIT_BYTES / GB:.0f} GB at {CRITERION_SIZE[0]:,} x {CRITERION_SIZE[1]:,}"
    if row is None:
        print(f"\n{label}: NOT MEASURED (size not in --sizes)")
    else:
        r = row["torch"]
        if r.get("status") != "ok":
            print(f"\n{label}: FAIL ({r.get('status')})")
        else:
            verdict = "PASS" if r["rss_fit"] < RSS_LIMIT_BYTES else "FAIL"
            print(f"\n{label}: {verdict} (fit peak {fmt_gb(r['rss_fit'])}, "
                  f"{r['rss_fit'] / RSS_LIMIT_BYTES:.0%} of the limit; after test scoring {fmt_gb(r['rss_end'])}; "
                  f"{'converged' if r['converged'] else f'stopped at the {args.max_iter}-iteration cap'})")
            base_open, base_read = row["open"].get("rss_end"), row["read"].get("rss_end")
            if base_open and base_read:
                print(f"  = {fmt_gb(base_open)} imports + {fmt_gb(base_read - base_open)} of the memmap's "
                      f"page-cache pages (clean, reclaimable; the read baseline) + "
                      f"{fmt_gb(r['rss_fit'] - base_read)} the solver's own; private (anonymous) peak "
                      f"{fmt_gb(r.get('poll_peak_anon'))}")


if __name__ == "__main__":
    sys.exit(main())
