"""D's pooled features: every conv layer's post-activation output, max-pooled to 4x4 and concatenated.

The probe, the memorisation checks and the sample-quality metrics all measure images in this space.

BatchNorm statistics (``bn_stats``): ``"real"`` (the default, the paper's protocol) recomputes D's
BatchNorm statistics on real training images given as ``real_images`` (``ganlab.recompute_batchnorm``, on
a copy: the model passed in is not changed); without ``real_images`` D's stored statistics are used, which
are real-image ones when D came from ``recompute_batchnorm`` or ``ganlab import dcgan-code``. ``"running"``
always uses the running averages D kept during training (updated by real and generated batches).

The paper (section 5.1) uses all of D's conv features, max-pooled at each layer to a 4x4 spatial
grid, flattened and concatenated: 16 x 1792 = 28672 dims for its ImageNet-32 D, and
16 x (64 + 128 + 256) = 7168 for a 32x32 D with ndf 64. Features are cached by
(checkpoint, dataset, split, limit) so a second report does not recompute them, and written
into a memory-mapped .npy when large, so 50,000 x 28,672 (5.7 GB) never has to sit in RAM.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganlab.batchnorm import recompute_batchnorm
from ganlab.errors import GanlabError
from ganlab.images import to_unit_range

GRID = 4
BN_STATS = ("real", "running")
_LAST_COPY: dict[str, Any] = {}  # the last D recomputed on real images, so a train and a test split share it


def _check_bn_stats(bn_stats: str) -> None:
    if bn_stats not in BN_STATS:
        raise GanlabError(f"bn_stats must be one of {', '.join(BN_STATS)}, not {bn_stats!r}")


def images_fingerprint(images: torch.Tensor) -> str:
    """A short hash of a uint8 image tensor's shape and bytes: which real images BatchNorm statistics came from."""
    digest = hashlib.sha1(repr(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:16]


def _state_fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _with_bn_stats(discriminator: torch.nn.Module, bn_stats: str, real_images: torch.Tensor | None,
                   fingerprint: str | None, device: torch.device | str, batch_size: int,
                   progress: Callable[..., Any] | None) -> torch.nn.Module:
    """D as the features should see it: itself, or a copy with BatchNorm statistics of ``real_images``."""
    _check_bn_stats(bn_stats)
    if bn_stats == "running" or real_images is None:
        return discriminator
    key = (id(discriminator), fingerprint or images_fingerprint(real_images), _state_fingerprint(discriminator),
           str(device), batch_size)
    if _LAST_COPY.get("key") != key:
        _LAST_COPY.clear()
        _LAST_COPY.update(key=key, model=recompute_batchnorm(discriminator, real_images, batch_size=batch_size,
                                                             device=device, progress=progress))
    return _LAST_COPY["model"]


def feature_dim(discriminator: torch.nn.Module) -> int:
    """Length of one image's pooled feature vector (16 x sum of D's conv-layer widths)."""
    cfg = discriminator.config
    probe = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
    was_training = discriminator.training
    discriminator.eval()
    with torch.no_grad():
        _, maps = discriminator(probe.to(next(discriminator.parameters()).device), return_features=True)
    discriminator.train(was_training)
    return sum(m.shape[1] for m in maps) * GRID * GRID


def pool_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """Max-pool each N x C x H x W map to N x C x 4 x 4, flatten and concatenate -> N x (16 * sum C)."""
    return torch.cat([F.adaptive_max_pool2d(m, GRID).flatten(1) for m in maps], dim=1)


@torch.no_grad()
def discriminator_features(discriminator: torch.nn.Module, images: torch.Tensor, *, device: torch.device | str = "cpu",
            batch_size: int = 256, out: np.ndarray | None = None,
            progress: Callable[..., Any] | None = None, bn_stats: str = "real",
            real_images: torch.Tensor | None = None) -> np.ndarray:
    """Pooled D features of uint8 images (N x C x H x W, 0..255) as float32 N x feature_dim (BatchNorm in eval mode).

    ``bn_stats="real"`` (default) with ``real_images`` (uint8 real training images) normalises with
    BatchNorm statistics recomputed on those images, on a copy of D; without ``real_images``, and with
    ``bn_stats="running"``, D's stored statistics are used. ``out`` may be a preallocated (memory-mapped)
    array to fill; ``progress`` a tqdm-like factory.
    """
    discriminator = _with_bn_stats(discriminator, bn_stats, real_images, None, device, batch_size, progress)
    discriminator = discriminator.eval().to(device)
    n = len(images)
    if out is None:
        out = np.empty((n, feature_dim(discriminator)), dtype=np.float32)
    starts = range(0, n, batch_size)
    if progress is not None:
        starts = progress(starts, desc="D features", total=len(starts))
    for start in starts:
        batch = to_unit_range(images[start:start + batch_size]).to(device)
        _, maps = discriminator(batch, return_features=True)
        pooled = pool_maps(maps).float()
        if not bool(torch.isfinite(pooled).all()):
            raise GanlabError("D's features are NaN or infinite: the discriminator's weights or BatchNorm statistics "
                              "hold NaN or infinite values (a broken checkpoint)")
        out[start:start + len(batch)] = pooled.cpu().numpy()
    return out


def feature_cache_key(gan_path: Path | str, tag: str, dataset: str | None, split: str, limit: int | None,
                      bn_stats: str = "real") -> str:
    """Identifies a feature array: the checkpoint file (path, size, mtime), what D, which images, which BN stats."""
    _check_bn_stats(bn_stats)
    path = Path(gan_path)
    stat = path.stat() if path.exists() else None
    ident = {"path": str(path.resolve()), "size": stat.st_size if stat else None,
             "mtime": stat.st_mtime_ns if stat else None, "tag": tag, "dataset": dataset, "split": split,
             "limit": limit, "bn_stats": bn_stats}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def cached_features(cache: Any, key: str, discriminator: torch.nn.Module, images: torch.Tensor, *,
                    device: torch.device | str = "cpu", batch_size: int = 256,
                    progress: Callable[..., Any] | None = None, bn_stats: str = "real",
                    real_images: torch.Tensor | None = None) -> np.ndarray:
    """Features kept in ``cache`` (a ``ganlab.Cache``, e.g. ``ctx.cache``; None: computed every time) under
    ``key`` (from ``feature_cache_key``), else extracted and stored there.

    ``bn_stats`` and ``real_images`` are as for ``discriminator_features``; give ``feature_cache_key`` the
    same ``bn_stats``. When the statistics are recomputed, a hash of ``real_images`` joins the key, so features
    normalised by other real images are never reused. Large arrays are written straight into a memory-mapped
    file and returned memory-mapped (read-only); small ones are returned in memory.
    """
    _check_bn_stats(bn_stats)
    # the real images and the pass's batch size (deeper BatchNorm layers depend on it) name the statistics
    fingerprint = (f"{images_fingerprint(real_images)}b{batch_size}" if bn_stats == "real" and real_images is not None
                   else None)
    model = []

    def fill(out: np.ndarray) -> None:
        model.append(_with_bn_stats(discriminator, bn_stats, real_images, fingerprint, device, batch_size, progress))
        discriminator_features(model[0], images, device=device, batch_size=batch_size, out=out, progress=progress,
                               bn_stats="running")

    if cache is None:
        out = np.empty((len(images), feature_dim(discriminator)), dtype=np.float32)
        fill(out)
        return out
    ident = {"features": key, "bn": fingerprint, "rows": len(images)}
    return cache.filled_array("features", ident, (len(images), feature_dim(discriminator)), fill)
