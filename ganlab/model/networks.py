"""DCGAN generator and discriminator (Radford, Metz & Chintala 2015, section 3).

The paper's rules, all checked by tests/test_models.py: all-convolutional (strided convolutions in D, transposed
ones in G, no pooling, no fully connected hidden layers: D ends in a 4x4 "valid" convolution to one logit);
BatchNorm everywhere except G's output and D's input layer; ReLU in G with a Tanh output, LeakyReLU(0.2) in D;
conv weights N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0.

Both networks are an ``nn.Sequential`` called ``main`` with the layer order of the pytorch/examples DCGAN script,
so its checkpoints load into ``dcgan64`` unchanged. ``ModelConfig`` and ``PRESETS`` live in ``ganlab.defaults``.
"""
import torch
from torch import nn

from ganlab.defaults import PRESETS, ModelConfig

__all__ = ["PRESETS", "ModelConfig", "Generator", "Discriminator", "init_weights", "sample_latent", "build"]


def _conv(in_ch: int, out_ch: int, k: int, stride: int, transposed: bool) -> nn.Module:
    """A bias-free conv that exactly halves (transposed: doubles) the side at stride 2 and keeps it at stride 1."""
    pad, out_pad = {3: (1, 1), 4: (1, 0), 5: (2, 1)}[k] if stride == 2 else ((k - 1) // 2, 0)
    if transposed:
        return nn.ConvTranspose2d(in_ch, out_ch, k, stride, pad, output_padding=out_pad, bias=False)
    return nn.Conv2d(in_ch, out_ch, k, stride, pad, bias=False)


def _convs(config: ModelConfig, base: int) -> list[tuple[int, int, int]]:
    """(in, out, stride) of D's convolutions below the logit, from the image up: n_strided stages, ``base`` maps
    wide in the first and doubling, each of ``extra_layers`` stride-1 convs and then one of stride 2."""
    widths = [base * 2**i for i in range(config.n_strided) for _ in range(config.extra_layers + 1)]
    strides = ([1] * config.extra_layers + [2]) * config.n_strided
    return list(zip([config.channels, *widths[:-1]], widths, strides))


def _with_features(main: nn.Sequential, x: torch.Tensor, activation: type) -> tuple[torch.Tensor, list]:
    """``main(x)`` and the output of each ``activation`` layer in it, lowest first."""
    features = []
    for layer in main:
        x = layer(x)
        if isinstance(layer, activation):
            features.append(x)
    return x, features


class Generator(nn.Module):
    """z (N x nz x 1 x 1) -> images in [-1, 1] (N x channels x image_size x image_size)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        convs = _convs(c, c.ngf)[::-1]  # D's convolutions backwards: G mirrors D layer for layer
        width = convs[0][1]  # nz x 1 x 1 -> width x 4 x 4; each conv then doubles the side or, at stride 1, keeps it
        layers = [nn.ConvTranspose2d(c.nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for in_ch, out_ch, stride in convs:
            layers += [_conv(out_ch, in_ch, c.kernel_size, stride, transposed=True), nn.BatchNorm2d(in_ch),
                       nn.ReLU(True)]
        layers[-2:] = [nn.Tanh()]  # the output layer has no BatchNorm and a Tanh
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, return_features: bool = False):
        """With ``return_features``, also return each hidden layer's post-ReLU map, lowest first."""
        return _with_features(self.main, z, nn.ReLU) if return_features else self.main(z)


class Discriminator(nn.Module):
    """Images in [-1, 1] (N x channels x S x S) -> one logit per image (N,)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        # no BatchNorm on the input layer (the paper: it caused sample oscillation)
        for in_ch, out_ch, stride in _convs(c, c.ndf):
            norm = [nn.BatchNorm2d(out_ch)] if layers else []
            layers += [_conv(in_ch, out_ch, c.kernel_size, stride, transposed=False), *norm,
                       nn.LeakyReLU(0.2, inplace=True)]
        # (ndf * 2^(n-1)) x 4 x 4 -> 1 x 1 x 1: the logit (no Sigmoid; the loss applies it)
        layers.append(nn.Conv2d(out_ch, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """With ``return_features``, also return every conv layer's post-LeakyReLU map, lowest first."""
        if not return_features:
            return self.main(x).flatten()
        logit, features = _with_features(self.main, x, nn.LeakyReLU)
        return logit.flatten(), features


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
    """n latent vectors, N x nz x 1 x 1, from the config's latent distribution, drawn on ``generator``'s
    device (the CPU without one) and returned on ``device``."""
    shape, where = (n, config.nz, 1, 1), generator.device if generator is not None else None
    if config.latent == "uniform":
        return (torch.rand(shape, generator=generator, device=where) * 2 - 1).to(device)
    return torch.randn(shape, generator=generator, device=where).to(device)


def build(config: ModelConfig) -> tuple[Generator, Discriminator]:
    """A freshly initialised (G, D) pair."""
    return Generator(config), Discriminator(config)
