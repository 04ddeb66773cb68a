"""What ``ganlab dedup`` and ``hash-collisions`` compute: hash groups confirmed in pixels, the command's files, and
the collisions of G's samples with the training set."""
import json
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from ganlab import load_split

from . import MAX_RMS
from . import autoencoder as ae

GRID_GROUPS = 16  # groups drawn in groups.png
GRID_IMAGES = 8  # images per group drawn


def confirm_groups(images, groups: list[list[int]], max_rms: float, *, block: int = 1024) -> list[list[int]]:
    """Split each hash group into its connected sets of two or more images linked by a pixel RMS difference (over
    the hashed 32x32 RGB crop, values in [0, 1]) of at most ``max_rms``; ``max_rms >= 1`` keeps the hash groups.
    Distances are taken ``block`` rows at a time, so a coarse hash's huge group needs no group x group matrix."""
    if max_rms >= 1:
        return [list(g) for g in groups]
    confirmed = []
    for group in groups:
        x = images[group].reshape(len(group), -1).double() / 255
        pairs = torch.cat([(torch.cdist(x[s:s + block], x) / x.shape[1] ** 0.5 <= max_rms).nonzero()
                           + torch.tensor([s, 0]) for s in range(0, len(group), block)]).numpy()
        linked = csr_matrix((np.ones(len(pairs), dtype=bool), (pairs[:, 0], pairs[:, 1])), shape=(len(group),) * 2)
        parts = ae.duplicate_groups(connected_components(linked, directed=False)[1].tolist())
        confirmed += [[group[i] for i in part] for part in parts]
    return sorted(confirmed, key=min)


def _group_grid(images, groups: list[list[int]]):
    """One row per group (up to GRID_GROUPS), blank where a group is short."""
    shown = groups[:GRID_GROUPS]
    width = min(GRID_IMAGES, max(len(g) for g in shown))
    tiles = torch.ones(len(shown) * width, 3, ae.SIZE, ae.SIZE)
    for row, group in enumerate(shown):
        for col, i in enumerate(group[:width]):
            tiles[row * width + col] = images[i].float() / 255
    return make_grid(tiles, nrow=width, padding=2, pad_value=0.5)


def deduplicate(folder, dataset, split, data_root, limit, skip_bad, epochs, seed, max_rms, device) -> dict:
    """Train the autoencoder on the split, hash every image, group the duplicates (confirmed in pixels) and write
    the command's files into ``folder``; returns what duplicates.json holds."""
    read: dict = {}  # which positions of the split the images are, and which were unreadable
    images, _ = load_split(dataset, split, data_root=data_root, image_size=ae.SIZE, channels=3,
                           limit=limit, skip_bad=skip_bad, report=read)
    positions, unreadable = read["positions"], read["unreadable"]
    model, info = ae.train_autoencoder(images, epochs=epochs, seed=seed, device=device, progress=tqdm)
    bits = ae.code_bits(model, images, device=device)
    hashes = ae.hex_hashes(bits)
    hashed = ae.duplicate_groups(hashes)
    local = confirm_groups(images, hashed, max_rms)
    groups = [[positions[i] for i in group] for group in local]
    excluded = sorted(p for group in groups for p in sorted(group)[1:])  # each group keeps its first
    report = {"dataset": dataset, "split": split, "data_root": str(Path(data_root).resolve()) if data_root else None,
              "count": len(positions), "limit": limit, "groups": groups, "bits": [hashes[g[0]] for g in local],
              "excluded": len(excluded), "unreadable": unreadable, "hash_groups": len(hashed), "max_rms": max_rms,
              "bits_used": int((bits.any(0) & ~bits.all(0)).sum()),
              "margin_median": float(ae.relative_margins(model, images, device=device).median()),
              "autoencoder": {"epochs": epochs, "steps": info["steps"], "seed": seed,
                              "reconstruction_mse": info["loss"], "margin": ae.MARGIN}}
    where = f" --data-root {data_root}" if data_root else ""
    where += f" --split {split}" if split != "train" else ""
    ae.save_autoencoder(model, folder.staging / "autoencoder.pt")
    folder.write_text("duplicates.json", json.dumps(report, indent=1) + "\n")
    header = (f"# ganlab dedup: images to leave out of {dataset}/{split} ({len(positions)} hashed, "
              f"{len(groups)} duplicate groups; each group keeps its first image)\n"
              f"# use: ganlab train --dataset {dataset}{where} --exclude {folder.out / 'exclude.txt'}\n")
    folder.write_text("exclude.txt", header + "".join(f"{p}\n" for p in excluded))
    if groups:
        save_image(_group_grid(images, local), folder.staging / "groups.png")
    return report


