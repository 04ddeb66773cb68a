"""BatchNorm statistics recomputed on real images (the paper's protocol) and D's features with each choice."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import ganlab
import ganlab.measure.features as F
from ganlab import GanlabError, recompute_batchnorm, to_unit_range
from ganlab.model.networks import Discriminator, ModelConfig

CONFIG = ModelConfig(image_size=32, channels=1, ndf=4, ngf=4, nz=4)


def _d(seed=0, perturb=True):
    torch.manual_seed(seed)
    D = Discriminator(CONFIG)
    if perturb:  # running averages far from any real statistics, as after training on real and fake batches
        for m in D.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
    return D


def _images(n, seed=1):
    return torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _bn_inputs(D, images, batch_size):
    """Each BatchNorm layer's inputs in a train-mode pass over the batches, captured by forward hooks (float64)."""
    model = copy.deepcopy(D).train()
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    seen = [[] for _ in layers]
    hooks = [layer.register_forward_hook(lambda m, i, o, s=s: s.append(i[0].detach().double().numpy()))
             for layer, s in zip(layers, seen)]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(to_unit_range(images[start:start + batch_size]))
    for hook in hooks:
        hook.remove()
    return [np.concatenate(s) for s in seen]


def _stats(D):
    return [(m.running_mean.numpy().copy(), m.running_var.numpy().copy()) for m in D.modules()
            if isinstance(m, nn.BatchNorm2d)]


def test_one_batch_equals_pytorch_cumulative_average_and_the_data_statistics():
    D, images = _d(), _images(12)
    got = _stats(recompute_batchnorm(D, images, batch_size=64))
    # PyTorch's own recipe: reset, momentum=None, one train-mode pass
    ref = copy.deepcopy(D)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        ref.train()(to_unit_range(images))
    # and by hand: per-channel mean and unbiased variance of what each BatchNorm layer received
    inputs = _bn_inputs(D, images, batch_size=64)
    assert len(got) == len(inputs) == 2
    for (mean, var), (rmean, rvar), x in zip(got, _stats(ref), inputs):
        np.testing.assert_allclose(mean, rmean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, rvar, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean, x.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, x.var((0, 2, 3), ddof=1), rtol=1e-5, atol=1e-6)


def test_batches_are_pooled_exactly_not_averaged():
    D, images = _d(), _images(10)
    got = _stats(recompute_batchnorm(D, images, batch_size=3))  # batches of 3, 3, 3 and 1
    inputs = _bn_inputs(D, images, batch_size=3)
    for (mean, var), x in zip(got, inputs):
        np.testing.assert_allclose(mean, x.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, x.var((0, 2, 3), ddof=1), rtol=1e-5, atol=1e-6)
    # the first BatchNorm layer's input does not depend on the batching: conv2(lrelu(conv1(x))) over all images
    conv1, conv2 = [m for m in D.modules() if isinstance(m, nn.Conv2d)][:2]
    with torch.no_grad():
        first = conv2(nn.functional.leaky_relu(conv1(to_unit_range(images)), 0.2)).double().numpy()
    np.testing.assert_allclose(got[0][0], first.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0][1], first.var((0, 2, 3), ddof=1), rtol=1e-5, atol=1e-6)
    # and the mean of the four batch means (what momentum=None keeps) is not it: the short batch counts less here
    batch_means = [first[i:i + 3].mean((0, 2, 3)) for i in range(0, 10, 3)]
    assert np.abs(np.mean(batch_means, 0) - got[0][0]).max() > 1e-4


def test_eval_mode_with_recomputed_statistics_matches_train_mode_on_the_batch():
    D, images = _d(), _images(16)
    fixed = recompute_batchnorm(D, images, batch_size=16)
    x = to_unit_range(images)
    with torch.no_grad():
        _, train_maps = copy.deepcopy(D).train()(x, return_features=True)
        _, running_maps = copy.deepcopy(D).eval()(x, return_features=True)
        # train mode divides by the biased batch variance, running_var holds the unbiased one: undo n / (n - 1)
        biased = copy.deepcopy(fixed)
        sizes = [m.shape[0] * m.shape[2] * m.shape[3] for m in train_maps[1:]]  # BN layer k sees map k's N x H x W
        for layer, n in zip([m for m in biased.modules() if isinstance(m, nn.BatchNorm2d)], sizes, strict=True):
            layer.running_var.mul_((n - 1) / n)
        _, eval_maps = biased(x, return_features=True)
    for a, b in zip(train_maps, eval_maps):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(train_maps[-1].numpy(), running_maps[-1].numpy(), rtol=5e-3, atol=2e-4)


