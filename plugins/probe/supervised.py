"""The supervised baseline: D's architecture trained with labels only (the paper's SVHN Table 2 row).

The discriminator's body is kept and its one-logit output conv becomes a K-logit conv, then the
whole network is trained from the paper's initialisation with cross-entropy on the labelled
subset alone, with no GAN pre-training.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


def classifier_from_config(config: Any, num_classes: int) -> nn.Module:
    """D's architecture with a num_classes-way output: images N x C x H x W -> logits N x K."""
    from ganlab import Discriminator, init_weights

    model = Discriminator(config)
    last = model.main[-1]
    model.main[-1] = nn.Conv2d(last.in_channels, num_classes, last.kernel_size, last.stride, last.padding, bias=True)
    init_weights(model)
    return _Logits(model)


class _Logits(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.main(x).flatten(1)


def train_classifier(config: Any, images: torch.Tensor, labels: np.ndarray, *, num_classes: int, steps: int = 300,
                     batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: torch.device | str = "cpu",
                     progress: Callable[..., Any] | None = None) -> nn.Module:
    """Train D's architecture on uint8 images (N x C x H x W) with integer labels; returns it in eval mode."""
    from ganlab import to_unit_range

    torch.manual_seed(seed)
    model = classifier_from_config(config, num_classes).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    order = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(images))
    loop = range(steps)
    if progress is not None:
        loop = progress(loop, desc="supervised CNN", total=steps)
    model.train()
    for _ in loop:
        idx = torch.randint(len(images), (batch_size,), generator=order)
        x = to_unit_range(images[idx]).to(device)
        loss = nn.functional.cross_entropy(model(x), targets[idx].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: np.ndarray, *, device: torch.device | str = "cpu",
             batch_size: int = 512) -> float:
    """Fraction of images whose arg-max logit equals the label."""
    from ganlab import to_unit_range

    predictions = torch.cat([model(to_unit_range(chunk).to(device)).argmax(1).cpu()
                             for chunk in images.split(batch_size)])
    return float((predictions.numpy() == np.asarray(labels)).mean())
