"""The built-in feature spaces: the trained D, a random D, raw pixels, torchvision's Inception-v3 from a local file,
and (``fid_components.py``) pytorch-fid's FID Inception.

``torchvision-inception`` is torchvision's ``inception_v3`` with the state dict at ``inception_weights`` (never
downloaded), its 2048-d pool3 output: an ImageNet classifier whose features differ from the FID network's by several
percent, so its FD is not a published FID. The file's SHA-256 must start with ``inception_sha256``; the default is
the prefix in the official file's name, which torch.hub checks on download. Images go in as 299 x 299 RGB in [-1, 1]
with ``transform_input=False``: exactly what torchvision's own pipeline for these weights (ImageNet mean/std, then
``transform_input=True``) feeds the first convolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganlab import FeatureSpace, GanlabError, cached_features, discriminator_features, feature_cache_key

OFFICIAL_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
OFFICIAL_SHA256_PREFIX = "0cc3c7bd"
INCEPTION_SIZE = 299
INCEPTION_BATCH = 32


def _kept(space: Any, key: Any, build: Any) -> Any:
    """The model ``space`` built last if it was built for ``key``, else ``build()`` (kept for next time)."""
    if space._model is None or space._model[0] != key:
        space._model = (key, build())
    return space._model[1]


class DiscriminatorSpace(FeatureSpace):
    name = "discriminator"
    description = "the trained D's pooled conv features (every layer max-pooled to 4x4): the paper's representation"

    def discriminator(self, ctx):
        return ctx.gan.discriminator

    def available(self, ctx):
        return None if ctx.gan.discriminator is not None else "needs the checkpoint's discriminator"

    def embed(self, ctx, images):
        return discriminator_features(self.discriminator(ctx), images, device=ctx.device,
                                      batch_size=ctx.options.get("batch_size", 256))

    def embed_split(self, ctx, images, split: str, tag: str):
        """Features of images drawn from a dataset split (``tag`` says which), cached per checkpoint file."""
        if not Path(ctx.gan.path).is_file():  # a model built in memory has no file to key a cache on
            return self.embed(ctx, images)
        key = feature_cache_key(ctx.gan.path, f"D:{tag}", ctx.dataset, split, len(images))
        return cached_features(ctx.cache, key, ctx.gan.discriminator, images, device=ctx.device,
                               batch_size=ctx.options.get("batch_size", 256))


class RandomDiscriminatorSpace(DiscriminatorSpace):
    name = "random-discriminator"
    description = "the same pooled features from a randomly initialised D of the same architecture (a baseline)"
    embed_split = None  # no checkpoint file holds this D, so there is nothing to key a cache on

    def __init__(self):
        self._model: tuple[Any, Any] | None = None

    def available(self, ctx):
        return None

    def discriminator(self, ctx):
        """A D with the paper's random initialisation for this config and the report's seed (built once), seeded
        inside ``fork_rng`` so that the caller's random state is left alone."""
        from ganlab import Discriminator

        def build():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(ctx.seed))
                return Discriminator(ctx.gan.config).eval().to(ctx.device)

        return _kept(self, (repr(ctx.gan.config), int(ctx.seed), str(ctx.device)), build)


class PixelSpace(FeatureSpace):
    name = "pixels"
    description = "raw pixels scaled to [0, 1], flattened (C x H x W values per image)"

    def embed(self, ctx, images):
        return (images.reshape(len(images), -1).float() / 255).numpy()


class InceptionSpace(FeatureSpace):
    name = "torchvision-inception"
    description = ("torchvision's ImageNet Inception-v3 classifier, pool3 (2048-d), from a local weights file: not "
                   "the network published FIDs use (that is fid-inception)")

    def __init__(self):
        self._model: tuple[Any, Any] | None = None

    def available(self, ctx):
        if not str(ctx.options.get("inception_weights", "") or "").strip():
            return (f"set sample-quality.inception_weights=FILE, a local copy of torchvision's {OFFICIAL_INCEPTION} "
                    "(nothing is downloaded)")
        return None

    def weights(self, ctx) -> tuple[Path, str]:
        """(the weights file, its SHA-256) after checking it against ``inception_sha256``."""
        from .fid import checked_sha256, expected_sha256

        path = Path(str(ctx.options.get("inception_weights", "")).strip()).expanduser()
        if not path.is_file():
            raise GanlabError(f"sample-quality.inception_weights={path}: no such file; give a local copy of "
                              f"torchvision's {OFFICIAL_INCEPTION}")
        option = "--set sample-quality.inception_sha256"
        expected = expected_sha256(ctx.options.get("inception_sha256", OFFICIAL_SHA256_PREFIX), option)
        return path, checked_sha256(path, expected, official=f"torchvision's {OFFICIAL_INCEPTION}", option=option)

    def note(self, ctx, n: int) -> str:
        return (f"torchvision-inception: torchvision inception_v3 (ImageNet classifier), weights SHA-256 "
                f"{self.weights(ctx)[1]}, bilinear resize to 299, 2048 dims, {n} images per set, seed {ctx.seed}; "
                "its FD cannot be compared with published FIDs.")

    def embed(self, ctx, images):
        path, actual = self.weights(ctx)
        model = _kept(self, (actual, str(ctx.device)), lambda: _load_inception(path).to(ctx.device))
        out = np.empty((len(images), 2048), dtype=np.float32)
        step = max(1, min(INCEPTION_BATCH, ctx.options.get("batch_size", 256)))
        starts = range(0, len(images), step)
        if ctx.progress is not None and not ctx.quiet:
            starts = ctx.progress(starts, desc="Inception features", total=len(starts))
        with torch.no_grad():
            for a in starts:
                x = images[a:a + step].to(ctx.device).float() / 127.5 - 1  # [-1, 1]: see the module doc
                x = F.interpolate(x.expand(-1, 3, -1, -1), size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                  align_corners=False)
                out[a:a + len(x)] = model(x).float().cpu().numpy()
        return out

    def embed_split(self, ctx, images, split: str, tag: str):
        path, actual = self.weights(ctx)
        size = "x".join(str(s) for s in images.shape[1:])
        tag = f"inception:{actual}:{size}:{tag}:{Path(ctx.data_root).resolve() if ctx.data_root else ''}"
        key = feature_cache_key(path, tag, ctx.dataset, split, len(images))
        return ctx.cache.array("features", {"inception": key}, lambda: self.embed(ctx, images), rows=len(images))


def _load_inception(path: Path):
    """torchvision's inception_v3 with the state dict at ``path`` and ``fc`` replaced by the identity (so that it
    gives the 2048 pooled features; dropout is off in eval mode); any bad file is a one-line GanlabError."""
    import torchvision

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file: one line, no traceback
        raise GanlabError(f"{path}: cannot be read as a state dict saved with torch.save "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise GanlabError(f"{path}: holds a {type(state).__name__}, not a state dict")
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GanlabError(f"{path}: not torchvision inception_v3 weights ({str(exc).splitlines()[0][:200]})") from None
    model.fc = torch.nn.Identity()
    return model.eval()


def builtin_spaces() -> list[FeatureSpace]:
    from .fid_components import FidInceptionSpace

    return [DiscriminatorSpace(), RandomDiscriminatorSpace(), PixelSpace(), InceptionSpace(), FidInceptionSpace()]
