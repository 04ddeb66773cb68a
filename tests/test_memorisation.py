"""Memorisation checks (nearest-neighbours, data-copying) against sklearn, scipy and hand computations.

A stand-in generator that returns training images must look like a copier (distance 0, copy fraction 1, C_T far
below 0); one that returns held-out images must look like a model that generalises (copy fraction about the
percentile, C_T near 0). The digits dataset has 898 training and 899 held-out images at 16x16.
"""
import dataclasses
import json
import types
from importlib import metadata

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

import ganlab
from ganlab import GanlabError, load_split, to_uint8, to_unit_range
from ganlab.plugin import registry
from ganlab.plugin.components import check_result
from ganlab.testing import make_context
from ganlab_plugins.memorisation import data_copying, neighbours
from ganlab_plugins.memorisation.data_copying import DataCopying
from ganlab_plugins.memorisation.distances import c_t
from ganlab_plugins.memorisation.neighbours import NearestNeighbours

SIZE = dict(image_size=16, channels=1, progress=False)


@pytest.fixture(scope="module")
def digits():
    train, _ = load_split("digits", "train", **SIZE)
    test, _ = load_split("digits", "test", **SIZE)
    return train, test


@pytest.fixture(scope="module")
def tiny_gan(tiny_run):
    return ganlab.load(tiny_run / "last.pt")


@pytest.fixture(scope="module")
def run_component(tmp_path_factory):
    """ganlab.testing.run_component, with decoded splits and D's features shared by this module's tests."""
    cache, splits = tmp_path_factory.mktemp("memorisation-cache"), {}

    def run(component, gan, **kwargs):
        ctx = make_context(gan, component, cache_dir=cache, **kwargs)
        return check_result(component.run(dataclasses.replace(ctx, split_cache=splits)), component.name)

    return run


def _pretending(gan, images_uint8):
    """The tiny GAN (its D included) with a G that "samples" the given real images, in order."""
    fake = dataclasses.replace(gan)
    images = to_unit_range(images_uint8)
    fake.sample = lambda n, seed=0, batch_size=256: images[:n].clone()
    return fake


def _nn_distances(queries_uint8, references_uint8):
    """sklearn's exact nearest distance of each query in [-1, 1] pixel units."""
    flat = [to_unit_range(x).flatten(1).double().numpy() for x in (queries_uint8, references_uint8)]
    return NearestNeighbors(n_neighbors=1, algorithm="brute").fit(flat[1]).kneighbors(flat[0])[0][:, 0]


def _brute_z(gen_d, test_d):
    """U by counting pairs (generated farther: 1, tie: 1/2) and its Z, written out."""
    g, t = np.asarray(gen_d)[:, None], np.asarray(test_d)[None, :]
    u = (g > t).sum() + 0.5 * (g == t).sum()
    m, n = g.size, t.size
    return u, (u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12)


def test_c_t_one_cell_against_a_hand_computation():
    rng = np.random.default_rng(0)
    train, test, generated = rng.normal(size=(30, 3)), rng.normal(size=(7, 3)), 0.5 * rng.normal(size=(5, 3))
    value, rows = c_t(train, test, generated, cells=1, seed=0, min_cell_fraction=0.0)
    gen_d = np.linalg.norm(generated[:, None] - train[None], axis=2).min(1)
    test_d = np.linalg.norm(test[:, None] - train[None], axis=2).min(1)
    u, z = _brute_z(gen_d, test_d)
    assert u == mannwhitneyu(gen_d, test_d).statistic  # scipy's U is the first (generated) sample's
    assert rows == [dict(cell=0, train=30, test=7, generated=5, test_fraction=1.0, generated_fraction=1.0,
                         U=pytest.approx(u), Z=pytest.approx(z, rel=1e-9), used=True)]
    assert value == pytest.approx(z, rel=1e-9)


