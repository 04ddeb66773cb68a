"""filter-health: collapsed maps, oscillating maps across epochs, sample diversity, D's first filters."""
import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_options
from scipy.spatial.distance import pdist

import ganlab
from ganlab import sample_latent, to_unit_range
from ganlab.plugin import registry
from ganlab.report import make_report
from ganlab_plugins.filter_health import (
    collapsed,
    compared_epochs,
    map_variance,
    mean_pairwise_distance,
    oscillating,
    oscillation,
)


def _flagged(variances):
    return [collapsed(v, 1e-3, 1e-8).nonzero().flatten().tolist() for v in variances]


def test_a_map_forced_constant_is_flagged_and_no_healthy_map_is(tiny_run):
    gan = ganlab.load(tiny_run / "last.pt")
    z = sample_latent(gan.config, 200, torch.Generator().manual_seed(0))
    real, _ = ganlab.load_split("digits", "test", image_size=16, channels=1, limit=200)
    real = to_unit_range(real)
    G, D = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)
    healthy_g = map_variance(G, z, batch_size=64)  # streamed in 4 uneven batches
    healthy_d = map_variance(D, real, batch_size=64)
    with torch.no_grad():  # the same statistic from whole batches: variance over images, mean over positions
        expected_g = [m.var(0, unbiased=False).mean((1, 2)) for m in G(z, return_features=True)[1]]
        expected_d = [m.var(0, unbiased=False).mean((1, 2)) for m in D(real, return_features=True)[1]]
    for got, expected in zip(healthy_g + healthy_d, expected_g + expected_d):
        assert torch.allclose(got.float(), expected, rtol=1e-4, atol=1e-9)
    assert _flagged(healthy_g) == [[], []] and _flagged(healthy_d) == [[], []]

    with torch.no_grad():
        # G = ConvT, BN, ReLU (G1: 16 maps), ConvT, BN, ReLU (G2: 8 maps), ConvT, Tanh
        G.main[0].weight[:, 3] = 0
        G.main[1].weight[3], G.main[1].bias[3] = 0, 0.5  # G1 map 3 = ReLU(0.5) everywhere, for every z
        G.main[3].weight[:, 5] = 0
        G.main[4].weight[5] = 0  # G2 map 5 = ReLU(its BN bias)
        # D = Conv, LeakyReLU (D1: 8 maps), Conv, BN, LeakyReLU (D2: 16 maps), Conv
        D.main[0].weight[2] = 0  # D1 map 2 = 0
        D.main[2].weight[7] = 0
        D.main[3].weight[7] = 0  # D2 map 7 = LeakyReLU(its BN bias)
    broken_g, broken_d = map_variance(G, z, 64), map_variance(D, real, 64)
    assert broken_g[0][3] == 0 and broken_d[0][2] == 0  # exactly, not just small
    assert _flagged(broken_g) == [[3], [5]] and _flagged(broken_d) == [[2], [7]]


def test_thresholds_relative_to_the_median_and_the_floor():
    v = torch.tensor([1.0, 2.0, 3.0, 0.001, 0.002, 4.0])  # median (1 + 2) / 2 -> threshold 0.0015
    assert collapsed(v, 1e-3, 1e-8).tolist() == [False, False, False, True, False, False]
    dead = torch.zeros(4)  # a whole layer dead: the median is 0 and the floor decides
    assert collapsed(dead, 1e-3, 1e-8).all() and not collapsed(torch.full((4,), 1e-6), 1e-3, 1e-8).any()


def test_oscillation_detector_on_synthetic_series():
    epochs = torch.arange(8, dtype=torch.float64)
    series = torch.stack([
        1.5 + 0.5 * (-1) ** epochs,  # 2, 1, 2, 1, ...: flips every step, amplitude 1 / 1.5
        1 + epochs,  # monotone
        torch.sin(epochs / 3) + 2,  # smooth: changes direction once
        1 + 0.01 * (epochs % 2),  # alternates, but by 1%: a settled map's jitter
        torch.zeros(8),  # dead map: no NaN
        torch.tensor([1.0, 3, 1, 3, 1, 3, 3, 3]),  # flips in 4 of 6 pairs
    ], dim=1)
    flips, amplitude = oscillation(series)
    assert flips.tolist()[:2] == [1.0, 0.0] and flips[2] == pytest.approx(1 / 6) and flips[3] == 1.0
    assert flips[5] == pytest.approx(4 / 6) and amplitude[5] == pytest.approx((2 * 5 / 7) / (18 / 8))
    assert amplitude[0] == pytest.approx(1 / 1.5) and torch.isfinite(amplitude).all()
    assert oscillating(series).tolist() == [True, False, False, False, False, True]
    assert oscillating(series, min_flip_fraction=0.7).tolist() == [True, False, False, False, False, False]