def hash_collisions(model, generated, train, *, device="cpu", max_rms: float = MAX_RMS) -> dict:
    """Samples (uint8 N x 3 x 32 x 32) whose hash some training image has: ``collides`` (bool N), ``partner`` (the
    nearest such training image in pixels, or -1), ``copies`` (within ``max_rms`` of it) and their rates, against
    the references ``train_collision_rate`` (training images sharing a hash: chance and the data's own duplicates)
    and ``train_copy_rate`` (in a confirmed group); ``sample_self_collision_rate`` (mode collapse); ``bits_used``."""
    train_bits = ae.code_bits(model, train, device=device)
    train_hashes = ae.hex_hashes(train_bits)
    sample_hashes = ae.hex_hashes(ae.code_bits(model, generated, device=device))
    members = ae.members(train_hashes)
    partner = torch.full((len(generated),), -1, dtype=torch.int64)
    rms = torch.full((len(generated),), float("inf"), dtype=torch.float64)
    for i, key in enumerate(sample_hashes):
        if key in members:
            candidates = torch.tensor(members[key])
            diff = train[candidates].reshape(len(candidates), -1).double() - generated[i].reshape(1, -1).double()
            distances = diff.div(255).pow(2).mean(1).sqrt()
            partner[i], rms[i] = candidates[distances.argmin()], distances.min()
    copies = rms <= max_rms if max_rms < 1 else partner >= 0
    train_groups = [group for group in members.values() if len(group) > 1]
    in_confirmed = sum(len(g) for g in confirm_groups(train, train_groups, max_rms))
    n, m = max(len(generated), 1), max(len(train), 1)
    return {"collides": partner >= 0, "partner": partner, "copies": copies,
            "collision_rate": float((partner >= 0).sum()) / n, "copy_rate": float(copies.sum()) / n,
            "train_collision_rate": sum(len(g) for g in train_groups) / m, "train_copy_rate": in_confirmed / m,
            "sample_self_collision_rate": sum(len(g) for g in ae.duplicate_groups(sample_hashes)) / n,
            "bits_used": int((train_bits.any(0) & ~train_bits.all(0)).sum())}


def collision_table(found: dict, n: int, m: int, max_rms: float) -> list[list]:
    rows = [("generated samples whose hash a training image has", "collision_rate", n),
            ("training images whose hash another training image has (reference)", "train_collision_rate", m),
            (f"... of them within {max_rms:g} pixel RMS of that training image (copies)", "copy_rate", n),
            (f"... of them within {max_rms:g} pixel RMS of another (reference)", "train_copy_rate", m),
            ("generated samples whose hash another sample has", "sample_self_collision_rate", n)]
    return [[what, round(found[key] * of), of, round(found[key], 4)] for what, key, of in rows]


def colliding_pairs(found: dict, generated, train, examples: int):
    """A grid of up to ``examples`` colliding samples, each beside its partner, or None."""
    hits = found["collides"].nonzero().flatten()[:examples].tolist()
    if not hits:
        return None
    pairs = torch.stack([t for i in hits for t in (generated[i], train[found["partner"][i]])]).float() / 255
    return make_grid(pairs, nrow=8, pad_value=0.5)
