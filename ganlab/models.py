"""DCGAN generator and discriminator (Radford, Metz & Chintala 2015, section 3).

The paper's rules, all checked by tests/test_models.py:
- all-convolutional: strided convolutions in D, transposed convolutions in G, no pooling and
  no fully connected hidden layers (D's last layer is a 4x4 "valid" convolution to one logit);
- BatchNorm everywhere except G's output layer and D's input layer;
- ReLU in G with a Tanh output, LeakyReLU(0.2) in D;
- conv weights from N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0.

Both networks are an ``nn.Sequential`` called ``main`` with the layer order of the
pytorch/examples DCGAN script, so that script's checkpoints load into ``dcgan64`` unchanged.
``ModelConfig`` and ``PRESETS`` (torch-free) live in ``ganlab.defaults``.
"""
from __future__ import annotations

import torch
from torch import nn

from ganlab.defaults import PRESETS, ModelConfig

__all__ = ["PRESETS", "ModelConfig", "Generator", "Discriminator", "init_weights", "sample_latent", "build"]

def _padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 (transposed) conv exactly halve (double) the side."""
    return {3: (1, 1), 4: (1, 0), 5: (2, 1)}[kernel_size]


def _conv(in_ch: int, out_ch: int, k: int, stride: int, transposed: bool) -> nn.Module:
    pad, out_pad = _padding(k) if stride == 2 else ((k - 1) // 2, 0)  # stride 1: "same" size
    if transposed:
        return nn.ConvTranspose2d(in_ch, out_ch, k, stride, pad, output_padding=out_pad, bias=False)
    return nn.Conv2d(in_ch, out_ch, k, stride, pad, bias=False)


class Generator(nn.Module):
    """z (N x nz x 1 x 1) -> images in [-1, 1] (N x channels x image_size x image_size)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        width = c.ngf * 2 ** (c.n_strided - 1)
        # nz x 1 x 1 -> (ngf * 2^(n-1)) x 4 x 4
        layers: list[nn.Module] = [nn.ConvTranspose2d(c.nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(True)]
        convs: list[tuple[int, int, int]] = []  # (in, out, stride), mirroring D's stages
        for i in range(c.n_strided):
            out = c.channels if i == c.n_strided - 1 else width // 2
            # width x s x s -> out x 2s x 2s; with extra layers the upsampling keeps the width
            # and the last stride-1 layer changes it, so G mirrors D layer for layer.
            widths = [width] * c.extra_layers + [out]
            in_ch = width
            for w, stride in zip(widths, [2] + [1] * c.extra_layers):
                convs.append((in_ch, w, stride))
                in_ch = w
            width = out
        for n, (in_ch, out_ch, stride) in enumerate(convs):
            layers.append(_conv(in_ch, out_ch, c.kernel_size, stride, transposed=True))
            # The output layer has no BatchNorm and a Tanh.
            layers += [nn.Tanh()] if n == len(convs) - 1 else [nn.BatchNorm2d(out_ch), nn.ReLU(True)]
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, return_features: bool = False):
        """With ``return_features``, also return each hidden layer's post-ReLU map, lowest first."""
        if not return_features:
            return self.main(z)
        features = []
        x = z
        for layer in self.main:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                features.append(x)
        return x, features


class Discriminator(nn.Module):
    """Images in [-1, 1] (N x channels x S x S) -> one logit per image (N,)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = []
        in_ch = c.channels
        for i in range(c.n_strided):
            width = c.ndf * 2**i
            # in_ch x s x s -> width x s/2 x s/2, after extra_layers stride-1 layers at width
            for stride in [1] * c.extra_layers + [2]:
                first = not layers
                layers.append(_conv(in_ch, width, c.kernel_size, stride, transposed=False))
                # No BatchNorm on D's input layer (the paper: it caused sample oscillation).
                layers += ([] if first else [nn.BatchNorm2d(width)]) + [nn.LeakyReLU(0.2, inplace=True)]
                in_ch = width
        # (ndf * 2^(n-1)) x 4 x 4 -> 1 x 1 x 1: the logit (no Sigmoid; the loss applies it)
        layers.append(nn.Conv2d(in_ch, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """With ``return_features``, also return every conv layer's post-LeakyReLU map, lowest first."""
        if not return_features:
            return self.main(x).flatten()
        features = []
        for layer in self.main:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return x.flatten(), features


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def sample_latent(config: ModelConfig, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Draw n latent vectors, N x nz x 1 x 1, from the config's latent distribution."""
    shape = (n, config.nz, 1, 1)
    if config.latent == "uniform":
        z = torch.rand(shape, generator=generator) * 2 - 1
    else:
        z = torch.randn(shape, generator=generator)
    return z.to(device)


def build(config: ModelConfig) -> tuple[Generator, Discriminator]:
    """A freshly initialised (G, D) pair."""
    return Generator(config), Discriminator(config)
