"""``ganlab fid A B``: the FID papers print, between two image folders, checkpoints or statistics files.

A ``.npz`` side is statistics (``mu`` and ``sigma``, as pytorch-fid writes them; ganlab's also carry how they were
made), a folder is images (read as RGB, subfolders included), any other file is a checkpoint that any installed
loader reads, and ``--num-samples`` images are drawn from its generator with ``--seed``.
"""
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

import ganlab
from ganlab import GanlabError, atomic_file

from . import fid

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass
class Side:
    mu: np.ndarray
    sigma: np.ndarray
    count: int | None
    features: np.ndarray | None = None
    made: dict[str, Any] = field(default_factory=dict)


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise GanlabError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return files


def folder_batches(files: list[Path], batch: int):
    """Batches of the files read as RGB, each of one image size."""
    import torch
    from PIL import Image, UnidentifiedImageError

    for start in range(0, len(files), batch):
        arrays = []
        for path in files[start:start + batch]:
            try:
                with Image.open(path) as image:
                    arrays.append(np.array(image.convert("RGB")))
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise GanlabError(f"{path}: not a readable image ({exc}); remove it or convert it") from None
        for shape in dict.fromkeys(a.shape for a in arrays):
            yield torch.from_numpy(np.stack([a for a in arrays if a.shape == shape])).permute(0, 3, 1, 2)


def checkpoint_batches(gan: Any, n: int, seed: int, batch: int):
    """The images ``gan.sample(n, seed)`` gives, made ``batch`` at a time."""
    import torch

    z = ganlab.sample_latent(gan.config, n, torch.Generator().manual_seed(seed))
    gan.generator.eval()
    with torch.no_grad():
        for chunk in z.split(batch):
            yield ganlab.to_uint8(gan.generator(chunk))


