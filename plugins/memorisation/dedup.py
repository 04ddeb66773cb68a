"""Command ``ganlab dedup`` and evaluator ``hash-collisions``: the paper's autoencoder-hash dedup (section 4.1.1).

Radford et al. removed near-duplicates from their faces and bedrooms data with a 3072-128-3072 denoising,
dropout-regularised ReLU autoencoder fitted to 32x32 centre crops: the code layer, binarised at the ReLU's
threshold, is a semantic hash, and images with equal hashes are duplicates. ``autoencoder.py`` holds the model,
its training, the hash, and the two steps added to the paper's training (a margin hinge and a threshold
calibration) with the measurements that led to them.

``ganlab dedup --dataset NAME --out DIR`` reads the split at 32x32 RGB (shorter side resized, centre-cropped, as
every ganlab dataset is read), trains the autoencoder, hashes every image and writes

- ``DIR/duplicates.json``: ``groups`` (lists of image positions in the whole split, in ``ganlab.open_split``
  order), ``bits`` (each group's 128-bit hash, 32 hex digits), ``dataset``, ``split``, ``count`` (images hashed),
  ``excluded``, ``unreadable`` (positions skipped with ``--skip-bad-images``), ``bits_used`` (code bits that are 1
  on some images and 0 on others), ``margin_median`` (per image the smallest distance of a pre-activation from its
  threshold in weight lengths, the median over images: a change smaller than this leaves the median image's hash
  as it is) and the training settings;
- ``DIR/exclude.txt``: for each group every image but the first, one position per line, for
  ``ganlab train --exclude DIR/exclude.txt`` (delete the lines of groups you judge different pictures);
- ``DIR/groups.png``: the first 16 groups, one per row; ``DIR/autoencoder.pt``: the autoencoder's state dict, a
  plain dict of tensors (``torch.load(weights_only=True)``), for
  ``--set hash-collisions.autoencoder=DIR/autoencoder.pt``.

``--limit N`` hashes the same N images that ``ganlab train --limit N`` trains on (the first N of the fixed
permutation ``numpy.random.default_rng(0)``, as ``ganlab.load_split`` documents); positions stay those of the whole
split. Training runs at least 150 steps, so small sets are fitted too.

Limits. Identical images always hash together. Copies with +-2 grey levels of noise did in each of 30 runs on the
test's small set and in about 80% of cases among CIFAR-10's 50,000 training images; JPEG re-encodings (quality 90)
in about 70%; one-pixel shifts of photographs rarely (under 6%). Crops, flips and recolouring are not looked for.
On CIFAR-10's training set alone (5 epochs, seed 0) ``ganlab dedup`` finds no group at all: it misses the few
re-coloured copies a person would call duplicates. A stronger margin finds those, but among many more groups of
different pictures with one hash (``autoencoder.py`` has the numbers). Look at groups.png before excluding.

Confirmation (added to the paper's rule). The hash is coarse where images carry little detail: on the embedded
digits only 16-18 of the 128 bits vary, and the hash alone put 748 of 898 training images into 99 groups of
different digits. So the images of a hash group are kept together only when they are linked by a pixel RMS
difference of at most ``--max-rms`` (default 0.04 on a 0-1 scale, about 10 grey levels; +-2 grey levels of noise
is 0.006, a JPEG re-encoding at quality 90 at most 0.019 on 200 CIFAR-10 images), which leaves 0 groups on digits.
``--max-rms 1`` keeps the hash's groups. ``hash_groups`` in duplicates.json counts the groups before confirmation.

Evaluator ``hash-collisions`` (needs the training set) hashes ``samples`` generated images (G's output as
``ganlab.to_uint8`` rounds it; other sizes resized to 32x32 with torch's antialiased bilinear interpolation, grey
repeated to RGB) and ``train_limit`` training images read at 32x32 RGB. Metrics:

- ``collision_rate``: the fraction of samples whose hash equals some training image's hash: copies of training
  images, and false collisions (read it against the reference below).
- ``train_collision_rate``: the reference, the fraction of training images whose hash another training image shares
  (duplicates in the data, and false collisions of the hash). A new picture from the same distribution collides
  with the training set about this often, so a collision_rate near it is what chance and the data's own duplicates
  explain; well above it, G reproduces training images. The grid shows colliding pairs to judge by eye.
- ``copy_rate`` and ``train_copy_rate``: the same two with the confirmation ``ganlab dedup`` applies, a colliding
  pair counted only when it is within ``max_rms`` pixel RMS (default 0.04): where the hash is coarse (digits:
  a train_collision_rate of 0.94), these are the rates to read.
- ``sample_self_collision_rate``: the fraction of samples sharing a hash with another sample (mode collapse).
- ``bits_used``: of the 128 code bits, those that are 1 on some training images and 0 on others.

With ``autoencoder`` empty the evaluator trains one itself (``epochs`` epochs on the ``train_limit`` training
images, seed = the report's seed) and keeps it in the cache (``ctx.cache``, part ``hash-collisions``), keyed by
dataset, data folder, split, limit, epochs and seed; give ``ganlab dedup``'s ``autoencoder.pt`` to use the one
fitted to the whole split.
"""
from __future__ import annotations

