"""End-to-end time of the main job, `ganlab run probe-digits`, against its 10-minute target.

Runs the README's command in a fresh folder (training + the full report), then prints
- wall time and the ratio to the 600 s target, with the CPU time the run used, and an fp32 matmul
  GFLOP/s measured in the same run (a busy, shared machine shows up as a low figure there);
- each report component's time from metrics.json;
- the speed-up over --before SECONDS (default 183: this script's wall time when issue 12 was filed,
  before any of its work; issue 12's target is 2x or more);
- the svm-probe table at 10 labels per class and with all labels, and whether the trained D
  beats both raw pixels and a random D at 10 per class (the issue's requirement), next to the
  figures of an independent run of the same protocol.

With --fresh-cache the run gets an empty feature cache (GANLAB_CACHE in a temporary folder), as on a new
machine: svm-probe's baseline rows, probe-epochs' baseline lines, K-means features, hash-collisions' autoencoder
and UMAP's compiled code are then computed, not read from ~/.cache/ganlab, where earlier runs left them (the
script prints how many baseline rows svm-probe reused).

With --baseline-python PY (a Python whose `ganlab` is an earlier version, e.g. a venv with a checkout of an
older commit installed), it instead alternates runs of both for --rounds rounds (B, C, then C, B, ...), each in
its own folder with its own empty cache, and prints the ratio of the median wall and CPU times: a baseline
measured in the same session, under the same load. With --warm-cache each side keeps one cache across its
runs, filled by an unmeasured first run of each (how a machine that has run probe-digits before sees it).

    .venv/bin/python benchmarks/probe_digits.py [--keep DIR] [--before SECONDS] [--fresh-cache] [--extra ARGS...]
    .venv/bin/python benchmarks/probe_digits.py --baseline-python /tmp/oldvenv/bin/python [--rounds 2] [--warm-cache]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops  # noqa: E402

TARGET_SECONDS = 600
BEFORE_SECONDS = 183  # this script's wall time when issue 12 was filed, before its work (load average 1-2)
INDEPENDENT = {"d": (92.6, 98.8), "pixels": (89.4, 96.2), "random-d": (78.5, 83.6)}  # % at 10/class, all labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--before", type=float, default=BEFORE_SECONDS,
                        help="an earlier wall time to print the speed-up against (default: %(default)s s)")
    parser.add_argument("--fresh-cache", action="store_true", help="run with an empty GANLAB_CACHE")
    parser.add_argument("--baseline-python", help="alternate with `PY -m ganlab run probe-digits` (see above)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds with --baseline-python (default 2)")
    parser.add_argument("--warm-cache", action="store_true", help="with --baseline-python: a cache per side, filled "
                        "by an unmeasured first run")
    parser.add_argument("extra", nargs="*", help="extra arguments for `ganlab run probe-digits`")
    args = parser.parse_args()
    if args.baseline_python:
        return compare(args.baseline_python, args.rounds, args.extra, args.warm_cache)
    ganlab = str(Path(sys.executable).parent / "ganlab")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="probe-digits-"))
    folder.mkdir(parents=True, exist_ok=True)
    before = matmul_gflops()
    start = time.perf_counter()
    env = dict(os.environ, GANLAB_CACHE=tempfile.mkdtemp(prefix="ganlab-cache-")) if args.fresh_cache else None
    result = subprocess.run([ganlab, "run", "probe-digits", *args.extra], cwd=folder, capture_output=True, text=True,
                            env=env)
    wall = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = matmul_gflops()
    if result.returncode != 0:
        print(result.stderr[-3000:])
        print(f"ganlab run probe-digits failed with exit code {result.returncode}")
        return 1
    metrics = json.loads((folder / "reports" / "probe-digits" / "metrics.json").read_text())
    print(f"fp32 matmul: {before:.1f} GFLOP/s before, {after:.1f} GFLOP/s after the run")
    print(f"feature cache: {env['GANLAB_CACHE'] + ' (fresh)' if env else 'the default (earlier runs may fill it)'}")
    print(f"ganlab run probe-digits: {wall:.0f} s wall ({wall / TARGET_SECONDS:.2f} of the {TARGET_SECONDS} s target: "
          f"{'PASS' if wall < TARGET_SECONDS else 'FAIL'}), {cpu.ru_utime + cpu.ru_stime:.0f} s CPU")
    print(f"speed-up over the earlier {args.before:.0f} s: {args.before / wall:.2f}x (issue 12's target: 2x, "
          f"{'PASS' if args.before / wall >= 2 else 'FAIL'})")
    for name, entry in metrics["components"].items():
        print(f"  {name:<20} {entry['status']:<8} {entry['seconds']:7.1f} s")
    probe = metrics["components"].get("svm-probe", {}).get("metrics", {})
    if not probe:
        print("svm-probe did not run")
        return 1
    if "baseline_rows_reused" in probe:
        print(f"svm-probe baseline rows reused from the cache: {probe['baseline_rows_reused']:.0f} (0: all computed)")
    print(f"\n{'features':<10} {'10/class %':>12} {'all labels %':>13}   independent run (10/class, all)")
    for key in ("d", "pixels", "random-d", "kmeans", "supervised"):
        if f"{key}.10pc.accuracy" not in probe:
            continue
        scarce = f"{100 * probe[f'{key}.10pc.accuracy']:.1f} ± {100 * probe[f'{key}.10pc.std']:.1f}"
        full = f"{100 * probe[f'{key}.all.accuracy']:.1f}"
        ref = INDEPENDENT.get(key)
        print(f"{key:<10} {scarce:>12} {full:>13}   {f'{ref[0]}, {ref[1]}' if ref else '-'}")
    d, pixels, random_d = (probe[f"{k}.10pc.accuracy"] for k in ("d", "pixels", "random-d"))
    beats = d > pixels and d > random_d
    print(f"\ntrained D beats raw pixels and random D at 10 per class: {'PASS' if beats else 'FAIL'}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    if env:
        shutil.rmtree(env["GANLAB_CACHE"], ignore_errors=True)
    return 0


def timed_run(python: str, extra: list[str], cache: str | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of `python -m ganlab run probe-digits` in a fresh folder, with ``cache`` (default: an
    empty one, removed afterwards)."""
    folder, keep = tempfile.mkdtemp(prefix="probe-digits-"), cache is not None
    cache = cache or tempfile.mkdtemp(prefix="ganlab-cache-")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([python, "-m", "ganlab", "run", "probe-digits", *extra], cwd=folder, capture_output=True,
                            text=True, env=dict(os.environ, GANLAB_CACHE=cache))
    wall = time.perf_counter() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(folder, ignore_errors=True)
    if not keep:
        shutil.rmtree(cache, ignore_errors=True)
    if result.returncode != 0:
        sys.exit(f"{python} -m ganlab run probe-digits failed:\n{result.stderr[-2000:]}")
    return wall, (now.ru_utime + now.ru_stime) - (used.ru_utime + used.ru_stime)


