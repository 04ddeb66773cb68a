"""The built-in feature spaces: the trained D, a random D, raw pixels, and Inception-v3 from a local file.

- ``discriminator``: ``ganlab.discriminator_features`` of the checkpoint's D (every conv layer after its
  LeakyReLU, max-pooled to 4x4, concatenated): the paper's representation, trained on exactly this data, nothing
  to download. Unavailable without a D. A dataset split's features are cached between reports.
- ``random-discriminator``: the same features from a D of the same architecture with the paper's random
  initialisation (``torch.manual_seed(report seed)`` inside ``torch.random.fork_rng``, so the caller's random
  state is untouched): what the architecture alone measures, a baseline for ``discriminator``.
- ``pixels``: the C x H x W values / 255, flattened.
- ``inception``: torchvision's ``inception_v3`` architecture (``weights=None, aux_logits=True,
  init_weights=False``) loaded from the state dict at ``sample-quality.inception_weights`` (read with torch's
  weights-only loader); the 2048-d pool3 output (the average pool before ``fc``), FID's space. Never
  downloaded. The file's SHA-256 must start with ``sample-quality.inception_sha256``; the default,
  ``0cc3c7bd``, is the hash prefix in the official file's name, ``inception_v3_google-0cc3c7bd.pth``, which
  torch.hub itself verifies on download (give the full 64-digit hash to pin a file exactly; empty skips the
  check, and the report prints the hash either way). Images go in as 299 x 299 RGB (grey repeated, bilinear
  resize) scaled to [-1, 1], with ``transform_input=False``: exactly what torchvision's own pipeline for these
  weights feeds the first convolution (ImageNet mean/std normalisation followed by ``transform_input=True``,
  which ``inception_v3(weights=IMAGENET1K_V1)`` switches on, maps pixel p in [0, 1] to 2 p - 1).
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import ganlab
from ganlab import FeatureSpace, GanlabError

OFFICIAL_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
OFFICIAL_SHA256_PREFIX = "0cc3c7bd"
INCEPTION_SIZE = 299
INCEPTION_BATCH = 32


def _batch_size(ctx: Any) -> int:
    return int(ctx.options.get("batch_size", 256))


def _progress(ctx: Any, iterable: Any, desc: str, total: int) -> Any:
    if ctx.progress is None or ctx.quiet:
        return iterable
    return ctx.progress(iterable, desc=desc, total=total)


class DiscriminatorSpace(FeatureSpace):
    name = "discriminator"
    description = "the trained D's pooled conv features (every layer max-pooled to 4x4): the paper's representation"

    def available(self, ctx):
        return None if ctx.gan.discriminator is not None else "needs the checkpoint's discriminator"

    def embed(self, ctx, images):
        from ganlab import discriminator_features

        return discriminator_features(ctx.gan.discriminator, images, device=ctx.device,
                                      batch_size=_batch_size(ctx))

    def embed_split(self, ctx, images, split: str, tag: str):
        """Features of images drawn from a dataset split (``tag`` says which), cached per checkpoint file."""
        from ganlab import cached_features, feature_cache_key

        if not Path(ctx.gan.path).is_file():  # a model built in memory has no file to key a cache on
            return self.embed(ctx, images)
        key = feature_cache_key(ctx.gan.path, f"D:{tag}", ctx.dataset, split, len(images))
        return cached_features(ctx.cache, key, ctx.gan.discriminator, images, device=ctx.device,
                               batch_size=_batch_size(ctx))


class RandomDiscriminatorSpace(FeatureSpace):
    name = "random-discriminator"
    description = "the same pooled features from a randomly initialised D of the same architecture (a baseline)"

    def __init__(self):
        self._model: tuple[Any, Any] | None = None

    def discriminator(self, ctx):
        """The random D for this model's config and the report's seed (built once, then reused)."""
        import torch

        from ganlab import Discriminator

        key = (repr(ctx.gan.config), int(ctx.seed), str(ctx.device))
        if self._model is None or self._model[0] != key:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(ctx.seed))
                model = Discriminator(ctx.gan.config)
            self._model = (key, model.eval().to(ctx.device))
        return self._model[1]

    def embed(self, ctx, images):
        from ganlab import discriminator_features

        return discriminator_features(self.discriminator(ctx), images, device=ctx.device,
                                      batch_size=_batch_size(ctx))


class PixelSpace(FeatureSpace):
    name = "pixels"
    description = "raw pixels scaled to [0, 1], flattened (C x H x W values per image)"

    def embed(self, ctx, images):
        return (images.reshape(len(images), -1).float() / 255).numpy()


def expected_hash(ctx: Any) -> str:
    """The user's ``inception_sha256`` (lowercase hex, at least 8 digits), or "" for no check."""
    value = str(ctx.options.get("inception_sha256", OFFICIAL_SHA256_PREFIX) or "").strip().lower()
    if value and (len(value) < 8 or len(value) > 64 or set(value) - set(string.hexdigits.lower())):
        raise GanlabError(f"--set sample-quality.inception_sha256={value}: give the weights file's SHA-256 "
                          "(64 hex digits, or at least its first 8), or an empty value to skip the check")
    return value