import click

from ganlab import Evaluator, Image, Option, Result, Table, hookimpl

from . import autoencoder as ae

GRID_GROUPS = 16  # groups drawn in groups.png
GRID_IMAGES = 8  # images per group drawn
MAX_RMS = 0.04  # confirming a hash group: at most about 10 grey levels RMS apart


class _Positions:
    """Items (uint8 3 x 32 x 32, kind, reason) of chosen positions: kind 0 read, 1 unreadable (skip), 2 error."""

    def __init__(self, dataset, positions: list[int], skip_bad: bool):
        self.dataset, self.positions, self.skip_bad = dataset, positions, skip_bad

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        import torch

        from ganlab import GanlabError

        try:
            return self.dataset[self.positions[index]][0], 0, ""
        except GanlabError as exc:
            return torch.zeros(3, ae.SIZE, ae.SIZE, dtype=torch.uint8), 1 if self.skip_bad else 2, str(exc)


def read_positions(dataset: str, split: str, *, root=None, limit: int | None = None, skip_bad: bool = False,
                   progress: bool = True):
    """(uint8 N x 3 x 32 x 32, positions in the whole split (list), unreadable positions (list), first reason)."""
    import os

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ganlab import GanlabError, open_split

    data = open_split(dataset, split, root=root, image_size=ae.SIZE, channels=3)
    positions = np.arange(len(data))
    if limit is not None and limit < len(data):  # load_split's subset: the first `limit` of a fixed permutation
        positions = np.sort(np.random.default_rng(0).permutation(len(data))[:limit])
    positions = positions.tolist()
    workers = min(2, os.cpu_count() or 1) if len(positions) > 2000 else 0
    loader = DataLoader(_Positions(data, positions, skip_bad), batch_size=256, num_workers=workers)
    images, kept, unreadable, first = [], [], [], None
    done = 0
    with tqdm(total=len(positions), desc=f"reading {dataset}/{split}", unit="img", disable=not progress) as bar:
        for batch, kinds, reasons in loader:
            for i, (kind, reason) in enumerate(zip(kinds.tolist(), reasons)):
                if kind == 2:
                    raise GanlabError(f"{reason} (give --skip-bad-images to skip unreadable images)")
                (unreadable if kind else kept).append(positions[done + i])
                first = first or (reason if kind else None)
            images.append(batch[kinds == 0])
            done += len(kinds)
            bar.update(len(kinds))
    if not kept:
        raise GanlabError(f"no readable images in {dataset}/{split}" + (f" (first: {first})" if first else ""))
    return torch.cat(images), kept, unreadable, first


def confirm_groups(images, groups: list[list[int]], max_rms: float, *, block: int = 1024) -> list[list[int]]:
    """Split each hash group into the images linked by a pixel RMS difference <= ``max_rms`` (0-1 scale).

    A hash is a coarse code: on small or low-detail sets (digits: 16 of 128 bits vary) different pictures share
    one. Two images are linked when the root mean square of their difference, over the 32x32 RGB crop that was
    hashed with values in [0, 1], is at most ``max_rms``; a confirmed group is a connected set of two or more
    linked images. ``max_rms >= 1`` keeps every hash group as it is (the paper's rule). Distances are computed
    ``block`` rows at a time, so a group of most of the set (a coarse hash) never needs a group x group matrix.
    """
    import numpy as np
    import torch
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    if max_rms >= 1:
        return [list(g) for g in groups]
    confirmed = []
    for group in groups:
        x = images[group].reshape(len(group), -1).double() / 255
        rows, cols = [], []
        for start in range(0, len(group), block):
            near = (torch.cdist(x[start:start + block], x) / x.shape[1] ** 0.5 <= max_rms).nonzero()
            rows.append(near[:, 0] + start)
            cols.append(near[:, 1])
        rows, cols = torch.cat(rows).numpy(), torch.cat(cols).numpy()
        linked = csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(group), len(group)))
        _, labels = connected_components(linked, directed=False)
        parts: dict[int, list[int]] = {}
        for member, label in zip(group, labels.tolist()):
            parts.setdefault(label, []).append(member)
        confirmed += [part for part in parts.values() if len(part) > 1]
    return sorted(confirmed, key=min)


def exclusion(groups: list[list[int]]) -> list[int]:
    """Every member of every group but its first (lowest) position, sorted: the images to leave out."""
    return sorted(p for group in groups for p in sorted(group)[1:])


def _group_grid(images, groups: list[list[int]]):
    """Float 3 x H x W grid in [0, 1]: one row per group (up to GRID_GROUPS), blank where a group is short."""
    import torch
    from torchvision.utils import make_grid

    shown = groups[:GRID_GROUPS]
    width = min(GRID_IMAGES, max(len(g) for g in shown))
    tiles = torch.ones(len(shown) * width, 3, ae.SIZE, ae.SIZE)
    for row, group in enumerate(shown):
        for col, i in enumerate(group[:width]):
            tiles[row * width + col] = images[i].float() / 255
    return make_grid(tiles, nrow=width, padding=2, pad_value=0.5)


def _deduplicate(dataset, split, data_root, limit, skip_bad_images, epochs, seed, max_rms, device) -> dict:
    """Train the autoencoder on the split, hash every image and group the duplicates (confirmed in pixels)."""
    from tqdm import tqdm

    images, positions, unreadable, first = read_positions(dataset, split, root=data_root, limit=limit,
                                                          skip_bad=skip_bad_images)
    if unreadable:
        click.echo(f"skipped {len(unreadable)} unreadable images (first: {first})", err=True)
    model, info = ae.train_autoencoder(images, epochs=epochs, seed=seed, device=device, progress=tqdm)
    bits = ae.code_bits(model, images, device=device)
    hashes = ae.hex_hashes(bits)
    hashed = ae.duplicate_groups(hashes)
    local = confirm_groups(images, hashed, max_rms)
    groups = [[positions[i] for i in group] for group in local]
    margins = ae.relative_margins(model, images, device=device)
    return {"images": images, "positions": positions, "unreadable": unreadable, "model": model, "info": info,
            "bits": bits, "hashes": hashes, "hashed": hashed, "local": local, "groups": groups,
            "excluded": exclusion(groups), "margin_median": float(margins.median()), "epochs": epochs,
            "seed": seed, "limit": limit, "max_rms": max_rms}