def test_c_t_weights_cells_by_test_mass_and_drops_sparse_cells():
    rng = np.random.default_rng(1)
    near, far = np.zeros(4), np.full(4, 100.0)
    train = np.concatenate([near + rng.normal(size=(40, 4)), far + rng.normal(size=(20, 4))])
    test = np.concatenate([near + rng.normal(size=(30, 4)), far + rng.normal(size=(10, 4))])
    # near the origin the samples sit on training points (copying); far away they are ordinary
    generated = np.concatenate([train[:18] + 1e-3, far + rng.normal(size=(2, 4))])
    expected = {}
    for name, lo, hi, t_lo, t_hi, g_lo, g_hi in (("near", 0, 40, 0, 30, 0, 18), ("far", 40, 60, 30, 40, 18, 20)):
        gen_d = np.linalg.norm(generated[g_lo:g_hi, None] - train[None, lo:hi], axis=2).min(1)
        test_d = np.linalg.norm(test[t_lo:t_hi, None] - train[None, lo:hi], axis=2).min(1)
        expected[name] = _brute_z(gen_d, test_d)[1]
    assert expected["near"] < -4  # the copied region
    both, rows = c_t(train, test, generated, cells=2, seed=0, min_cell_fraction=0.1)  # far holds 2/20 = 0.1: kept
    by_size = {r["train"]: r for r in rows}
    assert by_size[40]["Z"] == pytest.approx(expected["near"]) and by_size[20]["Z"] == pytest.approx(expected["far"])
    assert both == pytest.approx(0.75 * expected["near"] + 0.25 * expected["far"])  # held-out mass 30/40, 10/40
    near_only, rows = c_t(train, test, generated, cells=2, seed=0, min_cell_fraction=0.11)
    assert [r["used"] for r in sorted(rows, key=lambda r: -r["train"])] == [True, False]
    assert near_only == pytest.approx(expected["near"])  # weights renormalised to the cells kept
    nothing, _ = c_t(train, test, generated, cells=2, seed=0, min_cell_fraction=0.95)
    assert np.isnan(nothing)


def test_a_copier_is_caught(run_component, tiny_gan, digits):
    train, test = digits
    copier = _pretending(tiny_gan, train)
    found = run_component(NearestNeighbours(), copier, options={"samples": len(train)})
    m = found.metrics
    # exact copies are at distance 0, not the float32 expansion's ~1e-2 (the distances are recomputed exactly)
    assert m["median_distance_generated_pixels"] == 0.0 and m["median_distance_generated_features"] == 0.0
    assert m["copy_fraction_pixels"] == 1.0 and m["copy_fraction_features"] == 1.0
    test_d = _nn_distances(test, train)
    assert m["median_distance_test_pixels"] == pytest.approx(np.median(test_d), rel=1e-4)
    assert m["copy_threshold_pixels"] == pytest.approx(np.percentile(test_d, 1), rel=1e-4)
    assert m["test_images"] == 899 and m["train_images_searched"] == 898 and m["copy_fraction_expected"] == 0.01
    copying = run_component(DataCopying(), copier, options={"samples": len(train)})
    assert copying.metrics["C_T"] < -5 and copying.metrics["worst_cell_Z"] < -2
    assert copying.metrics["cells_used"] == 10 and copying.metrics["test_mass_used"] == pytest.approx(1.0)
    assert "well below 0" in copying.verdict


def test_held_out_images_look_like_a_model_that_generalises(run_component, tiny_gan, digits):
    train, test = digits
    baseline, _ = load_split("digits", "test", limit=450, **SIZE)  # what ctx.split(..., limit=450) gives
    keep = np.random.default_rng(0).permutation(len(test))  # load_split's fixed subset permutation
    assert torch.equal(test[np.sort(keep[:450])], baseline)
    unseen = test[np.sort(keep[450:])]  # the other 449 held-out images, never in the baseline
    honest = _pretending(tiny_gan, unseen)
    found = run_component(NearestNeighbours(), honest, options={"samples": len(unseen), "test_limit": 450})
    gen_d, test_d = _nn_distances(unseen, train), _nn_distances(baseline, train)
    threshold = np.percentile(test_d, 1)
    assert found.metrics["copy_threshold_pixels"] == pytest.approx(threshold, rel=1e-4)
    assert found.metrics["copy_fraction_pixels"] == pytest.approx((gen_d < threshold).mean())
    assert found.metrics["copy_fraction_pixels"] <= 0.04 and found.metrics["copy_fraction_features"] <= 0.04
    assert found.metrics["median_distance_generated_pixels"] == pytest.approx(np.median(gen_d), rel=1e-4)
    copying = run_component(DataCopying(), honest, options={"samples": len(unseen), "test_limit": 450})
    assert abs(copying.metrics["C_T"]) < 2
    assert copying.metrics["C_T_null_sd"] < 0.5  # 10 cells of similar mass: about 1 / sqrt(10)


def test_data_copying_matches_an_independent_implementation(run_component, tiny_gan, digits):
    train, test = digits
    generated = to_uint8(tiny_gan.sample(300, seed=0))
    result = run_component(DataCopying(), tiny_gan, options={"samples": 300, "cells": 5, "min_cell_fraction": 0.05})
    flat = [to_unit_range(x).flatten(1).numpy() for x in (train, test, generated)]
    kmeans = KMeans(n_clusters=5, n_init=1, random_state=0).fit(flat[0])
    cells = [kmeans.predict(x) for x in flat]
    total, weight, rows = 0.0, 0.0, {}
    for c in range(5):
        T, P, Q = (x[lab == c].astype(np.float64) for x, lab in zip(flat, cells))
        if len(Q) == 0 or len(P) == 0:
            continue
        nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(T)
        z = _brute_z(nn.kneighbors(Q)[0][:, 0], nn.kneighbors(P)[0][:, 0])[1]
        rows[(len(T), len(P), len(Q))] = z
        if len(Q) / 300 >= 0.05:
            total, weight = total + len(P) / 899 * z, weight + len(P) / 899
    assert result.metrics["C_T"] == pytest.approx(total / weight, rel=1e-4)
    table = result.tables[0]
    seen = {(r[1], r[2], r[3]): r[6] for r in table.rows if r[6] != "n/a"}
    assert seen == pytest.approx({key: round(z, 3) for key, z in rows.items()}, abs=2e-3)


