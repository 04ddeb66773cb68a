"""Search for the probe recipe: which training and feature settings make a trained D beat a random D and K-means.

Every number used to choose comes from a validation split; the test split is scored too and recorded, but the
choice reads only ``val`` rows. Datasets (all on this machine, split with numpy seed 0):

- ``mnist``: the 10,000 MNIST test images of ../shared/data/mnist-test: 6,000 train, 2,000 val, 2,000 test
  (28x28 grey, like the unseen dataset the target is about), trained at 32x32;
- ``cifar``: CIFAR-10 (../shared/data/cifar10-jpg): 6,000 train and 2,000 val from its train tree, 2,000 test
  from its test tree (32x32 RGB);
- ``cifar-grey``: the same images as ``cifar`` in grey, resized to 28x28 (a harder grey 28x28 set).

The GAN trains on ``train`` only (``ganlab train --dataset folder``, one CPU thread). For chosen epochs of each
run, D's features are taken in several variants and probed with svm-probe's protocol (``evaluate``: C chosen on
a validation split of the training rows, 10 labels per class over 20 draws, and all 6,000 labels), against the
same variants of a random D of the same architecture, standardised K-means (K = 200) and pixels:

- ``bn``: D's BatchNorm statistics recomputed on the training images (``real``, the authors' protocol) or the
  running averages training left (``running``);
- ``layers``: every conv layer max-pooled to 4x4 (the paper, ``all``), the last two (``last2``), or every layer
  average-pooled to 4x4 (``avg``);
- ``scale``: the features as they are (``raw``), each layer's block divided by its RMS over the (unlabelled)
  training images (``layer``), each feature standardised with the training images' mean and std (``std``), each
  image's vector scaled to one length (``l2``), or that after a signed square root of every feature (``sqrt``,
  the power normalisation of Perronnin et al., 2010).

Results are appended to ``WORK/results.jsonl`` (one line per feature set, dataset, run, epoch, split and label
budget); a finished line is never computed again, so the script can be stopped and started.

    .venv/bin/python benchmarks/recipe_search.py --work ../recipe-work --dataset mnist --config n32 --seed 0
    .venv/bin/python benchmarks/recipe_search.py --work ../recipe-work --table      # the table of what is done
    .venv/bin/python benchmarks/recipe_search.py --work ../recipe-work --dataset mnist --prepare   # folders only
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
CONFIGS = {  # training flags; every run: --image-size 32, Adam, BCE, the paper's DCGAN rules
    "n32": {"ngf": 32, "ndf": 32, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 30},
    "n64": {"ngf": 64, "ndf": 64, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 15},
    "g32d64": {"ngf": 32, "ndf": 64, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 20},
    "n32-lr1e-4": {"ngf": 32, "ndf": 32, "batch_size": 64, "lr": 1e-4, "beta1": 0.5, "epochs": 30},
    "n32-b128": {"ngf": 32, "ndf": 32, "batch_size": 128, "lr": 2e-4, "beta1": 0.5, "epochs": 30},
    "n32-lr5e-4": {"ngf": 32, "ndf": 32, "batch_size": 64, "lr": 5e-4, "beta1": 0.5, "epochs": 30},
    "n48": {"ngf": 48, "ndf": 48, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 20},
    # the same flags as `ganlab run probe --ngf 32 --ndf 64` (the recipe with D 64 wide); its run folder can be
    # linked in as WORK/runs/DATA-g32d64-e30-seedS instead of training again
    "g32d64-e30": {"ngf": 32, "ndf": 64, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 30},
    # likewise `ganlab run probe` itself (the recipe, D 128 wide: the width that beats K-means on all of CIFAR-10)
    "g32d128-e30": {"ngf": 32, "ndf": 128, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 30},
    # the recipe trained longer: both of its runs chose their last epoch or the one before
    "g32d128-e40": {"ngf": 32, "ndf": 128, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 40},
    # G twice as wide as the recipe's: a 128-wide D's step costs about the same with G 64 wide (1.08-1.14 s against
    # 1.02-1.20 s a step on one thread here), so the recipe's time budget allows it
    "g64d128-e30": {"ngf": 64, "ndf": 128, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 30},
    # the recipe with Adam's own default momentum: the paper lowered beta1 to 0.5 for stability, not for features
    "g32d128-b09": {"ngf": 32, "ndf": 128, "batch_size": 64, "lr": 2e-4, "beta1": 0.9, "epochs": 30},
    # the recipe with DiffAugment's translation and cutout on every image D sees in training (train_hooked):
    # augmentation made GANs trained on a few thousand images better in FID; does it make D's features better?
    "g32d128-aug": {"ngf": 32, "ndf": 128, "batch_size": 64, "lr": 2e-4, "beta1": 0.5, "epochs": 30,
                    "augment": True},
    # the two time-scale update rule of Heusel et al. (2017): D learns 4x faster than G (train_hooked)
    "g32d128-ttur": {"ngf": 32, "ndf": 128, "batch_size": 64, "lr_d": 4e-4, "lr_g": 1e-4, "beta1": 0.5,
                     "epochs": 30},
}
HOOKED = ("augment", "lr_d", "lr_g")  # CONFIGS keys ganlab train has no flag for: train_hooked applies them
VARIANTS = [(bn, layers, scale) for bn in ("real", "running") for layers in ("all", "last2", "avg")
            for scale in ("raw", "layer", "std", "l2", "sqrt")]


# ------------------------------------------------------------------------------------------------ data

def _split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(0).permutation(n)
    return order[:6000], order[6000:8000], order[8000:10000]


def _mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = SHARED / "mnist-test"
    images = np.frombuffer(gzip.open(folder / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(folder / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    images = images.reshape(-1, 1, 28, 28)
    train, val, test = _split(len(images))
    return {name: (images[idx], labels[idx].astype(np.int64)) for name, idx in
            (("train", train), ("val", val), ("test", test))}


def _cifar(grey: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    root = SHARED / "cifar10-jpg"
    classes = sorted(p.name for p in (root / "train").iterdir())

    def files(split):
        return [(f, c) for c, name in enumerate(classes) for f in sorted((root / split / name).glob("*.jpg"))]

    def read(pairs):
        out = []
        for path, _ in pairs:
            image = Image.open(path)
            image = image.convert("L").resize((28, 28), Image.BILINEAR) if grey else image.convert("RGB")
            array = np.asarray(image)
            out.append(array[None] if grey else array.transpose(2, 0, 1))
        return np.stack(out), np.array([c for _, c in pairs], dtype=np.int64)

    train_files, test_files = files("train"), files("test")
    order = np.random.default_rng(0).permutation(len(train_files))
    picked = {"train": [train_files[i] for i in order[:6000]], "val": [train_files[i] for i in order[6000:8000]],
              "test": [test_files[i] for i in np.random.default_rng(0).permutation(len(test_files))[:2000]]}
    return {name: read(pairs) for name, pairs in picked.items()}


def dataset(work: Path, name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The dataset's three splits at the model's 32x32 (uint8 N x C x H x W, int64 labels), as ganlab reads them.

    The images are written once as a ``folder`` dataset (train/, val/, test/ of class folders) and read back
    through ``ganlab.load_split``, so the probe sees exactly the resizing the GAN trained on."""
    import ganlab

    cache = work / "data" / f"{name}-32.npz"
    if not cache.is_file():
        raw = _mnist() if name == "mnist" else _cifar(grey=name == "cifar-grey")
        for split, (images, labels) in raw.items():
            _write_folder(work / "data" / name / split, images, labels)
        channels = raw["train"][0].shape[1]
        splits = {s: [t.numpy() for t in ganlab.load_split("folder", s, data_root=work / "data" / name,
                                                           image_size=32, channels=channels, progress=False)]
                  for s in raw}
        np.savez(cache, **{f"{s}_{k}": v for s, (x, y) in splits.items() for k, v in (("x", x), ("y", y))})
    loaded = np.load(cache)
    return {s: (loaded[f"{s}_x"], loaded[f"{s}_y"]) for s in ("train", "val", "test")}


