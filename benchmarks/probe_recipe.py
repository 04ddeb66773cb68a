"""A CPU recipe whose trained D is measured against standardised K-means, over several GAN seeds.

The recipe, all on the CPU (about 5 minutes per GAN seed on 2 cores):
- data: MNIST at 32x32 grey, 8,000 training and 2,000 test images: a seeded split (numpy seed 0) of the
  10,000 MNIST test images in ../shared/data/mnist-test (or --mnist DIR with the two idx files), written as
  a `folder` dataset (train/<digit>/*.png, test/<digit>/*.png), so the GAN never sees the probe's test images;
- GAN: `ganlab train --dataset folder --image-size 32 --channels 1 --ngf 32 --ndf 32 --epochs 15
  --batch-size 64 --seed S`, everything else at ganlab's defaults (the paper's: Adam lr 2e-4, beta1 0.5);
- probe: `ganlab report last.pt --only svm-probe` with 10 and 100 labels per class and all labels, 20
  class-balanced draws (the same draws for every feature set), baselines raw pixels, a random D of the same
  architecture and K-means (K = 200 by default, standardised as Coates & Ng do), D's BatchNorm statistics
  recomputed on the training images (the default).

It prints each seed's table, then the mean ± std over GAN seeds, and whether the trained D matches or beats
K-means with all labels and beats it at 10 labels per class (the mean over seeds).

    .venv/bin/python benchmarks/probe_recipe.py [--seeds 0,1,2] [--epochs 15] [--draws 20] [--kmeans-k 200]
        [--keep DIR] [--mnist DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist-test"
FEATURES = ("d", "kmeans", "random-d", "pixels")
BUDGETS = ("10pc", "100pc", "all")


def read_idx(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test images (N x 28 x 28 uint8) and labels from the two gzipped idx files."""
    images = np.frombuffer(gzip.open(folder / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(folder / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


def write_folder(images: np.ndarray, labels: np.ndarray, out: Path, train: int = 8000) -> None:
    """A seeded split into out/train and out/test, one sub-folder per digit."""
    order = np.random.default_rng(0).permutation(len(images))
    for rank, i in enumerate(order):
        folder = out / ("train" if rank < train else "test") / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")


def ganlab(*args: str) -> float:
    """Run the ganlab CLI of this venv; seconds taken. A failure ends the benchmark with ganlab's message."""
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "ganlab"), *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"ganlab {' '.join(args[:2])} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="GAN seeds, comma-separated")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--kmeans-k", type=int, default=200)
    parser.add_argument("--mnist", type=Path, default=MNIST, help="folder with the MNIST test set's idx files")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="probe-recipe-"))
    data = work / "mnist-folder"
    if not (data / "test").is_dir():
        write_folder(*read_idx(args.mnist), data)
    results: dict[int, dict[str, float]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run, report = work / "runs" / f"seed-{seed}", work / "reports" / f"seed-{seed}"
        train_s = ganlab("train", "--dataset", "folder", "--data-root", str(data), "--image-size", "32",
                         "--channels", "1", "--ngf", "32", "--ndf", "32", "--epochs", str(args.epochs),
                         "--batch-size", "64", "--seed", str(seed), "--out", str(run), "--overwrite")
        settings = {"labels_per_class": "10,100,all", "draws": args.draws, "baselines": "pixels,random-d,kmeans",
                    "kmeans_k": args.kmeans_k, "umap": "false"}
        probe_s = ganlab("report", str(run / "last.pt"), "--only", "svm-probe", "--out", str(report), "-q",
                         *[f"--set=svm-probe.{k}={v}" for k, v in settings.items()])
        metrics = json.loads((report / "metrics.json").read_text())["components"]["svm-probe"]["metrics"]
        results[seed] = metrics
        print(f"GAN seed {seed}: trained in {train_s:.0f} s, probed in {probe_s:.0f} s")
        for name in FEATURES:
            cells = [f"{100 * metrics[f'{name}.{b}.accuracy']:.2f} ± {100 * metrics[f'{name}.{b}.std']:.2f}"
                     for b in BUDGETS]
            print(f"  {name:<9}" + "".join(f"{c:>16}" for c in cells))
    print(f"\nmean ± std over {len(results)} GAN seeds (each a mean over {args.draws} draws), accuracy %:")
    print(f"  {'features':<9}" + "".join(f"{b:>16}" for b in ("10 per class", "100 per class", "all labels")))
    means = {}
    for name in FEATURES:
        cells = []
        for b in BUDGETS:
            values = [100 * m[f"{name}.{b}.accuracy"] for m in results.values()]
            means[name, b] = statistics.fmean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{means[name, b]:.2f} ± {spread:.2f}")
        print(f"  {name:<9}" + "".join(f"{c:>16}" for c in cells))
    full = means["d", "all"] >= means["kmeans", "all"]
    scarce = means["d", "10pc"] > means["kmeans", "10pc"]
    print(f"\ntrained D matches or beats K-means (K={args.kmeans_k}, standardised) with all labels: "
          f"{'PASS' if full else 'FAIL'} ({means['d', 'all']:.2f} vs {means['kmeans', 'all']:.2f})")
    print(f"trained D beats it at 10 labels per class: {'PASS' if scarce else 'FAIL'} "
          f"({means['d', '10pc']:.2f} vs {means['kmeans', '10pc']:.2f})")
    print(f"files: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
