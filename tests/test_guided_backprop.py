"""guided-backprop: our guided backprop against Captum (ReLU), a hand computation (LeakyReLU), model hygiene,
the top-5% saliency mass, and the component in a report."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganlab
from plugins import guided_backprop as gb


def _captum(model, x, target):
    from captum.attr import GuidedBackprop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GuidedBackprop(model).attribute(x.clone().requires_grad_(True), target=target).detach()


def _plain_gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x)[:, target].sum().backward()
    return x.grad


def _relu_net(inplace=False):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace), nn.Conv2d(4, 6, 3, stride=2),
                         nn.ReLU(inplace), nn.Flatten(), nn.Linear(54, 5)).eval()


def test_matches_captum_on_a_relu_network():
    model = _relu_net()
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    for target in (3, [0, 4, 2]):
        ours = gb.guided_backprop(model, x, target)
        assert torch.allclose(ours, _captum(model, x, target), atol=1e-6, rtol=0)
    # the rule is active: the plain gradient is something else
    assert not torch.allclose(ours, _plain_gradient(model, x, [0, 4, 2]), atol=1e-3)
    # inplace ReLUs (which full backward hooks cannot take) give the same result
    assert torch.allclose(gb.guided_backprop(_relu_net(inplace=True), x, [0, 4, 2]), ours, atol=1e-7, rtol=0)


# a 3-layer linear / LeakyReLU net with fixed weights, backpropagated by hand below
W1 = np.array([[0.5, -1.0, 0.3], [-0.7, 0.2, 0.9], [1.1, 0.4, -0.6], [-0.2, -0.8, 0.5]])
B1 = np.array([0.1, -0.2, 0.05, 0.3])
W2 = np.array([[0.6, -0.9, 0.4, 0.7], [-0.5, 0.8, -1.2, 0.3], [0.2, 0.1, 0.9, -0.4]])
B2 = np.array([-0.1, 0.2, 0.0])
W3 = np.array([[1.0, -0.6, 0.8], [-0.7, 0.9, -0.3]])
X = np.array([[1.0, 0.5, -0.4], [-0.3, 0.8, 0.6], [0.2, -1.0, 0.7], [-0.9, -0.2, -0.5]])
SLOPE = 0.2


def _leaky_net():
    model = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(SLOPE), nn.Linear(4, 3), nn.LeakyReLU(SLOPE, inplace=True),
                          nn.Linear(3, 2, bias=False)).double().eval()
    with torch.no_grad():
        for layer, w, b in ((model[0], W1, B1), (model[2], W2, B2), (model[4], W3, None)):
            layer.weight.copy_(torch.tensor(w))
            if b is not None:
                layer.bias.copy_(torch.tensor(b))
    return model


def _hand_guided(target):
    """Guided backprop of output[:, target] written out: grad_in = max(grad_out, 0) * (1 if pre > 0 else slope)."""
    out = []
    for x in X:
        h1 = W1 @ x + B1
        h2 = W2 @ np.where(h1 > 0, h1, SLOPE * h1) + B2
        g = W3[target]                                   # d out / d a2
        g = np.maximum(g, 0) * np.where(h2 > 0, 1, SLOPE)  # through the second LeakyReLU
        g = W2.T @ g                                     # d / d a1
        g = np.maximum(g, 0) * np.where(h1 > 0, 1, SLOPE)  # through the first LeakyReLU
        out.append(W1.T @ g)
    return np.array(out)


def _hand_plain(target):
    out = []
    for x in X:
        h1 = W1 @ x + B1
        h2 = W2 @ np.where(h1 > 0, h1, SLOPE * h1) + B2
        g = W1.T @ ((W2.T @ (W3[target] * np.where(h2 > 0, 1, SLOPE))) * np.where(h1 > 0, 1, SLOPE))
        out.append(g)
    return np.array(out)


@pytest.mark.parametrize("target", [0, 1])
def test_leaky_relu_rule_matches_a_hand_computation(target):
    model = _leaky_net()
    ours = gb.guided_backprop(model, torch.tensor(X), target).numpy()
    np.testing.assert_allclose(ours, _hand_guided(target), atol=1e-12)
    assert not np.allclose(_hand_guided(target), _hand_plain(target), atol=1e-3)  # the data exercise the rule


def test_captum_falls_back_to_the_plain_gradient_on_leaky_relu():
    """Why ganlab has its own: Captum hooks only nn.ReLU, so on D's LeakyReLUs it is the plain gradient."""
    model = _leaky_net()
    model[3].inplace = False  # Captum's full backward hooks refuse inplace activations
    theirs = _captum(model, torch.tensor(X), 1).numpy()
    np.testing.assert_allclose(theirs, _hand_plain(1), atol=1e-12)
    assert not np.allclose(theirs, gb.guided_backprop(model, torch.tensor(X), 1).numpy(), atol=1e-3)