def _write_folder(out: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """out/<class>/NNNNN.png, one file per image."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


# ------------------------------------------------------------------------------------------------ training

def train(work: Path, data: str, config: str, seed: int) -> Path:
    """Train (or find) the run; one CPU thread, so another job can have the other core."""
    run = work / "runs" / f"{data}-{config}-seed{seed}"
    flags = dict(CONFIGS[config])
    if (run / f"epoch_{flags['epochs']:04d}.pt").is_file():
        return run
    channels = "1" if data in ("mnist", "cifar-grey") else "3"
    hooked = {k: flags.pop(k) for k in HOOKED if k in flags}
    ganlab = [__file__, "--train-hooked", json.dumps(hooked)] if hooked else ["-m", "ganlab"]
    args = [sys.executable, *ganlab, "train", "--dataset", "folder", "--data-root", str(work / "data" / data),
            "--image-size", "32", "--channels", channels, "--seed", str(seed), "--out", str(run)]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    last = run / "last.pt"
    args += ["--resume", str(last)] if last.is_file() else ["--overwrite"]
    start = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"trained {run.name} in {time.perf_counter() - start:.0f} s", flush=True)
    return run


def diff_augment(x):
    """DiffAugment's translation (up to 1/8 of the side, zero fill) and cutout (a square half the side, zeroed)
    of Zhao et al. (2020), drawn afresh per image and per call; differentiable in ``x``, so G learns through it."""
    import torch

    n, _, h, w = x.shape
    shift, side = max(1, round(h / 8)), h // 2

    def offsets(low, high):
        return torch.randint(low, high, (n, 1, 1), device=x.device)

    tx, ty = offsets(-shift, shift + 1), offsets(-shift, shift + 1)
    b, gx, gy = torch.meshgrid(*(torch.arange(k, device=x.device) for k in (n, h, w)), indexing="ij")
    padded = torch.nn.functional.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    x = padded[b, torch.clamp(gx + tx + 1, 0, h + 1), torch.clamp(gy + ty + 1, 0, w + 1)].permute(0, 3, 1, 2)
    ox, oy = offsets(0, h + 1 - side % 2), offsets(0, w + 1 - side % 2)
    b, cx, cy = torch.meshgrid(*(torch.arange(k, device=x.device) for k in (n, side, side)), indexing="ij")
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, torch.clamp(cx + ox - side // 2, 0, h - 1), torch.clamp(cy + oy - side // 2, 0, w - 1)] = 0
    return (x * mask.unsqueeze(1)).contiguous(memory_format=torch.channels_last)


def train_hooked(hooked: dict, argv: list[str]) -> int:
    """``ganlab train ARGV`` with the ``HOOKED`` settings applied through torch's global hooks, so ganlab itself is
    unchanged: ``augment`` passes every image a Discriminator sees in training through ``diff_augment`` first;
    ``lr_d`` and ``lr_g`` set the learning rate of the optimizer over D's parameters and of the other one."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    import ganlab
    from ganlab.cli import cli

    d_params: set[int] = set()

    def on_d_input(module, inputs):
        if isinstance(module, ganlab.Discriminator) and module.training:
            d_params.update(id(p) for p in module.parameters())  # D runs before any optimizer steps
            return (diff_augment(inputs[0]),) if hooked.get("augment") else None
        return None

    def set_lr(optimizer, args, kwargs):
        is_d = any(id(p) in d_params for group in optimizer.param_groups for p in group["params"])
        lr = hooked.get("lr_d" if is_d else "lr_g")
        for group in optimizer.param_groups if lr else ():
            group["lr"] = lr

    torch.nn.modules.module.register_module_forward_pre_hook(on_d_input)
    register_optimizer_step_pre_hook(set_lr)
    return cli.main(argv, prog_name="ganlab", standalone_mode=False) or 0


# ------------------------------------------------------------------------------------------------ features

def layer_blocks(D, images: np.ndarray, bn: str, real: np.ndarray, pool: str = "max"):
    """Per conv layer, float32 N x (16 C) of D's post-activation maps max- (or average-) pooled to 4x4."""
    import torch
    import torch.nn.functional as F

    import ganlab

    x = torch.from_numpy(images)
    if next(D.parameters()).shape[1] == 3 and x.shape[1] == 1:  # a run trained on a grey folder read as RGB
        x, real = x.expand(-1, 3, -1, -1), np.repeat(real, 3, axis=1)
    model = ganlab.recompute_batchnorm(D, torch.from_numpy(real)) if bn == "real" else D.eval()
    blocks = []
    with torch.no_grad():
        for start in range(0, len(x), 500):
            _, maps = model(ganlab.to_unit_range(x[start:start + 500]), return_features=True)
            pooled = F.adaptive_avg_pool2d if pool == "avg" else F.adaptive_max_pool2d
            blocks.append([pooled(m, 4).flatten(1).numpy() for m in maps])
    return [np.concatenate([b[i] for b in blocks]) for i in range(len(blocks[0]))]


def variant_features(blocks: dict[str, list[np.ndarray]], layers: str, scale: str) -> dict[str, np.ndarray]:
    """split -> N x dims for one (layers, scale) variant; scales come from the training images only."""
    chosen = {s: b[-2:] if layers == "last2" else b for s, b in blocks.items()}
    out = {}
    for split, per_layer in chosen.items():
        parts = []
        for i, block in enumerate(per_layer):
            ref = chosen["train"][i]
            if scale == "layer":
                block = block / np.sqrt(np.mean(ref.astype(np.float64) ** 2))
            elif scale == "std":
                block = (block - ref.mean(0)) / (ref.std(0) + 1e-6)
            parts.append(block.astype(np.float32))
        out[split] = np.concatenate(parts, 1)
    if scale in ("l2", "sqrt"):
        signed_root = (lambda x: np.sign(x) * np.sqrt(np.abs(x))) if scale == "sqrt" else (lambda x: x)
        out = {split: signed_root(x) for split, x in out.items()}
        # every image's vector to one length: the training images' mean length, so svm-probe's C grid still fits
        length = np.linalg.norm(out["train"], axis=1).mean()
        out = {split: x * (length / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)) for split, x in out.items()}
    return out


