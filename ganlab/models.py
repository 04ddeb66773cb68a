"""DCGAN generator and discriminator (Radford, Metz & Chintala 2015, section 3).

The paper's rules, all checked by tests/test_models.py:
- all-convolutional: strided convolutions in D, transposed convolutions in G, no pooling and
  no fully connected hidden layers (D's last layer is a 4x4 "valid" convolution to one logit);
- BatchNorm everywhere except G's output layer and D's input layer;
- ReLU in G with a Tanh output, LeakyReLU(0.2) in D;
- conv weights from N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0.

Both networks are an ``nn.Sequential`` called ``main`` with the layer order of the
pytorch/examples DCGAN script, so that script's checkpoints load into ``dcgan64`` unchanged.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ganlab.errors import GanlabError

LATENTS = ("normal", "uniform")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild G and D; stored in every checkpoint."""

    image_size: int = 32  # a power of two from 16 to 128
    channels: int = 3  # 1 (grey) or 3 (RGB)
    nz: int = 100  # latent dimension
    ngf: int = 64  # G width: its last hidden layer has ngf feature maps
    ndf: int = 64  # D width: its first layer has ndf feature maps
    kernel_size: int = 4  # 4 (pytorch/examples) or 3/5 (the paper's models)
    latent: str = "normal"  # "normal" N(0, 1) or "uniform" U[-1, 1]
    extra_layers: int = 0  # stride-1 layers before each strided D layer (mirrored in G)

    def __post_init__(self) -> None:
        size = self.image_size
        if size < 16 or size > 128 or size & (size - 1):
            raise GanlabError(f"image size {size} is not supported; use a power of two from 16 to 128 (32 or 64)")
        if self.channels not in (1, 3):
            raise GanlabError(f"channels must be 1 or 3, not {self.channels}")
        if self.kernel_size not in (3, 4, 5):
            raise GanlabError(f"kernel size must be 3, 4 or 5, not {self.kernel_size}")
        if self.latent not in LATENTS:
            raise GanlabError(f"latent must be one of {', '.join(LATENTS)}, not {self.latent!r}")
        if min(self.nz, self.ngf, self.ndf) < 1 or self.extra_layers < 0:
            raise GanlabError("nz, ngf and ndf must be positive and extra_layers >= 0")
        if self.extra_layers and self.kernel_size % 2 == 0:
            raise GanlabError("extra stride-1 layers need an odd kernel size (3 or 5) to keep the image size")

    @property
    def n_strided(self) -> int:
        """Strided layers in D (= upsampling layers in G): each halves the side, down to 4x4."""
        return int(math.log2(self.image_size)) - 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GanlabError(f"unknown model config keys {unknown}; this checkpoint needs a newer ganlab")
        return cls(**values)


PRESETS: dict[str, ModelConfig] = {
    "dcgan32": ModelConfig(image_size=32),
    "dcgan64": ModelConfig(image_size=64),
    # The paper's ImageNet-1k 32x32 model used for the CIFAR-10 probe: 3x3 convolutions
    # 128@32, 128@16, 256@16, 256@8, 512@8, 512@4 (stride 1 and 2 alternating) and a
    # 256-d uniform z, which gives 16 x 1792 = 28672 max-pooled probe features.
    "imagenet32": ModelConfig(image_size=32, nz=256, ngf=128, ndf=128, kernel_size=3, latent="uniform", extra_layers=1),
}


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