class InceptionSpace(FeatureSpace):
    name = "inception"
    description = "Inception-v3 pool3 features (2048-d, FID's space) from a local torchvision weights file"

    def __init__(self):
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._model: tuple[Any, Any] | None = None

    def available(self, ctx):
        if not str(ctx.options.get("inception_weights", "") or "").strip():
            return (f"set sample-quality.inception_weights=FILE, a local copy of torchvision's {OFFICIAL_INCEPTION} "
                    "(nothing is downloaded)")
        return None

    def weights(self, ctx) -> tuple[Path, str]:
        """(the weights file, its SHA-256) after checking it against ``inception_sha256``."""
        path = Path(str(ctx.options.get("inception_weights", "")).strip()).expanduser()
        if not path.is_file():
            raise GanlabError(f"sample-quality.inception_weights={path}: no such file; give a local copy of "
                              f"torchvision's {OFFICIAL_INCEPTION}")
        stat = path.stat()
        ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if ident not in self._hashes:
            self._hashes = {ident: ganlab.file_sha256(path)}
        actual, expected = self._hashes[ident], expected_hash(ctx)
        if expected and not actual.startswith(expected):
            raise GanlabError(f"{path}: its SHA-256 is {actual}, not the expected {expected} "
                              "(sample-quality.inception_sha256); use torchvision's "
                              f"{OFFICIAL_INCEPTION}, or --set sample-quality.inception_sha256={actual} "
                              "if you trust this file")
        return path, actual

    def note(self, ctx) -> str:
        path, actual = self.weights(ctx)
        expected = expected_hash(ctx)
        check = f"matches the expected {expected}" if expected else "not checked (inception_sha256 is empty)"
        return f"inception weights: {path}, SHA-256 {actual} ({check})"

    def network(self, ctx):
        """The Inception-v3 with the user's weights, ``fc`` replaced by the identity: images -> N x 2048."""
        import torch
        import torchvision

        path, actual = self.weights(ctx)
        key = (actual, str(ctx.device))
        if self._model is None or self._model[0] != key:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # any unreadable or unsafe file: one line, no traceback
                raise GanlabError(f"{path}: cannot be read as a state dict saved with torch.save "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
                                  ) from None
            if not isinstance(state, dict):
                raise GanlabError(f"{path}: holds a {type(state).__name__}, not a state dict")
            model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise GanlabError(f"{path}: not torchvision inception_v3 weights "
                                  f"({str(exc).splitlines()[0][:200]})") from None
            model.fc = torch.nn.Identity()  # the output is then the pooled 2048 features (dropout is off in eval)
            self._model = (key, model.eval().to(ctx.device))
        return self._model[1]

    def embed(self, ctx, images):
        import numpy as np
        import torch
        import torch.nn.functional as F

        model = self.network(ctx)
        out = np.empty((len(images), 2048), dtype=np.float32)
        step = max(1, min(INCEPTION_BATCH, _batch_size(ctx)))
        starts = range(0, len(images), step)
        with torch.no_grad():
            for a in _progress(ctx, starts, "Inception features", len(starts)):
                x = images[a:a + step].to(ctx.device).float() / 127.5 - 1  # [-1, 1]: see the module doc
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
                out[a:a + len(x)] = model(x).float().cpu().numpy()
        return out

    def embed_split(self, ctx, images, split: str, tag: str):
        from ganlab import feature_cache_key

        path, actual = self.weights(ctx)
        size = "x".join(str(s) for s in images.shape[1:])
        tag = f"inception:{actual}:{size}:{tag}:{Path(ctx.data_root).resolve() if ctx.data_root else ''}"
        key = feature_cache_key(path, tag, ctx.dataset, split, len(images))
        return ctx.cache.array("features", {"inception": key}, lambda: self.embed(ctx, images), rows=len(images))


def builtin_spaces() -> list[FeatureSpace]:
    return [DiscriminatorSpace(), RandomDiscriminatorSpace(), PixelSpace(), InceptionSpace()]