def test_without_discriminator_or_held_out_split(run_component, tiny_gan, digits):
    no_d = dataclasses.replace(tiny_gan, discriminator=None)
    ctx = make_context(no_d, NearestNeighbours(), options={"samples": 50})
    ctx = dataclasses.replace(ctx, layout=dataclasses.replace(ctx.layout, heldout=None))
    result = NearestNeighbours().run(ctx)
    assert not any(k.endswith("_features") for k in result.metrics)
    assert "copy_fraction_pixels" not in result.metrics and "test_images" not in result.metrics
    gen_d = _nn_distances(to_uint8(tiny_gan.sample(50, seed=0)), digits[0])
    assert result.metrics["median_distance_generated_pixels"] == pytest.approx(np.median(gen_d), rel=1e-4)
    assert any("no discriminator" in t for t in result.text) and any("no held-out split" in t for t in result.text)
    with pytest.raises(GanlabError, match="space=pixels"):
        run_component(DataCopying(), no_d, options={"space": "discriminator"})
    with pytest.raises(GanlabError, match="choose one of pixels, discriminator"):
        make_context(tiny_gan, DataCopying(), options={"space": "features"})


@pytest.fixture
def memorisation_plugins(monkeypatch):
    """Our two modules registered in-process, with any installed entry point for them switched off."""
    ours = ("ganlab_plugins.nearest_neighbours", "ganlab_plugins.memorisation")
    installed = [ep.name for ep in metadata.entry_points(group="ganlab") if ep.value.startswith(ours)]
    monkeypatch.setenv("GANLAB_DISABLE_PLUGINS", ",".join(installed))
    module = types.ModuleType("memorisation-under-test")
    module.ganlab_register_analyses = neighbours.ganlab_register_analyses
    module.ganlab_register_evaluators = data_copying.ganlab_register_evaluators
    registry.reset()
    try:
        yield registry.register_plugin(module, "memorisation-under-test")
    finally:
        registry.reset()


def test_in_a_report_on_tiny_run(memorisation_plugins, tiny_run, tiny_gan, digits, tmp_path):
    from ganlab.report import make_report

    _, out = make_report(tiny_run, only=["nearest-neighbours", "data-copying"], out=tmp_path / "r", device="cpu",
                         progress=False, settings={"nearest-neighbours.samples": "200", "data-copying.samples": "200"})
    components = json.loads((out / "metrics.json").read_text())["components"]
    assert {k: v["status"] for k, v in components.items()} == {"nearest-neighbours": "ok", "data-copying": "ok"}
    m = components["nearest-neighbours"]["metrics"]
    train, test = digits
    gen_d = _nn_distances(to_uint8(tiny_gan.sample(200, seed=0)), train)
    test_d = _nn_distances(test, train)
    assert m["median_distance_generated_pixels"] == pytest.approx(np.median(gen_d), rel=1e-4)
    assert m["copy_fraction_pixels"] == pytest.approx((gen_d < np.percentile(test_d, 1)).mean())
    assert m["sample_nn_rmse"] == pytest.approx(gen_d.mean() / 16, rel=1e-4)
    assert m["median_distance_generated_pixels"] > m["median_distance_test_pixels"]  # a 2-epoch G copies nothing
    assert components["data-copying"]["metrics"]["C_T"] > 0  # ... its samples are farther away than real digits
    html = (out / "index.html").read_text()
    assert "closest to the training set" in html and "Cells (k-means" in html


def test_on_the_gpu_both_agree_with_the_cpu(run_component, tiny_gan):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    for component in (NearestNeighbours(), DataCopying()):
        cpu = run_component(component, tiny_gan, options={"samples": 200}).metrics
        gpu = run_component(component, tiny_gan.path, options={"samples": 200}, device="cuda").metrics
        assert gpu.keys() == cpu.keys()
        for key in cpu:
            # G and D run on the GPU too: a sample may round to another grey level, or one U pair flip
            assert gpu[key] == pytest.approx(cpu[key], rel=1e-3, abs=0.02), (component.name, key)