def compare(baseline: str, rounds: int, extra: list[str], warm: bool) -> int:
    import statistics

    times: dict[str, list[tuple[float, float]]] = {"baseline": [], "current": []}
    pythons = {"baseline": baseline, "current": sys.executable}
    caches = {side: tempfile.mkdtemp(prefix=f"ganlab-cache-{side}-") if warm else None for side in pythons}
    for side in pythons if warm else ():
        wall, _ = timed_run(pythons[side], extra, caches[side])
        print(f"filling {side}'s cache: {wall:.1f} s (not counted)", flush=True)
    for r in range(rounds):
        for side in ("baseline", "current") if r % 2 == 0 else ("current", "baseline"):
            gflops = matmul_gflops()
            wall, cpu = timed_run(pythons[side], extra, caches[side])
            times[side].append((wall, cpu))
            print(f"round {r + 1} {side:<8} {wall:6.1f} s wall {cpu:6.1f} s CPU (fp32 matmul before: {gflops:.0f} "
                  f"GFLOP/s)", flush=True)
    med = {side: [statistics.median(t[i] for t in runs) for i in (0, 1)] for side, runs in times.items()}
    print(f"medians: baseline {med['baseline'][0]:.1f} s wall / {med['baseline'][1]:.1f} s CPU, current "
          f"{med['current'][0]:.1f} s / {med['current'][1]:.1f} s")
    ratio = med["baseline"][0] / med["current"][0]
    print(f"speed-up (baseline / current): {ratio:.2f}x wall, {med['baseline'][1] / med['current'][1]:.2f}x CPU "
          f"(issue 12's target: 2x wall, {'PASS' if ratio >= 2 else 'FAIL'})")
    for cache in caches.values():
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
