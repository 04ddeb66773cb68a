"""The built-in feature spaces: the trained D, a random D, raw pixels, torchvision's Inception-v3 from a local file,
and pytorch-fid's FID Inception (``fid.py``; sample-quality's FD there is the FID papers print).

``torchvision-inception`` is torchvision's ``inception_v3`` with the state dict at ``inception_weights`` (never
downloaded), its 2048-d pool3 output: an ImageNet classifier whose features differ from the FID network's by several
percent, so its FD is not a published FID. Images go in as 299 x 299 RGB in [-1, 1] with ``transform_input=False``:
exactly what torchvision's own pipeline for these weights (ImageNet mean/std, then ``transform_input=True``) feeds
the first convolution.
"""
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganlab import Discriminator, FeatureSpace, GanlabError, cached_features, discriminator_features, feature_cache_key
from ganlab import content_digest as digest

from . import fid

OFFICIAL_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
OFFICIAL_SHA256_PREFIX = "0cc3c7bd"  # torch.hub's convention: the file name carries its hash's first digits
INCEPTION_BATCH = 32


def _kept(space: Any, key: Any, build: Any) -> Any:
    """The model ``space`` built last if it was built for ``key``, else ``build()`` (kept in ``space._model``)."""
    if getattr(space, "_model", (None,))[0] != key:
        space._model = (key, build())
    return space._model[1]


def _cached_split(space, ctx, images, split: str, weights: Path, tag: str):
    """A split's features, cached per weights file, settings (``tag``: "SPACE:..."), image size and data folder."""
    size = "x".join(str(s) for s in images.shape[1:])
    root = Path(ctx.data_root).resolve() if ctx.data_root else ""
    key = feature_cache_key(weights, f"{tag}:{size}:{root}", ctx.dataset, split, len(images))
    ident = {tag.split(":")[0]: key, "images": digest(images)}  # a folder's images can change
    return ctx.cache.array("features", ident, lambda: space.embed(ctx, images), rows=len(images))


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
        if not Path(ctx.gan.path).is_file():  # a model built in memory has no file to key a cache on
            return self.embed(ctx, images)
        key = feature_cache_key(ctx.gan.path, f"D:{tag}", ctx.dataset, split, len(images))
        return cached_features(ctx.cache, key, ctx.gan.discriminator, images, device=ctx.device,
                               batch_size=ctx.options.get("batch_size", 256))


class RandomDiscriminatorSpace(DiscriminatorSpace):
    name = "random-discriminator"
    description = "the same pooled features from a randomly initialised D of the same architecture (a baseline)"
    embed_split = None  # no checkpoint file holds this D, so there is nothing to key a cache on

    def available(self, ctx):
        return None

    def discriminator(self, ctx):
        """The paper's random initialisation for this config and the report's seed, seeded inside ``fork_rng`` so
        that the caller's random state is left alone."""
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

    def available(self, ctx):
        return None if str(ctx.options.get("inception_weights", "") or "").strip() else (
            f"set sample-quality.inception_weights=FILE, a local copy of torchvision's {OFFICIAL_INCEPTION} "
            "(nothing is downloaded)")

    def weights(self, ctx) -> tuple[Path, str]:
        """(the weights file, its SHA-256) after checking it against ``inception_sha256``."""
        path = Path(str(ctx.options.get("inception_weights", "")).strip()).expanduser()
        if not path.is_file():
            raise GanlabError(f"sample-quality.inception_weights={path}: no such file; give a local copy of "
                              f"torchvision's {OFFICIAL_INCEPTION}")
        return path, fid.checked_sha256(path, ctx.options.get("inception_sha256", OFFICIAL_SHA256_PREFIX),
                                        official=f"torchvision's {OFFICIAL_INCEPTION}",
                                        option="--set sample-quality.inception_sha256")

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
        if fid.progress_of(ctx):
            starts = ctx.progress(starts, desc="Inception features", total=len(starts))
        with torch.no_grad():
            for a in starts:
                x = images[a:a + step].to(ctx.device).float() / 127.5 - 1  # [-1, 1]: see the module doc
                x = F.interpolate(x.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", align_corners=False)
                out[a:a + len(x)] = model(x).float().cpu().numpy()
        return out

    def embed_split(self, ctx, images, split: str, tag: str):
        path, actual = self.weights(ctx)
        return _cached_split(self, ctx, images, split, path, f"inception:{actual}:{tag}")


def _load_inception(path: Path):
    """torchvision's inception_v3 with ``fc`` replaced by the identity, so that it gives the 2048 pooled features
    (dropout is off in eval mode)."""
    import torchvision

    state = fid.load_state_dict(path)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GanlabError(f"{path}: not torchvision inception_v3 weights ({str(exc).splitlines()[0][:200]})") from None
    model.fc = torch.nn.Identity()
    return model.eval()


class FidInceptionSpace(FeatureSpace):
    name = "fid-inception"
    description = ("pytorch-fid's FID Inception (the TensorFlow graph's port): FD here is the FID papers print; "
                   "needs ganlab[fid] and its weights file")

    def available(self, ctx):
        return fid.missing(ctx.options)

    def embed(self, ctx, images):
        return fid.network_of(ctx).run(images, progress=fid.progress_of(ctx))["features"].astype(np.float32)

    def embed_split(self, ctx, images, split: str, tag: str):
        net = fid.network_of(ctx)
        return _cached_split(self, ctx, images, split, net.weights,
                             f"fid-inception:{net.sha256}:{net.dims}:{net.resize}:{tag}")

    def note(self, ctx, n: int) -> str:
        return fid.network_of(ctx).line(n, ctx.seed)


def builtin_spaces() -> list[FeatureSpace]:
    return [DiscriminatorSpace(), RandomDiscriminatorSpace(), PixelSpace(), InceptionSpace(), FidInceptionSpace()]
