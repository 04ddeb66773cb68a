"""What a feature space is: a way to turn images into vectors that sample-quality and memorisation metrics
compare (Frechet distance, KID, precision/recall, nearest neighbours). Built-ins: the trained D's pooled
features, a random D's, raw pixels, and Inception-v3 when the user points at a local weights file."""
from typing import Any

from ganlab.plugin.components import Named


class FeatureSpace(Named):
    """Embeds images. Set ``name`` (lowercase, digits, dashes) and ``description``.

    ``embed(ctx, images)`` takes uint8 images N x C x H x W (0..255, the model's size and channels; convert
    G's output with ``ganlab.to_uint8``) and returns a float32 numpy array N x D. ``available(ctx)`` returns
    None when the space can be used for this model and run, else the reason it cannot (e.g. "needs the
    discriminator", "set sample-quality.inception_weights=FILE").
    """

    def available(self, ctx: Any) -> str | None:
        return None

    def embed(self, ctx: Any, images: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError
