"""The paper's architecture rules, checked by walking the modules of every preset and size."""
import pytest
import torch
from torch import nn

from ganlab.errors import GanlabError
from ganlab.model.networks import PRESETS, Discriminator, Generator, ModelConfig, build, sample_latent

CONFIGS = [*PRESETS.values(),
           *(ModelConfig(image_size=s, channels=c, kernel_size=k, ngf=8, ndf=8, nz=16)
             for s in (16, 32, 64, 128) for c in (1, 3) for k in (3, 4, 5))]


def _layers(model):
    return [m for m in model.main]


@pytest.mark.parametrize("config", CONFIGS,
                         ids=lambda c: f"{c.image_size}-{c.channels}-k{c.kernel_size}-x{c.extra_layers}")
def test_architecture_rules(config):
    G, D = build(config)
    for model in (G, D):
        for m in model.modules():
            # all-convolutional: no pooling, no fully connected layers
            assert not isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                                      nn.AdaptiveMaxPool2d))
    g, d = _layers(G), _layers(D)
    # G: transposed convs only, BatchNorm + ReLU after each but the last, which ends in Tanh
    g_convs = [i for i, m in enumerate(g) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(isinstance(g[i], nn.ConvTranspose2d) for i in g_convs)
    for i in g_convs[:-1]:
        assert isinstance(g[i + 1], nn.BatchNorm2d) and isinstance(g[i + 2], nn.ReLU)
    assert isinstance(g[g_convs[-1] + 1], nn.Tanh) and len(g) == g_convs[-1] + 2
    assert not any(isinstance(m, nn.LeakyReLU) for m in g)
    # D: plain convs; the input layer has no BatchNorm; LeakyReLU(0.2); the last conv is the logit
    d_convs = [i for i, m in enumerate(d) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(type(d[i]) is nn.Conv2d for i in d_convs)
    assert isinstance(d[1], nn.LeakyReLU)
    for i in d_convs[1:-1]:
        assert isinstance(d[i + 1], nn.BatchNorm2d) and isinstance(d[i + 2], nn.LeakyReLU)
    assert all(m.negative_slope == 0.2 for m in d if isinstance(m, nn.LeakyReLU))
    assert d_convs[-1] == len(d) - 1 and d[-1].out_channels == 1
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)) for m in d)
    # strided downsampling in D, fractional-strided upsampling in G: sizes halve/double exactly
    z = sample_latent(config, 3, torch.Generator().manual_seed(0))
    x = G(z)
    assert x.shape == (3, config.channels, config.image_size, config.image_size)
    assert x.min() >= -1 and x.max() <= 1
    logits, feats = D(x, return_features=True)
    assert logits.shape == (3,)
    assert feats[-1].shape[-1] == 4


def test_init_statistics():
    G, D = build(ModelConfig(image_size=64))
    conv = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
                     + [m.weight.flatten() for m in D.modules() if isinstance(m, nn.Conv2d)])
    bn_w = torch.cat([m.weight for m in [*G.modules(), *D.modules()] if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias for m in [*G.modules(), *D.modules()] if isinstance(m, nn.BatchNorm2d)])
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 5e-4
    assert abs(bn_w.mean().item() - 1) < 5e-3 and abs(bn_w.std().item() - 0.02) < 3e-3
    assert torch.count_nonzero(bn_b) == 0


def test_imagenet32_preset_matches_paper():
    config = PRESETS["imagenet32"]
    D = Discriminator(config)
    _, feats = D(torch.zeros(2, 3, 32, 32), return_features=True)
    assert [(f.shape[1], f.shape[2]) for f in feats] == [(128, 32), (128, 16), (256, 16), (256, 8), (512, 8), (512, 4)]
    assert all(m.kernel_size == (3, 3) for m in D.main if isinstance(m, nn.Conv2d) and m.out_channels != 1)
    assert sum(f.shape[1] for f in feats) * 16 == 28672
    assert config.nz == 256 and config.latent == "uniform"
    z = sample_latent(config, 1000, torch.Generator().manual_seed(1))
    assert z.min() >= -1 and z.max() <= 1 and z.min() < -0.99


def test_dcgan32_feature_layers():
    D = Discriminator(PRESETS["dcgan32"])
    _, feats = D(torch.zeros(1, 3, 32, 32), return_features=True)
    assert [f.shape[1] for f in feats] == [64, 128, 256]


def test_generator_features_are_post_relu():
    G = Generator(ModelConfig(image_size=32, ngf=8, nz=10))
    z = torch.randn(2, 10, 1, 1)
    x, feats = G(z, return_features=True)
    assert len(feats) == 3 and all((f >= 0).all() for f in feats)
    assert torch.equal(x, G(z))  # asking for features does not change the output
    assert feats[-1].shape == (2, 8, 16, 16)  # the second-highest layer feeds the output conv


@pytest.mark.parametrize("kwargs", [dict(image_size=48), dict(image_size=8), dict(channels=2), dict(kernel_size=7),
                                    dict(latent="cauchy"), dict(kernel_size=4, extra_layers=1)])
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(GanlabError):
        ModelConfig(**kwargs)