def test_mean_pairwise_distance_matches_scipy():
    x = torch.randn(37, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    assert mean_pairwise_distance(x) == pytest.approx(pdist(x.flatten(1).numpy().astype(np.float64)).mean(), rel=1e-12)
    # far from the origin, with exact duplicates, in blocks that do not divide N: still scipy's number
    far = x.flatten(1) * 0.01 + 100
    far[5] = far[30] = far[2]
    expected = pdist(far.numpy().astype(np.float64)).mean()
    assert mean_pairwise_distance(far, chunk=8) == pytest.approx(expected, rel=1e-9)


def test_compared_epochs_up_to_the_checkpoint_and_evenly_capped(tmp_path):
    for e in range(1, 11):
        (tmp_path / f"epoch_{e:04d}.pt").touch()
    (tmp_path / "last.pt").touch()
    (tmp_path / "epoch_best.pt").touch()  # not a name the trainer writes
    assert [e for e, _ in compared_epochs(tmp_path / "last.pt", 20)] == list(range(1, 11))
    assert [e for e, _ in compared_epochs(tmp_path / "last.pt", 4)] == [1, 4, 7, 10]
    assert [e for e, _ in compared_epochs(tmp_path / "epoch_0005.pt", 20)] == [1, 2, 3, 4, 5]
    assert compared_epochs(tmp_path / "other.pt", 20) == []


def _report(checkpoint, out, **settings):
    registry.reset()
    try:
        data, _ = make_report(checkpoint, only=["filter-health"], out=out, device="cpu", progress=False,
                              settings={f"filter-health.{k}": str(v) for k, v in settings.items()})
    finally:
        registry.reset()
    component = data.components[0]
    assert component.status == "ok", component.error
    return component.result


def test_runs_in_a_report_with_the_figure_across_three_epochs(tiny_run, tmp_path):
    run = tmp_path / "run"  # tiny_run's 2 epochs, resumed for a third
    shutil.copytree(tiny_run, run)
    ganlab.train(tiny_options(run, epochs=3, resume=str(run / "last.pt")), progress=False)
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == [f"epoch_000{e}.pt" for e in (1, 2, 3)]
    result = _report(run, tmp_path / "r", samples=64, epoch_samples=32)
    assert result.metrics["epochs_compared"] == 3 and len(result.figures) == 1
    assert "over epochs 1-3" in result.figures[0].title
    assert 0 <= result.metrics["oscillating_fraction"] <= 1
    assert f"; {result.metrics['oscillating_maps']} of 48 maps oscillate across 3 epochs; " in result.verdict
    assert [row[:2] for row in result.tables[0].rows] == [["G1", 16], ["G2", 8], ["D1", 8], ["D2", 16]]
    assert result.images[0].image.shape == (3, 36, 8 * 34 + 2)  # 8 filters of 4 x 4 shown 8x larger, padded
    # diversity against an independent computation on the same images
    gan = ganlab.load(run / "last.pt")
    fake = ((gan.sample(64, seed=0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    train, _ = ganlab.load_split("digits", "train", image_size=16, channels=1, limit=64)
    for space, embed in (("pixel", lambda x: to_unit_range(x).flatten(1).numpy()),
                         ("feature", lambda x: ganlab.discriminator_features(gan.discriminator, x))):
        fake_d, train_d = pdist(embed(fake).astype(np.float64)).mean(), pdist(embed(train).astype(np.float64)).mean()
        assert result.metrics[f"{space}_distance_generated"] == pytest.approx(fake_d, rel=1e-5)
        assert result.metrics[f"{space}_distance_train"] == pytest.approx(train_d, rel=1e-5)
        assert result.metrics[f"{space}_distance_ratio"] == pytest.approx(fake_d / train_d, rel=1e-5)
    # from epoch 2's checkpoint only epochs 1 and 2 precede it: too few, and the text says so
    early = _report(run / "epoch_0002.pt", tmp_path / "r2", samples=32)
    assert not early.figures and "epochs_compared" not in early.metrics
    assert any("needs at least 3 epoch checkpoints" in t and "found 2" in t for t in early.text)
    assert early.metrics["collapsed_fraction_G"] == 0 and "collapsed_fraction_D2" in early.metrics


@pytest.mark.parametrize("name, value, message", [("samples", "1", "must be >= 2"), ("max_epochs", "2", "must be >= 3"),
                                                  ("min_flip_fraction", "-0.1", "must be >= 0")])
def test_out_of_range_options_are_refused_before_anything_runs(tiny_run, tmp_path, name, value, message):
    registry.reset()
    try:
        with pytest.raises(ganlab.GanlabError, match=f"filter-health.{name}={value}: {message}"):
            make_report(tiny_run, only=["filter-health"], out=tmp_path / "r", device="cpu", progress=False,
                        settings={f"filter-health.{name}": value})
    finally:
        registry.reset()
    assert not (tmp_path / "r").exists()
