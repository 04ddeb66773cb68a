"""BatchNorm statistics recomputed on real images: the paper's protocol for D's features.

During training D's BatchNorm running averages are updated by real and generated batches alike, so
they describe neither. Before extracting features the authors recomputed the statistics on the real
training images (``infer_bnorm_stats`` in their SVHN code): a pass over the images with every
BatchNorm layer normalising by its batch's statistics (train mode), collecting each layer's per-channel
mean and variance of its input. ``recompute_batchnorm`` does the same on a copy of the model.

The statistics are pooled exactly over every element of the pass (float64, Chan's parallel update), so each
image counts the same (a short last batch included); with one batch it equals PyTorch's ``momentum=None``
running averages. The first BatchNorm layer's statistics do not depend on the batch size; deeper layers see
inputs normalised by each batch's own statistics (train mode), so theirs move slightly with it (the feature
cache keys include the batch size). The variance is the unbiased one, as PyTorch's ``running_var`` is.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ganlab.errors import GanlabError
from ganlab.images import to_unit_range

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The module's BatchNorm layers (those that keep running statistics), in definition order."""
    return [m for m in module.modules() if isinstance(m, _BATCHNORM) and m.track_running_stats]


class _Pooled:
    """Per-channel count, mean and sum of squared deviations of one layer's inputs, merged batch by batch."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.shape[1]
        mean = x.mean(dims)
        shape = [1, -1] + [1] * (x.dim() - 2)
        m2 = ((x - mean.view(shape)) ** 2).sum(dims)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, real_images: torch.Tensor, *, batch_size: int = 256,
                        device: torch.device | str | None = None,
                        progress: Callable[..., Any] | None = None) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose BatchNorm statistics are those of ``real_images``.

    ``real_images`` are uint8 N x C x H x W (0..255), scaled to [-1, 1] as for training. The copy's
    running statistics are reset, then one pass over the images in train mode (each BatchNorm layer
    normalising by its batch) without gradients sets every layer's ``running_mean`` and ``running_var``
    to the per-channel mean and unbiased variance of that layer's inputs over all the images. ``model``
    itself is not changed. ``device`` defaults to the model's; ``progress`` is a tqdm-like factory.
    """
    if not isinstance(real_images, torch.Tensor) or real_images.dim() != 4 or real_images.dtype != torch.uint8:
        raise GanlabError("recompute_batchnorm needs real images as a uint8 N x C x H x W tensor")
    if len(real_images) == 0:
        raise GanlabError("recompute_batchnorm needs at least one real image")
    if batch_size < 1:
        raise GanlabError(f"batch size must be at least 1, not {batch_size}")
    starts = range(0, len(real_images), batch_size)
    if progress is not None:
        starts = progress(starts, desc="BatchNorm statistics", total=len(starts))
    return statistics_from(model, (to_unit_range(real_images[a:a + batch_size]) for a in starts), device=device)


@torch.no_grad()
def statistics_from(model: nn.Module, batches: Iterable[torch.Tensor], *,
                    device: torch.device | str | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorm statistics are pooled over one train-mode pass of
    ``batches`` (its inputs: images for D, latent vectors for G)."""
    params = next(iter(model.parameters()), None)
    device = torch.device(device) if device is not None else (params.device if params is not None else "cpu")
    clone = copy.deepcopy(model).to(device)
    layers = batchnorm_layers(clone)
    if not layers:
        return clone.eval()
    pooled = [_Pooled() for _ in layers]
    hooks = [layer.register_forward_pre_hook(p) for layer, p in zip(layers, pooled)]
    try:
        for layer in layers:
            layer.reset_running_stats()
        clone.train()
        count = 0
        for batch in batches:
            clone(batch.to(device))
            count += 1
    finally:
        for hook in hooks:
            hook.remove()
    for layer, p in zip(layers, pooled):
        if p.n < 2:
            raise GanlabError("recompute_batchnorm needs more than one value per channel; give more real images")
        layer.running_mean.copy_(p.mean.to(layer.running_mean.dtype))
        layer.running_var.copy_((p.m2 / (p.n - 1)).to(layer.running_var.dtype))
        layer.num_batches_tracked.fill_(count)
    return clone.eval()