# ------------------------------------------------------------------------------------------------ probing

GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-1)  # svm-probe's C grid
# --wide-c: two more decades below and one above, for features whose C was chosen at an end of GRID
WIDE_GRID = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, *GRID, 0.2, 0.5, 1.0)
WIDE = "/wide-C"  # the suffix of a variant probed with WIDE_GRID


def probe(X: dict[str, np.ndarray], y: dict[str, np.ndarray], *, preprocess=None, modes=(10, None), draws=20,
          wide=False):
    """{(split, mode): (mean accuracy, std, C)} with svm-probe's protocol, on val and on test."""
    from ganlab_plugins.probe.protocol import evaluate

    out = {}
    for mode in modes:
        for split in ("val", "test"):
            r = evaluate(X["train"], y["train"], X[split], y[split], labels_per_class=mode, draws=draws,
                         C_grid=WIDE_GRID if wide else GRID, val_size=0.2, seed=0,
                         preprocess=preprocess)
            out[split, "all" if mode is None else f"{mode}pc"] = (r.accuracy_mean, r.accuracy_std, r.best_C)
    return out


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.done = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.done[self.key(row)] = row

    @staticmethod
    def key(row) -> tuple:
        return tuple(row[k] for k in ("data", "features", "run", "epoch", "variant", "split", "mode"))

    def has(self, **ident) -> bool:
        return all(self.key({**ident, "split": s, "mode": m}) in self.done
                   for s in ("val", "test") for m in ident.pop("modes", ("10pc", "all")))

    def add(self, ident: dict, found: dict, seconds: float) -> None:
        with open(self.path, "a") as f:
            for (split, mode), (mean, std, C) in found.items():
                row = {**ident, "split": split, "mode": mode, "accuracy": mean, "std": std, "C": C,
                       "seconds": round(seconds, 1)}
                self.done[self.key(row)] = row
                f.write(json.dumps(row) + "\n")


