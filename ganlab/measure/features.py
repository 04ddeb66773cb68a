"""D's pooled features: every conv layer's post-activation output, max-pooled to 4x4 and concatenated.

The probe, the memorisation checks and the sample-quality metrics measure images in this space (the paper,
section 5.1: 16 x 1792 = 28672 dims for its ImageNet-32 D; 16 x (64 + 128 + 256) = 7168 for a dcgan32 D).

BatchNorm statistics (``bn_stats``): ``"real"`` (the paper's protocol) uses statistics recomputed on the real
training images given as ``real_images`` (on a copy of D), else D's stored ones (real-image ones when D came from
``recompute_batchnorm`` or ``ganlab import dcgan-code``); ``"running"``: the running averages of training.
"""
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganlab.data.pixel_ranges import to_unit_range
from ganlab.errors import GanlabError
from ganlab.model.batchnorm import recompute_batchnorm
from ganlab.store.digest import content_digest, text_key

GRID = 4
BN_STATS = ("real", "running")
_LAST_COPY: dict[str, Any] = {}  # the last D recomputed on real images, so a train and a test split share it


def _check_bn_stats(bn_stats: str) -> None:
    if bn_stats not in BN_STATS:
        raise GanlabError(f"bn_stats must be one of {', '.join(BN_STATS)}, not {bn_stats!r}")


def feature_dim(discriminator: torch.nn.Module) -> int:
    """Length of one image's pooled feature vector (16 x the summed widths of D's conv layers before the logit)."""
    convs = [m for m in discriminator.main if isinstance(m, torch.nn.Conv2d)]
    return GRID * GRID * sum(m.out_channels for m in convs[:-1])


def pool_maps(maps: list[torch.Tensor]) -> torch.Tensor:
    """Max-pool each N x C x H x W map to N x C x 4 x 4, flatten and concatenate -> N x (16 * sum C)."""
    return torch.cat([F.adaptive_max_pool2d(m, GRID).flatten(1) for m in maps], dim=1)


@torch.no_grad()
def discriminator_features(discriminator: torch.nn.Module, images: torch.Tensor, *, device: torch.device | str = "cpu",
                           batch_size: int = 256, out: np.ndarray | None = None,
                           progress: Callable[..., Any] | None = None, bn_stats: str = "real",
                           real_images: torch.Tensor | None = None) -> np.ndarray:
    """Pooled D features of uint8 images (N x C x H x W, 0..255) as float32 N x feature_dim (BatchNorm in eval mode;
    ``bn_stats``, ``real_images``: see the module docstring). ``out``: an array (memory-mapped) to fill;
    ``progress``: a tqdm-like factory."""
    _check_bn_stats(bn_stats)
    if bn_stats == "real" and real_images is not None:  # reused while D, the real images and the pass agree
        key = (id(discriminator), content_digest(real_images), content_digest(*discriminator.state_dict().values()),
               str(device), batch_size)
        if _LAST_COPY.get("key") != key:
            _LAST_COPY.update(key=key, model=recompute_batchnorm(discriminator, real_images, batch_size=batch_size,
                                                                 device=device, progress=progress))
        discriminator = _LAST_COPY["model"]
    discriminator = discriminator.eval().to(device)
    if out is None:
        out = np.empty((len(images), feature_dim(discriminator)), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    if progress is not None:
        starts = progress(starts, desc="D features", total=len(starts))
    for start in starts:
        batch = to_unit_range(images[start:start + batch_size]).to(device)
        pooled = pool_maps(discriminator(batch, return_features=True)[1]).float()
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
    return text_key({"path": str(path.resolve()), "size": stat.st_size if stat else None,
                     "mtime": stat.st_mtime_ns if stat else None, "tag": tag, "dataset": dataset, "split": split,
                     "limit": limit, "bn_stats": bn_stats})


def cached_features(cache: Any, key: str, discriminator: torch.nn.Module, images: torch.Tensor, *,
                    device: torch.device | str = "cpu", batch_size: int = 256,
                    progress: Callable[..., Any] | None = None, bn_stats: str = "real",
                    real_images: torch.Tensor | None = None) -> np.ndarray:
    """``discriminator_features`` kept in ``cache`` (a ``ganlab.Cache``, e.g. ``ctx.cache``; None: computed every
    time) under ``key`` (from ``feature_cache_key``, given the same ``bn_stats``) and a digest of ``images``;
    recomputed statistics add a digest of ``real_images`` and the batch size. Large arrays are returned
    memory-mapped (read-only)."""
    _check_bn_stats(bn_stats)
    options = dict(device=device, batch_size=batch_size, progress=progress, bn_stats=bn_stats, real_images=real_images)
    if cache is None:
        return discriminator_features(discriminator, images, **options)
    # deeper BatchNorm layers' statistics depend on the pass's batch size as well as on the real images
    statistics = (f"{content_digest(real_images)}b{batch_size}" if bn_stats == "real" and real_images is not None
                  else None)
    # the images' own digest: the key names the data by dataset and split, and a folder's images can change
    return cache.filled_array("features", {"features": key, "bn": statistics, "images": content_digest(images)},
                              (len(images), feature_dim(discriminator)),
                              lambda out: discriminator_features(discriminator, images, out=out, **options))