def _write_dedup(folder, found: dict, dataset: str, split: str, data_root) -> None:
    """duplicates.json, exclude.txt, autoencoder.pt and (when there are groups) groups.png into the staging folder."""
    import json
    from pathlib import Path

    from torchvision.utils import save_image

    bits, groups, excluded = found["bits"], found["groups"], found["excluded"]
    report = {"dataset": dataset, "split": split, "data_root": str(Path(data_root).resolve()) if data_root else None,
              "count": len(found["positions"]), "limit": found["limit"], "groups": groups,
              "bits": [found["hashes"][g[0]] for g in found["local"]], "excluded": len(excluded),
              "unreadable": found["unreadable"], "hash_groups": len(found["hashed"]), "max_rms": found["max_rms"],
              "bits_used": int((bits.any(0) & ~bits.all(0)).sum()), "margin_median": found["margin_median"],
              "autoencoder": {"epochs": found["epochs"], "steps": found["info"]["steps"], "seed": found["seed"],
                              "reconstruction_mse": found["info"]["loss"], "margin": ae.MARGIN}}
    where = f" --data-root {data_root}" if data_root else ""
    where += f" --split {split}" if split != "train" else ""
    ae.save_autoencoder(found["model"], folder.staging / "autoencoder.pt")
    folder.write_text("duplicates.json", json.dumps(report, indent=1) + "\n")
    header = (f"# ganlab dedup: images to leave out of {dataset}/{split} ({len(found['positions'])} hashed, "
              f"{len(groups)} duplicate groups; each group keeps its first image)\n"
              f"# use: ganlab train --dataset {dataset}{where} --exclude {folder.out / 'exclude.txt'}\n")
    folder.write_text("exclude.txt", header + "".join(f"{p}\n" for p in excluded))
    if groups:
        save_image(_group_grid(found["images"], found["local"]), folder.staging / "groups.png")


@click.command("dedup")
@click.option("--dataset", required=True, help="dataset name (see `ganlab plugins`)")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="folder holding the dataset files")
@click.option("--split", default="train", show_default=True, help="split to deduplicate")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the results")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True,
              help=f"autoencoder training epochs (at least {ae.MIN_STEPS} steps)")
@click.option("--limit", type=click.IntRange(1), default=None, help="hash the N images `ganlab train --limit N` uses")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="training seed")
@click.option("--max-rms", type=click.FloatRange(0), default=MAX_RMS, show_default=True,
              help="a hash group's images must differ by at most this pixel RMS (0-1 scale); 1: the hash alone")
@click.option("--skip-bad-images", is_flag=True, help="skip unreadable image files (listed) instead of stopping")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps")
def dedup_command(dataset, data_root, split, out, epochs, limit, seed, max_rms, skip_bad_images, device) -> None:
    """Find near-duplicate training images with the paper's autoencoder hash (section 4.1.1)."""
    from pathlib import Path

    from ganlab import StagedFolder, select_device

    torch_device = select_device(device)
    legacy = lambda f: (f / "duplicates.json").is_file() and (f / "exclude.txt").is_file()  # noqa: E731
    with StagedFolder(out, "dedup", sources=[Path(data_root)] if data_root else [], legacy=legacy) as folder:
        found = _deduplicate(dataset, split, data_root, limit, skip_bad_images, epochs, seed, max_rms, torch_device)
        _write_dedup(folder, found, dataset, split, data_root)
        out = folder.commit()
    positions, groups, excluded, hashed = found["positions"], found["groups"], found["excluded"], found["hashed"]
    written = ["duplicates.json", "exclude.txt", "autoencoder.pt"] + (["groups.png"] if groups else [])
    click.echo(f"{len(positions)} images hashed, {len(groups)} duplicate groups, {len(excluded)} images excluded")
    if len(hashed) != len(groups):
        click.echo(f"({len(hashed)} groups shared a hash; images differing by more than {max_rms:g} RMS were "
                   f"split off: --max-rms 1 keeps the hash's groups)")
    click.echo(f"wrote {', '.join(str(out / name) for name in written)}")


