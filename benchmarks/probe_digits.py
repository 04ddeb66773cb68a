"""End-to-end time of the main job, `ganlab run probe-digits`, against its 10-minute target.

Runs the README's command in a fresh folder (training + the full report), then prints
- wall time and the ratio to the 600 s target, with the CPU time the run used, and an fp32 matmul
  GFLOP/s measured in the same run (a busy, shared machine shows up as a low figure there);
- each report component's time from metrics.json;
- the svm-probe table at 10 labels per class and with all labels, and whether the trained D
  beats both raw pixels and a random D at 10 per class (the issue's requirement), next to the
  figures of an independent run of the same protocol.

    .venv/bin/python benchmarks/probe_digits.py [--keep DIR] [--extra ARGS...]
"""
from __future__ import annotations

import argparse
import json
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
INDEPENDENT = {"d": (92.6, 98.8), "pixels": (89.4, 96.2), "random-d": (78.5, 83.6)}  # % at 10/class, all labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="extra arguments for `ganlab run probe-digits`")
    args = parser.parse_args()
    ganlab = str(Path(sys.executable).parent / "ganlab")
    folder = Path(args.keep or tempfile.mkdtemp(prefix="probe-digits-"))
    folder.mkdir(parents=True, exist_ok=True)
    before = matmul_gflops()
    start = time.perf_counter()
    result = subprocess.run([ganlab, "run", "probe-digits", *args.extra], cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = matmul_gflops()
    if result.returncode != 0:
        print(result.stderr[-3000:])
        print(f"ganlab run probe-digits failed with exit code {result.returncode}")
        return 1
    metrics = json.loads((folder / "reports" / "probe-digits" / "metrics.json").read_text())
    print(f"fp32 matmul: {before:.1f} GFLOP/s before, {after:.1f} GFLOP/s after the run")
    print(f"ganlab run probe-digits: {wall:.0f} s wall ({wall / TARGET_SECONDS:.2f} of the {TARGET_SECONDS} s target: "
          f"{'PASS' if wall < TARGET_SECONDS else 'FAIL'}), {cpu.ru_utime + cpu.ru_stime:.0f} s CPU")
    for name, entry in metrics["components"].items():
        print(f"  {name:<20} {entry['status']:<8} {entry['seconds']:7.1f} s")
    probe = metrics["components"].get("svm-probe", {}).get("metrics", {})
    if not probe:
        print("svm-probe did not run")
        return 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
