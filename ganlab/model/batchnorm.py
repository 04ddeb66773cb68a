"""BatchNorm statistics recomputed on real images: the paper's protocol for D's features.

D's running averages follow real and generated batches alike, so they describe neither; the authors recomputed
them on the real training images (``infer_bnorm_stats`` in their SVHN code) with one train-mode pass. They are
pooled exactly over the pass (float64), each image counting the same; with one batch they equal PyTorch's
``momentum=None`` averages. Deeper layers see each batch's own normalisation, so theirs move with the batch size.
"""
import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ganlab.data.pixel_ranges import to_unit_range
from ganlab.errors import GanlabError


class _Pooled:
    """Per-channel count, mean and sum of squared deviations of one layer's inputs, merged batch by batch
    (Chan et al.'s parallel update, which keeps the digits a plain sum of squares would lose to cancellation)."""

    n, mean, m2 = 0, 0.0, 0.0

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double().transpose(0, 1).flatten(1)  # channels x values
        var, mean = torch.var_mean(x, 1, correction=0)
        n, m2 = x.shape[1], var * x.shape[1]
        total, delta = self.n + n, mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, real_images: torch.Tensor, *, batch_size: int = 256,
                        device: torch.device | str | None = None,
                        progress: Callable[..., Any] | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorm ``running_mean`` and ``running_var`` are the per-channel
    mean and unbiased variance of each layer's inputs over ``real_images`` (uint8 N x C x H x W, 0..255, scaled to
    [-1, 1] as for training). ``device`` defaults to the model's; ``progress`` is a tqdm-like factory."""
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
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device
    clone = copy.deepcopy(model).to(device)
    layers = [m for m in clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return clone.eval()
    pooled = [_Pooled() for _ in layers]
    hooks = [layer.register_forward_pre_hook(p) for layer, p in zip(layers, pooled)]
    clone.train()
    count = 0
    for batch in batches:
        clone(batch.to(device))
        count += 1
    for hook in hooks:  # a pass that fails loses the clone, hooks and all
        hook.remove()
    for layer, p in zip(layers, pooled):
        if p.n < 2:
            raise GanlabError("recompute_batchnorm needs more than one value per channel; give more real images")
        layer.running_mean.copy_(p.mean.to(layer.running_mean.dtype))
        layer.running_var.copy_((p.m2 / (p.n - 1)).to(layer.running_var.dtype))
        layer.num_batches_tracked.fill_(count)
    return clone.eval()