def baselines(work: Path, results: Results, data: str, splits, ndf_configs, variants=VARIANTS, wide=False) -> None:
    import torch

    import ganlab

    y = {s: v[1] for s, v in splits.items()}
    channels = splits["train"][0].shape[1]
    ident = {"data": data, "run": "-", "epoch": 0}
    suffix = WIDE if wide else ""
    if not results.has(**ident, features="pixels", variant="raw" + suffix):
        start = time.perf_counter()
        X = {s: (v[0].reshape(len(v[0]), -1) / 127.5 - 1).astype(np.float32) for s, v in splits.items()}
        results.add({**ident, "features": "pixels", "variant": "raw" + suffix}, probe(X, y, wide=wide),
                    time.perf_counter() - start)
    for how in ("standardize", "std-unlabelled"):
        if results.has(**ident, features="kmeans200", variant=how + suffix):
            continue
        from ganlab_plugins.probe.kmeans_features import KMeansFeatures

        start = time.perf_counter()
        km = KMeansFeatures(k=200, seed=0).fit(splits["train"][0])
        X = {s: km.transform(v[0]).astype(np.float32) for s, v in splits.items()}
        if how == "std-unlabelled":
            mean, std = X["train"].mean(0), X["train"].std(0) + 1e-6
            X = {s: (v - mean) / std for s, v in X.items()}
        found = probe(X, y, preprocess="standardize" if how == "standardize" else None, wide=wide)
        results.add({**ident, "features": "kmeans200", "variant": how + suffix}, found, time.perf_counter() - start)
    for config in ndf_configs:
        flags = CONFIGS[config]
        cfg = ganlab.ModelConfig(image_size=32, channels=channels, ngf=flags["ngf"], ndf=flags["ndf"])
        torch.manual_seed(0)
        D = ganlab.Discriminator(cfg)
        name = f"random-d-ndf{flags['ndf']}"
        evaluate_d(results, {"data": data, "features": name, "run": "-", "epoch": 0}, D, splits, variants, wide)


def evaluate_d(results: Results, ident: dict, D, splits, variants=VARIANTS, wide=False) -> None:
    y = {s: v[1] for s, v in splits.items()}
    suffix = WIDE if wide else ""
    pool_of = {"all": "max", "last2": "max", "avg": "avg"}
    for bn, pool in sorted({(v[0], pool_of[v[1]]) for v in variants}):
        todo = [v for v in variants if (v[0], pool_of[v[1]]) == (bn, pool)
                and not results.has(**ident, variant="/".join(v) + suffix)]
        if not todo:
            continue
        blocks = {s: layer_blocks(D, v[0], bn, splits["train"][0], pool) for s, v in splits.items()}
        for variant in todo:
            start = time.perf_counter()
            X = variant_features(blocks, variant[1], variant[2])
            results.add({**ident, "variant": "/".join(variant) + suffix}, probe(X, y, wide=wide),
                        time.perf_counter() - start)


def evaluate_run(results: Results, data: str, run: Path, splits, epochs: list[int], variants=VARIANTS,
                 wide=False) -> None:
    import ganlab

    for epoch in epochs:
        path = run / f"epoch_{epoch:04d}.pt"
        gan = ganlab.load(path)
        evaluate_d(results, {"data": data, "features": "d", "run": run.name, "epoch": epoch}, gan.discriminator,
                   splits, variants, wide)
        print(f"probed {run.name} epoch {epoch}", flush=True)


# ------------------------------------------------------------------------------------------------ table