def hash_collisions(model, generated, train, *, device="cpu", max_rms: float = MAX_RMS) -> dict:
    """Collisions of generated images' hashes with training images' hashes (uint8 N x 3 x 32 x 32 each).

    Returns ``collides`` (bool N: the sample's hash is some training image's), ``partner`` (int64 N: of the
    training images with that hash, the one nearest in pixels, -1 if none), ``copies`` (bool N: colliding and within
    ``max_rms`` pixel RMS of the partner, as ``confirm_groups`` links images), ``collision_rate``, ``copy_rate``,
    ``train_collision_rate`` (fraction of training images sharing their hash with another),
    ``train_copy_rate`` (fraction in a confirmed group), ``sample_self_collision_rate`` and ``bits_used``.
    """
    import torch

    train_bits = ae.code_bits(model, train, device=device)
    train_hashes = ae.hex_hashes(train_bits)
    sample_hashes = ae.hex_hashes(ae.code_bits(model, generated, device=device))
    members: dict[str, list[int]] = {}
    for i, key in enumerate(train_hashes):
        members.setdefault(key, []).append(i)
    partner = torch.full((len(generated),), -1, dtype=torch.int64)
    rms = torch.full((len(generated),), float("inf"), dtype=torch.float64)
    for i, key in enumerate(sample_hashes):
        if key in members:
            candidates = torch.tensor(members[key])
            diff = train[candidates].reshape(len(candidates), -1).double() - generated[i].reshape(1, -1).double()
            distances = diff.div(255).pow(2).mean(1).sqrt()
            best = int(distances.argmin())
            partner[i], rms[i] = candidates[best], distances[best]
    copies = rms <= max_rms if max_rms < 1 else partner >= 0
    train_groups = ae.duplicate_groups(train_hashes)
    in_train = sum(len(g) for g in train_groups)
    in_confirmed = sum(len(g) for g in confirm_groups(train, train_groups, max_rms))
    in_samples = sum(len(g) for g in ae.duplicate_groups(sample_hashes))
    n, m = max(len(generated), 1), max(len(train), 1)
    return {"collides": partner >= 0, "partner": partner, "copies": copies,
            "collision_rate": float((partner >= 0).sum()) / n, "copy_rate": float(copies.sum()) / n,
            "train_collision_rate": in_train / m, "train_copy_rate": in_confirmed / m,
            "sample_self_collision_rate": in_samples / n,
            "bits_used": int((train_bits.any(0) & ~train_bits.all(0)).sum())}