def _moments(path: Path, stored: dict, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma as float64, or a one-line refusal: a broken file would give a confident FID (0 from a
    negative sigma, infinity from an infinite mu)."""
    try:
        mu, sigma = stored["mu"].astype(np.float64), stored["sigma"].astype(np.float64)
    except (TypeError, ValueError):
        raise GanlabError(f"{path}: 'mu' and 'sigma' must hold numbers") from None
    if mu.shape != (dims,) or sigma.shape != (dims, dims):
        raise GanlabError(f"{path}: statistics of {mu.shape[0] if mu.ndim == 1 else mu.shape} features, but --dims "
                          f"is {dims}; give the matching --dims")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise GanlabError(f"{path}: 'mu' or 'sigma' holds NaN or infinite values; compute the statistics again")
    if (np.diag(sigma) < 0).any() or not np.allclose(sigma, sigma.T, rtol=1e-5, atol=1e-8 * np.abs(sigma).max()):
        raise GanlabError(f"{path}: 'sigma' is not a covariance matrix (it is not symmetric, or has a negative "
                          "variance); compute the statistics again")
    return mu, sigma


def read_statistics(path: Path, net: fid.FidNetwork) -> Side:
    """A pytorch-fid (or ganlab) ``.npz``; one whose dims or recorded network differ from ``net`` is refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise GanlabError(f"{path}: not a readable .npz file ({exc})") from None
    if "mu" not in stored or "sigma" not in stored:
        raise GanlabError(f"{path}: FID statistics need arrays 'mu' and 'sigma'; this file holds "
                          f"{', '.join(stored) or 'nothing'}")
    mu, sigma = _moments(path, stored, net.dims)
    ours = net.provenance()
    wrong = [key for key in (*ours, "count") if key in stored and stored[key].size != 1]
    if wrong:
        raise GanlabError(f"{path}: '{wrong[0]}' holds {stored[wrong[0]].size} values, not one")
    made = {key: stored[key].item() for key in ours if key in stored}
    for key, value in made.items():
        if value != ours[key]:
            raise GanlabError(f"{path}: made with {key} {value}, but this comparison uses {ours[key]}; "
                              "statistics from different settings do not compare")
    try:
        count = int(stored["count"]) if "count" in stored and int(stored["count"]) > 0 else None
    except (TypeError, ValueError):
        raise GanlabError(f"{path}: 'count' is {stored['count'].item()!r}, not a number of images") from None
    return Side(mu, sigma, count, made=made)


def open_side(spec: str, net: fid.FidNetwork, num_samples: int, seed: int) -> Callable[[], Side]:
    """What gives a side's statistics: everything a side needs is checked here, before either side's images are
    embedded."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise GanlabError(f"{spec}: no such file or folder")
    if path.suffix.lower() == ".npz":
        side = read_statistics(path, net)
        return lambda: side
    if path.is_dir():
        files = image_files(path)
        return partial(embed, path.name, folder_batches(files, fid.BATCH), len(files), net)
    gan = ganlab.load(path)
    return partial(embed, path.name, checkpoint_batches(gan, num_samples, seed, fid.BATCH), num_samples, net)


def embed(name: str, batches: Iterable, total: int, net: fid.FidNetwork) -> Side:
    from tqdm import tqdm

    from .metrics import feature_moments

    parts = []
    with tqdm(total=total, desc=f"FID Inception: {name}", unit="image", leave=False) as bar:
        for images in batches:
            parts.append(net.run(images)["features"])
            bar.update(len(images))
    features = np.concatenate(parts)
    if len(features) < 2:
        raise GanlabError(f"FID needs at least 2 images per side, not {len(features)}")
    return Side(*feature_moments(features), len(features), features, net.provenance())


def compare(a: Side, b: Side, net: fid.FidNetwork, seed: int) -> dict[str, Any]:
    """The result object: ``fid``, provenance, counts, warnings, and KID when both sides had images."""
    from .metrics import frechet_distance_from_moments, kid

    out = {"fid": frechet_distance_from_moments(a.mu, a.sigma, b.mu, b.sigma), **net.provenance(),
           "num_a": a.count, "num_b": b.count, "seed": seed, "warnings": []}
    counts = [c for c in (a.count, b.count) if c]
    if counts and min(counts) < net.dims:
        out["warnings"].append(f"{min(counts)} images is fewer than the {net.dims} feature dimensions: the covariance "
                               "is rank-deficient and FID is biased upward at this N; compare only FIDs at the same "
                               "N, and read KID (unbiased) beside it")
    if a.features is not None and b.features is not None:
        size = min(1000, len(a.features) // 2, len(b.features) // 2)
        if size >= 2:
            out["kid"], out["kid_std"] = kid(a.features, b.features, subsets=100, subset_size=size, seed=seed)
    return out


def _line(result: dict[str, Any]) -> str:
    kid_text = f", KID {result['kid']:.4g} ± {result['kid_std']:.2g}" if "kid" in result else ""
    counts = " vs ".join(str(c) if c else "? (statistics file)" for c in (result["num_a"], result["num_b"]))
    return (f"FID {result['fid']:.4f}{kid_text}  [{result['network']}, weights SHA-256 "
            f"{result['weights_sha256'][:12]}, resize {result['resize']}, {result['dims']} dims, {counts} images, "
            f"seed {result['seed']}]")


@click.command("fid")
@click.argument("a")
@click.argument("b")
@click.option("--weights", default=None, help=f"pytorch-fid's {fid.OFFICIAL} [default: torch's hub cache]")
@click.option("--weights-sha256", default=fid.OFFICIAL_SHA256_PREFIX, show_default=True,
              help="the weights file's SHA-256 (or its first 8+ hex digits); '' skips the check")
@click.option("--download", is_flag=True, help="download the official weights into torch's hub cache if missing")
@click.option("--num-samples", type=click.IntRange(2), default=10000, show_default=True,
              help="images drawn from a checkpoint side (papers usually report 50000)")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="seed of the checkpoint samples and of KID's subsets")
@click.option("--dims", type=click.Choice([str(d) for d in fid.DIMS]), default="2048", show_default=True,
              help="Inception features: 2048 (pool3, the FID papers print) or pytorch-fid's 64/192/768")
@click.option("--resize", type=click.Choice(fid.RESIZES), default="pytorch-fid", show_default=True,
              help="pytorch-fid's bilinear resize inside the network, or clean-fid's PIL bicubic")
@click.option("--save-stats", type=click.Path(path_type=Path), default=None,
              help="also write A's statistics to this new .npz (pytorch-fid reads it)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def fid_command(a, b, weights, weights_sha256, download, num_samples, seed, dims, resize, save_stats, as_json):
    """FID between A and B: image folders, checkpoints, or .npz statistics (pytorch-fid's network)."""
    if save_stats is not None:
        if save_stats.exists():
            raise GanlabError(f"{save_stats} exists; remove it or choose another --save-stats file")
        if save_stats.suffix.lower() != ".npz":
            raise GanlabError(f"--save-stats {save_stats}: name a .npz file (pytorch-fid reads statistics by that "
                              "suffix)")
        if not save_stats.resolve().parent.is_dir():
            raise GanlabError(f"--save-stats {save_stats}: the folder {save_stats.resolve().parent} does not exist")
    net = fid.network(weights, weights_sha256, dims=int(dims), resize=resize, device=ganlab.select_device("auto"),
                      download=download)
    side_a, side_b = [open_side(spec, net, num_samples, seed) for spec in (a, b)]
    side_a = side_a()
    if save_stats is not None:  # A's mu and sigma (what pytorch-fid reads), with how they were made
        if save_stats.exists():  # made while A was embedded: still never replaced
            raise GanlabError(f"{save_stats} exists; remove it or choose another --save-stats file")
        with atomic_file(save_stats, "wb") as handle:
            np.savez_compressed(handle, mu=side_a.mu, sigma=side_a.sigma, count=side_a.count or -1, seed=seed,
                                **side_a.made)
    result = compare(side_a, side_b(), net, seed)
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps(result) if as_json else _line(result))