def test_the_model_passed_in_is_not_changed():
    D = _d()
    D.eval()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    momenta = [m.momentum for m in D.modules() if isinstance(m, nn.BatchNorm2d)]
    fixed = recompute_batchnorm(D, _images(8), batch_size=3)
    assert fixed is not D and not fixed.training and not D.training
    for key, value in D.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert momenta == [m.momentum for m in D.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(not torch.equal(fixed.state_dict()[k], before[k]) for k in before if "running" in k)
    assert all(torch.equal(fixed.state_dict()[k], before[k]) for k in before if "running" not in k
               and "num_batches" not in k)  # weights are copied unchanged
    # the feature path does not change it either
    F.discriminator_features(D, _images(4, seed=5), real_images=_images(8))
    for key, value in D.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_features_differ_between_modes_and_real_matches_the_recomputed_copy():
    D, real, images = _d(), _images(20), _images(6, seed=2)
    running = F.discriminator_features(D, images, bn_stats="running", real_images=real)
    real_feats = F.discriminator_features(D, images, real_images=real)  # "real" is the default
    assert not np.allclose(running, real_feats, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(running, F.discriminator_features(D, images), rtol=1e-6)  # no real images: stored
    np.testing.assert_allclose(real_feats, F.discriminator_features(recompute_batchnorm(D, real), images,
                                                                    bn_stats="running"), rtol=1e-6)
    # manual forward with the statistics by hand: (x - mean) / sqrt(var + eps) * weight + bias
    inputs = _bn_inputs(D, real, batch_size=256)
    x, manual, bn = to_unit_range(images), [], 0
    with torch.no_grad():
        for layer in D.main:
            if isinstance(layer, nn.BatchNorm2d):
                mean = torch.from_numpy(inputs[bn].mean((0, 2, 3))).float()[None, :, None, None]
                var = torch.from_numpy(inputs[bn].var((0, 2, 3), ddof=1)).float()[None, :, None, None]
                x = (x - mean) / torch.sqrt(var + layer.eps) * layer.weight[None, :, None, None] + \
                    layer.bias[None, :, None, None]
                bn += 1
            else:
                x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                manual.append(nn.functional.max_pool2d(x, x.shape[-1] // 4).flatten(1))
    np.testing.assert_allclose(real_feats, torch.cat(manual, 1).numpy(), rtol=1e-4, atol=1e-5)


def test_cache_key_and_cache_file_separate_the_statistics(tmp_path):
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"model")
    key = ganlab.feature_cache_key
    assert key(ckpt, "D", "digits", "train", None) == key(ckpt, "D", "digits", "train", None, bn_stats="real")
    assert key(ckpt, "D", "digits", "train", None, bn_stats="running") != key(ckpt, "D", "digits", "train", None)
    D, images = _d(), _images(6, seed=2)
    k = key(ckpt, "D", "digits", "test", None)
    cache = ganlab.Cache(tmp_path / "cache")
    first = F.cached_features(cache, k, D, images, real_images=_images(20))
    other = F.cached_features(cache, k, D, images, real_images=_images(20, seed=9))
    stored = F.cached_features(cache, k, D, images)
    names = sorted(p.name for p in (tmp_path / "cache" / "features").glob("*.npy"))
    assert len(names) == 3, names
    assert not np.allclose(first, other) and not np.allclose(first, stored)
    np.testing.assert_allclose(first, F.discriminator_features(D, images, real_images=_images(20)), rtol=1e-6)
    again = F.cached_features(cache, k, D, images, real_images=_images(20))
    np.testing.assert_array_equal(first, again)


def test_bad_arguments_are_one_line_errors():
    D = _d()
    with pytest.raises(GanlabError, match="bn_stats must be one of real, running"):
        F.discriminator_features(D, _images(2), bn_stats="fake")
    with pytest.raises(GanlabError, match="bn_stats"):
        ganlab.feature_cache_key("x.pt", "D", None, "train", None, bn_stats="batch")
    with pytest.raises(GanlabError, match="uint8"):
        recompute_batchnorm(D, torch.zeros(2, 1, 32, 32))
    with pytest.raises(GanlabError, match="at least one"):
        recompute_batchnorm(D, _images(0))