class HashCollisions(Evaluator):
    name = "hash-collisions"
    description = "Samples whose autoencoder hash (the paper's dedup, 4.1.1) equals a training image's hash"
    needs = ("train_set",)
    # the training set's own rates are the reference, not a score
    directions = {"collision_rate": "lower", "copy_rate": "lower", "sample_self_collision_rate": "lower", "*": None}
    options = {"autoencoder": Option("", "autoencoder.pt from `ganlab dedup`; empty: train one here (cached)"),
               "samples": Option(1000, "generated samples hashed", min=1),
               "train_limit": Option(10000, "training images hashed (and trained on); 0: all", min=0),
               "epochs": Option(5, "epochs when the autoencoder is trained here", min=1),
               "examples": Option(8, "colliding pairs shown", min=0),
               "max_rms": Option(MAX_RMS, "a collision is a copy when the pair is within this pixel RMS (0-1 scale)",
                                 min=0.0)}

    def run(self, ctx):
        import torch
        from torchvision.utils import make_grid

        from ganlab import load_split, to_uint8

        o = ctx.options
        limit = o["train_limit"] or None
        train, _ = load_split(ctx.dataset, ctx.train_split, root=ctx.data_root, image_size=ae.SIZE, channels=3,
                              limit=limit, progress=not ctx.quiet, skip_bad=ctx.skip_bad_images)
        model, where = self._autoencoder(ctx, train, limit)
        generated = ae.hash_input(to_uint8(ctx.gan.sample(o["samples"], seed=ctx.seed)))
        found = hash_collisions(model, generated, train, device=ctx.device, max_rms=o["max_rms"])
        hits = found["collides"].nonzero().flatten()[:o["examples"]]
        n, m = len(generated), len(train)
        rows = [["generated samples whose hash a training image has", int(found["collides"].sum()), n,
                 round(found["collision_rate"], 4)],
                ["training images whose hash another training image has (reference)",
                 round(found["train_collision_rate"] * m), m, round(found["train_collision_rate"], 4)],
                [f"... of them within {o['max_rms']:g} pixel RMS of that training image (copies)",
                 int(found["copies"].sum()), n, round(found["copy_rate"], 4)],
                [f"... of them within {o['max_rms']:g} pixel RMS of another (reference)",
                 round(found["train_copy_rate"] * m), m, round(found["train_copy_rate"], 4)],
                ["generated samples whose hash another sample has", round(found["sample_self_collision_rate"] * n),
                 n, round(found["sample_self_collision_rate"], 4)]]
        result = Result(metrics={"collision_rate": found["collision_rate"],
                                 "train_collision_rate": found["train_collision_rate"],
                                 "copy_rate": found["copy_rate"], "train_copy_rate": found["train_copy_rate"],
                                 "sample_self_collision_rate": found["sample_self_collision_rate"],
                                 "bits_used": found["bits_used"], "samples": n, "train_images": m},
                        tables=[Table(f"128-bit autoencoder hashes ({ctx.train_split} split; {where})",
                                      ["what", "count", "of", "rate"], rows)],
                        text=[f"Each image's hash is the sign pattern of the paper's dedup autoencoder's 128 code "
                              f"units at 32x32 RGB ({found['bits_used']} of the 128 bits vary over these training "
                              "images). A sample that shares a training image's hash is a (near) copy of it, or a "
                              "false collision: the training set's own rate is the reference for the latter. "
                              "A collision whose images are also close in pixels (within max_rms) is counted as a "
                              "copy, as `ganlab dedup` confirms its groups."])
        if len(hits):
            pairs = torch.stack([t for i in hits.tolist()
                                 for t in (generated[i], train[found["partner"][i]])]).float() / 255
            result.images.append(Image("colliding pairs: each generated sample, then the training image with its "
                                       "hash (32x32 RGB, as hashed)", make_grid(pairs, nrow=8, pad_value=0.5)))
        return result

    def _autoencoder(self, ctx, train, limit):
        from pathlib import Path

        if ctx.options["autoencoder"]:
            path = Path(ctx.options["autoencoder"]).expanduser()
            return ae.load_autoencoder(path), f"autoencoder {path}"
        root = str(Path(ctx.data_root).resolve()) if ctx.data_root else None
        trained = []

        def make(path):
            progress = None if ctx.quiet else ctx.progress
            model, _ = ae.train_autoencoder(train, epochs=ctx.options["epochs"], seed=ctx.seed, device=ctx.device,
                                            progress=progress)
            ae.save_autoencoder(model, path)
            trained.append(True)

        ident = [ctx.dataset, root, ctx.train_split, limit, ctx.options["epochs"], ctx.seed, ae.MARGIN]
        model = ctx.cache.file("hash-collisions", ident, "pt", make, ae.load_autoencoder)
        if trained:
            return model, f"autoencoder trained here on {len(train)} images for {ctx.options['epochs']} epochs"
        return model, f"cached autoencoder trained on {len(train)} images"


@hookimpl
def ganlab_register_commands(cli):
    cli.add_command(dedup_command)


@hookimpl
def ganlab_register_evaluators(register):
    register(HashCollisions())