def table(results: Results) -> str:
    """Markdown: every feature set's val (and test) accuracy per variant, 10 per class and all labels."""
    rows = {}
    for row in results.done.values():
        key = (row["data"], row["features"], row["run"], row["epoch"], row["variant"])
        rows.setdefault(key, {})[row["split"], row["mode"]] = row
    configs = "\n".join(f"- `{name}`: " + ", ".join(f"{k} {v}" for k, v in flags.items())
                         for name, flags in CONFIGS.items())
    lines = ["# Probe recipe search: every configuration tried", "",
             "Written by `benchmarks/recipe_search.py --work WORK --table > benchmarks/recipe_results.md` from "
             "`WORK/results.jsonl`. Accuracy % of a linear L2-SVM (svm-probe's protocol) on `val` (the split the "
             "recipe was chosen on) and `test` (recorded, never used to choose), at 10 labels per class (mean ± "
             "std over 20 draws) and with all 6,000 training labels. `run`: DATASET-CONFIG-seedS; `epoch` 0: a "
             "baseline that does not train. Variants: BatchNorm statistics (`real`: recomputed on the training "
             "images; `running`), layers (`all`, `last2`; `avg`: all, average-pooled), scaling (`raw`, `layer`, "
             "`std`; `l2`: each image's vector to one length; `sqrt`: signed square root, then `l2`); `/wide-C`: "
             "C chosen from 1e-6 to 1 instead of svm-probe's 1e-4 to 0.1 (`--wide-c`). "
             "Configurations listed but without rows were not run. `g32d64-e30` and `g32d128-e30` rows probe the "
             "run folder of `ganlab run probe` with that D width linked in (`g32d64-e30`'s D on the grey datasets "
             "has 3 identical input channels; the other runs have 1).", "", configs, "",
             "| data | features | run | epoch | variant | val 10pc | val all | test 10pc | test all |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(rows):
        cells = []
        for split in ("val", "test"):
            for mode in ("10pc", "all"):
                r = rows[key].get((split, mode))
                cells.append("" if r is None else f"{100 * r['accuracy']:.2f}" +
                             (f" ± {100 * r['std']:.2f}" if mode != "all" else ""))
        lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--train-hooked"]:
        return train_hooked(json.loads(sys.argv[2]), sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for data, runs and results.jsonl")
    parser.add_argument("--dataset", choices=("mnist", "cifar", "cifar-grey"), default="mnist")
    parser.add_argument("--config", default="n32", help=f"one of {', '.join(CONFIGS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", help="epochs to probe, comma-separated (default: 5 evenly spread + last)")
    parser.add_argument("--variants", help="D's variants to probe, comma-separated BN/LAYERS/SCALE (default: all "
                        f"{len(VARIANTS)}; e.g. real/all/raw, the recipe's, for a quick look at a new configuration)")
    parser.add_argument("--wide-c", action="store_true", help="choose C from WIDE_GRID (1e-6 to 1) instead of "
                        "svm-probe's 1e-4 to 0.1; rows get the variant suffix /wide-C")
    parser.add_argument("--table", action="store_true", help="print the results table and stop")
    parser.add_argument("--prepare", action="store_true",
                        help="only write WORK/data/DATASET/{train,val,test} (class folders) for `ganlab run probe`")
    args = parser.parse_args()
    variants = [tuple(v.split("/")) for v in args.variants.split(",")] if args.variants else VARIANTS
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant {'/'.join(unknown[0])}; choose from {', '.join('/'.join(v) for v in VARIANTS)}")
    import torch

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.work / "results.jsonl")
    if args.table:
        print(table(results))
        return 0
    splits = dataset(args.work, args.dataset)
    if args.prepare:
        print(f"wrote {args.work / 'data' / args.dataset}: train/, val/ and test/ class folders")
        return 0
    baselines(args.work, results, args.dataset, splits, [args.config], variants, args.wide_c)
    run = train(args.work, args.dataset, args.config, args.seed)
    last = CONFIGS[args.config]["epochs"]
    epochs = ([int(e) for e in args.epochs.split(",")] if args.epochs
              else sorted({max(1, round(last * k / 5)) for k in range(1, 6)} | {2}))
    evaluate_run(results, args.dataset, run, splits, epochs, variants, args.wide_c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