class _TensorHookLeaky(nn.LeakyReLU):
    """An independent guided LeakyReLU: clamp the incoming gradient with a tensor hook, then autograd's own backward."""

    def forward(self, x):
        out = F.leaky_relu(x, self.negative_slope)
        if out.requires_grad:
            out.register_hook(lambda g: g.clamp(min=0))
        return out


def _reference(D, x, channels):
    """Guided backprop of each sample's spatial max of its channel of D's last map, by the tensor-hook route."""
    D = copy.deepcopy(D)
    for i, layer in enumerate(D.main):
        if isinstance(layer, nn.LeakyReLU):
            D.main[i] = _TensorHookLeaky(layer.negative_slope)
    x = x.clone().requires_grad_(True)
    _, maps = D(x, return_features=True)
    maps[-1][torch.arange(len(x)), channels].flatten(1).amax(1).sum().backward()
    return x.grad


def _hygiene(model):
    return {"hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in
                      model.modules()],
            "patched": ["forward" in m.__dict__ for m in model.modules()],
            "inplace": [m.inplace for m in model.modules() if hasattr(m, "inplace")],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grads": [p.grad for p in model.parameters()]}


def test_discriminator_is_left_unchanged_and_inplace_works():
    torch.manual_seed(0)
    D = ganlab.Discriminator(ganlab.ModelConfig(image_size=16, channels=1, ndf=4, nz=8)).eval()
    D.main[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    x = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    before, state = _hygiene(D), copy.deepcopy(D.state_dict())
    with torch.no_grad():
        logits = D(x)
    assert before["inplace"] == [True, True] and all(g is None for g in before["grads"])
    channels = torch.tensor([0, 3, 7, 1, 5])
    layer = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)][-1]
    with torch.no_grad():  # works inside no_grad too
        ours = gb.guided_backprop(D, x, gb.channel_max(channels), layer=layer)
    assert torch.allclose(ours, _reference(D, x, channels), atol=1e-6, rtol=0)
    assert ours.abs().sum() > 0 and not x.requires_grad
    plain_copy = copy.deepcopy(D)
    for m in plain_copy.modules():
        if isinstance(m, nn.LeakyReLU):
            m.inplace = False
    assert torch.allclose(gb.guided_backprop(plain_copy, x, gb.channel_max(channels), layer=plain_copy.main[-2]),
                          ours, atol=1e-7, rtol=0)
    gb.guided_backprop(D, x)  # the logit itself
    assert _hygiene(D) == before and ganlab.Discriminator.forward is type(D).forward

    def broken(output):
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        gb.guided_backprop(D, x, broken, layer=layer)
    with pytest.raises(ValueError, match="one number per sample"):
        gb.guided_backprop(D, x, lambda out: out[:, :2].flatten(1), layer=layer)
    assert _hygiene(D) == before
    with torch.no_grad():
        assert torch.equal(D(x), logits)
    assert all(torch.equal(v, state[k]) for k, v in D.state_dict().items())


