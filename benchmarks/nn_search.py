"""Exact nearest-neighbour search: ``ganlab.nearest_neighbours`` against a chunked ``torch.mm`` and scikit-learn.

    .venv/bin/python benchmarks/nn_search.py --threads 2      # 10,000 x 60,000 x 3,072, 8-10 min on 2 shared cores
    .venv/bin/python benchmarks/nn_search.py --quick          # 1,000 x 6,000 x 512, a smoke run of seconds
    [--queries N] [--references M] [--dims D] [--sklearn-queries S] [--threads T] [--device cpu|cuda]
    [--query-chunk 2048] [--reference-chunk 8192]

The memorisation checks (``nearest-neighbours``, ``data-copying``) search tens of thousands of training images for
thousands of queries. The issue's size: 10,000 queries x 60,000 references x 3,072 dims (CIFAR-10's 32x32x3), random
float32 N(0, 1) data, generated in each child from a fixed seed in 4,096-row blocks (so every case sees the same
numbers and the generation never holds a second copy).

Cases, each in a fresh child process (``--child``) so its peak RSS is its own, in this order:

- ``torch.mm`` (baseline, run first and again after the ganlab cases): for every query chunk x reference chunk of
  the sizes ganlab uses (``--query-chunk`` x ``--reference-chunk``), ``torch.mm(q, r.T)``, the result thrown away:
  the matrix products a full distance pass needs and nothing else.
- ``ganlab k=1`` and ``ganlab k=3``: ``ganlab.nearest_neighbours(queries, references, k)`` with those chunks.
- ``sklearn brute``: ``NearestNeighbors(n_neighbors=1, algorithm="brute").fit(references).kneighbors(...)`` on the
  first ``--sklearn-queries`` queries (default 2,000; all of them would take several times longer), under
  ``threadpoolctl.threadpool_limits(threads)``; its indices are compared with ganlab's k=1 answer for those
  queries. Where they differ, both candidates' distances are recomputed in float64: a difference below 1e-5
  relative is a tie broken differently by rounding (random high-dimensional points have many near-equal nearest
  distances), anything larger a wrong answer.

GFLOP/s = 2 N M D / seconds for one full distance pass (the matrix product only; norms, top-k and conversions are
not counted but are in ganlab's time), for sklearn 2 S M D / seconds. Wall time of the call alone, after a small
warm-up call, data generation excluded; CPU seconds are printed beside it (on a shared machine wall time swings),
and each ganlab case's CPU seconds are also compared with the better ``torch.mm`` run's (information, not a verdict).
Targets: each ganlab case at least 0.7 of the better of the two ``torch.mm`` measurements, and its peak RSS under
2 GB (decimal). Peak RSS is the child's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` and its VmHWM from
/proc/self/status; the verdict uses VmHWM where /proc exists, because on Linux a child's ru_maxrss starts at the
parent's peak (carried across fork + exec, see probe_scale.py) and the parent has torch imported. Both include the
data itself: (N + M) D 4 bytes = 0.86 GB at the issue's size. With ``--device cuda`` the data is moved to the GPU
before timing, times are synchronised, and the GPU's peak allocation is printed instead of an RSS target.

``--quick`` only checks that the script runs: at its sizes per-call overheads (the norms, top-k, thread start-up)
outweigh the matrix products, so its GFLOP/s verdicts mean nothing. The targets are for the issue's size.

Exit status is 0 whichever way the numbers go: this script reports, tests do not time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, cpu_model, load_average  # noqa: E402

GB = 1e9
RSS_TARGET = 2 * GB
RATIO_TARGET = 0.7
TIE_TOLERANCE = 1e-5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--references", type=int, default=60_000)
    p.add_argument("--dims", type=int, default=3_072)
    p.add_argument("--sklearn-queries", type=int, default=2_000, help="queries given to sklearn (0: skip it)")
    p.add_argument("--quick", action="store_true", help="1,000 x 6,000 x 512 (sklearn on 500): a smoke run")
    p.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: the core count)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--query-chunk", type=int, default=2048)
    p.add_argument("--reference-chunk", type=int, default=8192)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.queries, args.references, args.dims = 1_000, 6_000, 512
        args.sklearn_queries = min(args.sklearn_queries, 500)
    args.threads = args.threads or cpu_count()
    args.sklearn_queries = min(args.sklearn_queries, args.queries)
    return args


# ----------------------------------------------------------------------------- child side
def _peaks() -> dict[str, int | None]:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"ru_maxrss": ru * (1 if sys.platform == "darwin" else 1024), "vmhwm": hwm}


def _data(args):
    import torch

    gen = torch.Generator().manual_seed(0)
    out = []
    for rows in (args.queries, args.references):
        x = torch.empty(rows, args.dims)
        for a in range(0, rows, 4096):
            x[a:a + 4096] = torch.randn(min(4096, rows - a), args.dims, generator=gen)
        out.append(x.to(args.device))
    return out


def _sync(args):
    if args.device == "cuda":
        import torch

        torch.cuda.synchronize()


def child_main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    queries, references = _data(args)
    workdir = Path(args.workdir)
    result = {"case": args.child}
    if args.child == "mm":
        def run():
            for a in range(0, len(queries), args.query_chunk):
                q = queries[a:a + args.query_chunk]
                for b in range(0, len(references), args.reference_chunk):
                    torch.mm(q, references[b:b + args.reference_chunk].T)
        run_small = None
    elif args.child.startswith("ganlab-k"):
        import ganlab

        k = int(args.child.removeprefix("ganlab-k"))

        def run():
            return ganlab.nearest_neighbours(queries, references, k, query_chunk=args.query_chunk,
                                             reference_chunk=args.reference_chunk, device=args.device)

        def run_small():
            ganlab.nearest_neighbours(queries[:64], references[:4096], k, device=args.device)
    else:  # sklearn
        from sklearn.neighbors import NearestNeighbors
        from threadpoolctl import threadpool_limits

        q_np, r_np = queries[:args.sklearn_queries].cpu().numpy(), references.cpu().numpy()
        threadpool_limits(limits=args.threads)  # BLAS and OpenMP pools, for the rest of this child

        def run():
            return NearestNeighbors(n_neighbors=1, algorithm="brute").fit(r_np).kneighbors(q_np)

        def run_small():
            NearestNeighbors(n_neighbors=1, algorithm="brute").fit(r_np[:4096]).kneighbors(q_np[:64])
    if args.child == "mm":
        torch.mm(queries[:64], references[:4096].T)  # warm-up: first call picks the kernel
    else:
        run_small()
    _sync(args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cpu0, start = time.process_time(), time.perf_counter()
    answer = run()
    _sync(args)
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu0
    result.update(_peaks())
    if args.device == "cuda":
        result["gpu_peak"] = torch.cuda.max_memory_allocated()
    if args.child == "ganlab-k1":
        np_idx = answer[1][:, 0].numpy()
        np_idx.tofile(workdir / "ganlab_k1.int64")
    elif args.child == "sklearn":
        result.update(_compare(q_np, r_np, answer[1][:, 0], workdir / "ganlab_k1.int64"))
    print("RESULT " + json.dumps(result), flush=True)


def _compare(q, r, sk_idx, ganlab_path: Path) -> dict:
    """How many of sklearn's nearest indices ganlab's k=1 run matched; mismatches checked in float64."""
    import numpy as np

    if not ganlab_path.exists():
        return {"compared": 0}
    ours = np.fromfile(ganlab_path, dtype=np.int64)[:len(sk_idx)]
    differ = np.flatnonzero(ours != sk_idx)
    worst = 0.0
    for i in differ:
        d_ours = np.linalg.norm(q[i].astype(np.float64) - r[ours[i]].astype(np.float64))
        d_sk = np.linalg.norm(q[i].astype(np.float64) - r[sk_idx[i]].astype(np.float64))
        worst = max(worst, (d_ours - d_sk) / d_sk)
    return {"compared": len(sk_idx), "differ": len(differ), "worst_relative_gap": worst}


# ----------------------------------------------------------------------------- parent side
def run_child(case: str, args, workdir: str) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--workdir", workdir, "--queries", str(args.queries),
           "--references", str(args.references), "--dims", str(args.dims), "--threads", str(args.threads),
           "--device", args.device, "--sklearn-queries", str(args.sklearn_queries),
           "--query-chunk", str(args.query_chunk), "--reference-chunk", str(args.reference_chunk)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"case": case, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["child_seconds"] = time.perf_counter() - start
    return result


def fmt_gb(nbytes) -> str:
    return "n/a" if nbytes is None else f"{nbytes / GB:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    import numpy
    import sklearn
    import torch

    n, m, d = args.queries, args.references, args.dims
    flops = 2.0 * n * m * d
    print(f"nn_search: {n:,} queries x {m:,} references x {d:,} dims, float32, device {args.device}, "
          f"{args.threads} threads, chunks {args.query_chunk} x {args.reference_chunk}")
    print(f"machine: {platform.node()}, {cpu_model()}, {cpu_count()} cores usable, python {platform.python_version()}, "
          f"torch {torch.__version__}, numpy {numpy.__version__}, scikit-learn {sklearn.__version__}")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"data: {fmt_gb((n + m) * d * 4)} GB; one distance pass = {flops / 1e9:,.0f} GFLOP; "
          f"load average at start: {load_average()}", flush=True)
    cases = ["mm", "ganlab-k1", "ganlab-k3", "mm"] + (["sklearn"] if args.sklearn_queries else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="nn_search-") as workdir:
        for case in cases:
            result = run_child(case, args, workdir)
            results.append(result)
            took = f"{result['seconds']:.1f} s" if "seconds" in result else result["error"]
            print(f"  {case}: {took}", flush=True)
    print(f"load average at end: {load_average()}")
    for r in results:
        if "seconds" in r:
            work = flops if r["case"] != "sklearn" else 2.0 * args.sklearn_queries * m * d
            r["gflops"] = work / r["seconds"] / 1e9
    baseline = max((r["gflops"] for r in results if r["case"] == "mm" and "gflops" in r), default=float("nan"))

    header = ["case", "wall s", "CPU s", "GFLOP/s", "vs torch.mm", "peak RSS GB (VmHWM)", "ru_maxrss GB"]
    if args.device == "cuda":
        header.append("GPU peak GB")
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["case"], r["error"]])
            continue
        row = [r["case"] + (f" ({args.sklearn_queries:,} queries)" if r["case"] == "sklearn" else ""),
               f"{r['seconds']:.2f}", f"{r['cpu_seconds']:.1f}", f"{r['gflops']:.1f}",
               f"{r['gflops'] / baseline:.3f}", fmt_gb(r["vmhwm"]), fmt_gb(r["ru_maxrss"])]
        if args.device == "cuda":
            row.append(fmt_gb(r.get("gpu_peak")))
        rows.append(row)
    widths = [max(len(str(x[i])) for x in [header] + rows if i < len(x)) for i in range(len(header))]
    print()
    for row in [header] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    print()
    print(f"baseline: the better torch.mm run, {baseline:.1f} GFLOP/s")
    if args.quick:
        print("(--quick: a smoke run; at these sizes overheads dominate and the GFLOP/s verdicts mean nothing)")
    for r in results:
        if not r["case"].startswith("ganlab") or "error" in r:
            continue
        ratio = r["gflops"] / baseline
        print(f"{'PASS' if ratio >= RATIO_TARGET else 'FAIL'}  {r['case']}: {ratio:.3f} of torch.mm's GFLOP/s "
              f"(target >= {RATIO_TARGET})")
        cpu_base = min((x["cpu_seconds"] for x in results if x["case"] == "mm" and "cpu_seconds" in x),
                       default=float("nan"))
        print(f"      {r['case']} by CPU seconds: {cpu_base / r['cpu_seconds']:.3f} of torch.mm's "
              f"({r['cpu_seconds']:.1f} s against {cpu_base:.1f} s; other jobs on a shared machine take wall time, "
              f"not this process's CPU time)")
        if args.device == "cpu":
            peak = r["vmhwm"] if r["vmhwm"] is not None else r["ru_maxrss"]
            print(f"{'PASS' if peak < RSS_TARGET else 'FAIL'}  {r['case']}: peak RSS {fmt_gb(peak)} GB "
                  f"(target < {RSS_TARGET / GB:.0f} GB)")
    for r in results:
        if r["case"] == "sklearn" and r.get("compared"):
            ok = r["worst_relative_gap"] <= TIE_TOLERANCE
            same = r["compared"] - r["differ"]
            print(f"{'PASS' if ok else 'FAIL'}  indices: ganlab k=1 and sklearn agree on {same:,} of {r['compared']:,} "
                  f"queries; the {r['differ']} others are ties within "
                  f"{r['worst_relative_gap']:.1e} relative distance (tolerance {TIE_TOLERANCE:g})")
            sk_rate = r["seconds"] / r["compared"]
            ours = next((x for x in results if x["case"] == "ganlab-k1" and "seconds" in x), None)
            if ours:
                print(f"      time per 1,000 queries: ganlab k=1 {1000 * ours['seconds'] / n:.2f} s, "
                      f"sklearn brute {1000 * sk_rate:.2f} s ({sk_rate * n / ours['seconds']:.1f}x ganlab's)")


if __name__ == "__main__":
    main()
