"""Sample-quality metrics at scale: time and peak RSS of FD, KID, precision/recall and density/coverage on
50,000 x 2,048 float32 features per set (generated and real), each case in its own child process.

    .venv/bin/python benchmarks/quality_metrics.py               # 50,000 x 2,048: fd, kid, all (8-13 min here)
    .venv/bin/python benchmarks/quality_metrics.py --quick       # 10,000 x 2,048, every case incl. all-core
    .venv/bin/python benchmarks/quality_metrics.py --cases fd,kid,pr,dc,all,all-core
        [--n 50000] [--dim 2048] [--chunk 4096] [--threads N] [--device cpu|cuda] [--timeout S]

The issue's targets, per case: under 60 s and under 4 GB peak RSS, on the CPU.

Data: drawn inside each child from fixed seeds (numpy default_rng, float32 straight away, no float64 copy):
real ~ N(0, I), generated ~ N(0.02, I), both N x D. Drawing is not timed; the "data" case only draws,
which gives the RSS floor every case starts from (2 x N x D x 4 bytes of features, plus the interpreter, numpy
and torch).

Cases (the functions of ganlab_plugins.quality that sample-quality calls, with its defaults):
- fd: ``frechet_distance`` (D <= N: float64 means and covariances over 4,096-row chunks, eigh).
- kid: ``kid`` with 100 subsets of 1,000 (the per-subset route at this size).
- pr: ``precision_recall`` (k = 3); dc: ``density_coverage`` (k = 5): each alone, as a user calling one would.
- all: ``manifold_metrics``: the four together as the evaluator runs them: one radius search per set
  (symmetric: each off-diagonal block of a set against itself is computed once and used for both its rows and
  its columns; the real radii for k = 3 and k = 5 from one search) and ONE pass over the real x generated blocks
  for all four metrics. Its stages are timed separately.
- all-core: the same with the radii from ``ganlab.nearest_neighbours`` (every block of a set against itself
  computed twice), for comparison.

Timing: wall seconds of the metric call in the child (perf_counter) and its CPU seconds (process_time, all
threads). Peak RSS: the child's VmHWM from /proc/self/status after the call (the kernel's high-water mark;
getrusage's ru_maxrss is only the fallback: on Linux a child's starts at its parent's peak), one process per
case so the peaks are per case.

FLOP budget, counted as 2 x multiply-adds of the matrix products that dominate (elementwise work, top-k, eigh
not counted): fd 2 N D^2 (one syrk per set, D(D+1)/2 x N multiply-adds each, float64); kid 100 x 3 x 1000^2 x D
x 2; the radii N^2 D (symmetric) or 2 N^2 D (core) per set; the real x generated pass 2 N M D. At N = M = 50,000
and D = 2,048: all = 2.05e13 FLOP, pr 2.05e13, dc 1.54e13, all-core 3.07e13, fd 4.3e11, kid 1.2e12. The "floor"
column divides that by the fp32 GFLOP/s of a 2048^3 matmul measured in the same run (fp64 for fd; with
--device cuda, an 8192^3 fp32 matmul on the GPU for everything but fd): the time a perfect implementation would
need at this machine's matmul speed.

Measured 2026-11-27, 50,000 x 2,048 (wall s / peak RSS), same metric values on every machine:

| machine | fd | kid | all (real radii + generated radii + one real x generated pass) |
|---|---|---|---|
| 2-vCPU AMD EPYC, load 5.6-6.5, 2 torch threads | 43.3 / 1.63 GB | 65.4 / 1.49 GB | 633 (175 + 135 + 322) / 1.68 GB |
| the same, load 3.1-3.4, ``--threads 1`` | 36.1 / 1.63 GB | 20.1 / 1.49 GB | 405 (102 + 94 + 209) / 1.66 GB |
| H200 + 16-core Xeon, ``--device cuda`` | 5.0 / 1.62 GB | 0.7 / 1.73 GB | 3.1 (1.1 + 0.7 + 1.3) / 1.80 GB |

(``data`` alone: 1.36 GB, of which 0.82 GB are the two feature sets. fd, rerun after eigh went to one BLAS
thread on a busy machine: 26.3 s at load 4.6.) ``all`` runs at the machine's matmul speed (32 and 51 GFLOP/s
against a 2048^3 probe of 32 and 58): its 2.05e13 FLOP cannot fit in 60 s on two vCPUs, whose fp32 peak is at
most about 190 GFLOP/s (two full Zen cores at 3 GHz, 32 FLOP a cycle each: 107 s). ``all-core`` (radii from
ganlab.nearest_neighbours) took 5.5 s on the H200 against 3.1.

Exit status is 0 whether or not the targets are met: this script reports, tests do not time.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_count, cpu_model, load_average, matmul_gflops  # noqa: E402

GB = 1e9
TARGET_SECONDS = 60.0
TARGET_BYTES = 4 * GB
ALL_CASES = ("data", "fd", "kid", "pr", "dc", "all", "all-core")


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def flops(case: str, n: int, d: int) -> float:
    radii, cross = float(n) * n * d, 2.0 * n * n * d  # symmetric radii of one set; the real x generated pass
    return {"data": 0.0, "fd": 2.0 * n * d * d, "kid": 100 * 3 * 1000**2 * d * 2.0, "pr": 2 * radii + cross,
            "dc": radii + cross, "all": 2 * radii + cross, "all-core": 4 * radii + cross}[case]


def cuda_matmul_gflops(device: str, n: int = 8192, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ----------------------------------------------------------------------------------------------- the child

def child_main(spec: dict) -> None:
    import numpy as np
    import torch

    from ganlab_plugins.quality.manifold import density_coverage, manifold_metrics, precision_recall
    from ganlab_plugins.quality.metrics import frechet_distance, kid

    torch.set_num_threads(spec["threads"])
    n, d, case, device = spec["n"], spec["dim"], spec["case"], spec["device"]
    start = time.perf_counter()
    real = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    fake = np.random.default_rng(2).standard_normal((n, d), dtype=np.float32)
    fake += 0.02
    res = {"case": case, "draw_s": time.perf_counter() - start, "rss_data": peak_rss()}
    common = {"chunk": spec["chunk"], "device": device}
    timings: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    if case == "fd":
        res["value"] = {"fd": frechet_distance(real, fake, chunk=spec["chunk"])}
    elif case == "kid":
        mean, std = kid(real, fake, subsets=100, subset_size=1000, seed=0, **common)
        res["value"] = {"kid": mean, "kid_std": std}
    elif case == "pr":
        res["value"] = dict(zip(("precision", "recall"), precision_recall(real, fake, k=3, **common)))
    elif case == "dc":
        res["value"] = dict(zip(("density", "coverage"), density_coverage(real, fake, k=5, **common)))
    elif case in ("all", "all-core"):
        res["value"] = manifold_metrics(real, fake, k=3, density_k=5, knn="core" if case == "all-core" else
                                        "symmetric", timings=timings, **common)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    res.update(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, rss=peak_rss(), stages=timings)
    print("RESULT " + json.dumps(res), flush=True)


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"case": spec["case"], "error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["child_s"] = time.perf_counter() - start
            return res
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"case": spec["case"], "error": f"exit {done.returncode}: {tail[:200]}"}


# ---------------------------------------------------------------------------------------------- the parent

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 x 2,048 and every case")
    parser.add_argument("--n", type=int, default=None, help="rows per set (default 50,000; 10,000 with --quick)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--cases", default=None, help=f"comma list of {', '.join(ALL_CASES)}")
    parser.add_argument("--chunk", type=int, default=4096, help="rows per distance / moment block")
    parser.add_argument("--threads", type=int, default=cpu_count(), help="torch threads in each child")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case before it is killed")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child_main(json.loads(args._child))
        return
    import numpy as np
    import torch

    n = args.n or (10_000 if args.quick else 50_000)
    cases = (args.cases or ("data,fd,kid,pr,dc,all,all-core" if args.quick else "data,fd,kid,all")).split(",")
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(ALL_CASES)}")
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}, {cpu_count()} cores, torch {torch.__version__} ({args.threads} threads), numpy "
          f"{np.__version__}, Python {sys.version.split()[0]}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    print(f"load average before: {load_average()}")
    gf32 = matmul_gflops()
    gf64 = matmul_gflops(dtype=torch.float64)
    print(f"matmul 2048^3: fp32 {gf32:.0f} GFLOP/s, fp64 {gf64:.0f} GFLOP/s (CPU, best of 5)")
    if args.device.startswith("cuda"):  # the distances run there; fd stays on the CPU (numpy, float64)
        gf32 = cuda_matmul_gflops(args.device)
        print(f"matmul 8192^3 fp32 on {args.device}: {gf32:.0f} GFLOP/s (TF32 off, as the metrics run)")
    print(f"sets: {n:,} x {args.dim:,} float32 each (generated and real), chunk {args.chunk}; one child per case")
    print(f"targets per case: < {TARGET_SECONDS:.0f} s and < {TARGET_BYTES / GB:.0f} GB peak RSS\n")
    header = (f"{'case':9} {'wall s':>8} {'cpu s':>8} {'peak RSS':>9} {'GFLOP':>9} {'GFLOP/s':>8} {'floor s':>8}"
              "  verdict")
    print(header)
    print("-" * len(header))
    results = []
    for case in cases:
        spec = {"case": case, "n": n, "dim": args.dim, "chunk": args.chunk, "threads": args.threads,
                "device": args.device}
        res = run_child(spec, args.timeout)
        results.append(res)
        if "error" in res:
            print(f"{case:9} {res['error']}")
            continue
        work = flops(case, n, args.dim)
        rate = work / res["wall_s"] / 1e9 if work else 0.0
        floor = work / ((gf64 if case == "fd" else gf32) * 1e9)
        ok = res["wall_s"] < TARGET_SECONDS and res["rss"] < TARGET_BYTES
        verdict = "-" if case == "data" else ("PASS" if ok else "FAIL")
        print(f"{case:9} {res['wall_s']:8.1f} {res['cpu_s']:8.1f} {res['rss'] / GB:7.2f}GB {work / 1e9:9.0f} "
              f"{rate:8.1f} {floor:8.1f}  {verdict}", flush=True)
        if res.get("stages"):
            print("          stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["stages"].items()))
        if res.get("value"):
            print("          values: " + ", ".join(f"{k} {v:.6g}" for k, v in res["value"].items()))
    print(f"\nload average after: {load_average()}; fp32 matmul after: {matmul_gflops():.0f} GFLOP/s")
    timed = [r for r in results if "error" not in r and r["case"] != "data"]
    failed = [r["case"] for r in timed if not (r["wall_s"] < TARGET_SECONDS and r["rss"] < TARGET_BYTES)]
    errors = [r["case"] for r in results if "error" in r]
    print(f"VERDICT: {'FAIL' if failed or errors else 'PASS'}"
          + (f" (over target: {', '.join(failed)})" if failed else "")
          + (f" (no result: {', '.join(errors)})" if errors else ""))


if __name__ == "__main__":
    main()