def test_top_mass_fraction_by_hand():
    ramp = torch.arange(1, 101, dtype=torch.float32).view(1, 10, 10)  # 100 pixels: the top 5 are 96..100
    assert gb.top_mass_fraction(ramp).item() == pytest.approx(sum(range(96, 101)) / 5050)
    flat = torch.ones(1, 16, 16)  # ceil(0.05 * 256) = 13 pixels of 256
    assert gb.top_count(256) == 13 and gb.top_count(400) == 20 and gb.top_count(1024) == 52
    assert gb.top_mass_fraction(flat).item() == pytest.approx(13 / 256)
    spike = torch.zeros(1, 16, 16)
    spike[0, 3, 4] = 2.0
    assert gb.top_mass_fraction(spike).item() == pytest.approx(1.0)
    assert math.isnan(gb.top_mass_fraction(torch.zeros(1, 8, 8)).item())
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    by_numpy = [np.sort(m.numpy().ravel())[::-1][:52].sum() / m.numpy().sum() for m in maps]
    np.testing.assert_allclose(gb.top_mass_fraction(maps).numpy(), by_numpy, rtol=1e-6)


def _tile(grid, row, col, side, padding=2):
    """Tile (row, col) of a make_grid grid, channel 0."""
    top, left = padding + row * (side + padding), padding + col * (side + padding)
    return grid[0, top:top + side, left:left + side]


def test_component_in_a_report(tiny_run, tmp_path):
    from ganlab.plugin import registry
    from ganlab.report import make_report

    registry.reset()  # guided-backprop is a built-in: it loads through its entry point
    try:
        data, _ = make_report(tiny_run, only=["guided-backprop"], out=tmp_path / "r", device="cpu", progress=False,
                              settings={"guided-backprop.filters": "3", "guided-backprop.top": "2"})
    finally:
        registry.reset()
    (run,) = data.components
    assert run.status == "ok", run.error
    m, images = run.result.metrics, run.result.images
    side, top, filters = 16, 2, 3
    assert [tuple(i.image.shape) for i in images] == [(3, filters * (side + 2) + 2, 2 * top * (side + 2) + 2)] * 2
    assert m["filters"] == filters and m["top5_mass_difference"] == pytest.approx(
        m["top5_mass_trained"] - m["top5_mass_random"])
    # recompute the trained and the random D independently: top images, saliency tiles and the metric
    gan = ganlab.load(tiny_run)
    test, _ = ganlab.load_split("digits", "test", image_size=side, channels=1, limit=1000, progress=False)
    assert m["images"] == len(test)
    torch.manual_seed(0)
    models = {"trained": gan.discriminator.eval(), "random": ganlab.Discriminator(gan.config).eval()}
    for (name, D), image in zip(models.items(), images):
        x = ganlab.to_unit_range(test)
        with torch.no_grad():
            response = D(x, return_features=True)[1][-1][:, :filters].amax((2, 3))
        order = response.topk(top, dim=0).indices.T.flatten()
        sal = _reference(D, x[order], torch.arange(filters).repeat_interleave(top)).abs().amax(1)
        masses = []
        for k, (i, s) in enumerate(zip(order, sal)):
            f, j = divmod(k, top)
            assert torch.allclose(_tile(image.image, f, j, side), (x[i, 0] + 1) / 2, atol=1e-6), (name, f, j)
            assert torch.allclose(_tile(image.image, f, top + j, side), s / s.max(), atol=1e-5), (name, f, j)
            flat = np.sort(s.numpy().ravel())[::-1]
            masses.append(flat[:13].sum() / flat.sum())
        assert m[f"top5_mass_{name}"] == pytest.approx(np.mean(masses), rel=1e-5), name
        assert 13 / 256 <= m[f"top5_mass_{name}"] <= 1


@pytest.mark.parametrize("name", ["filters", "top", "images", "batch_size"])
def test_options_below_one_are_refused_before_anything_runs(tiny_run, tmp_path, name):
    from ganlab.plugin import registry
    from ganlab.report import make_report

    registry.reset()
    try:
        with pytest.raises(ganlab.GanlabError, match=f"guided-backprop.{name}=0: must be >= 1"):
            make_report(tiny_run, only=["guided-backprop"], out=tmp_path / "r", device="cpu", progress=False,
                        settings={f"guided-backprop.{name}": "0"})
    finally:
        registry.reset()
