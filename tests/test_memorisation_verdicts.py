"""The verdict line and problems of nearest-neighbours, data-copying and hash-collisions: their numbers are the
component's metrics, a G that outputs training images verbatim is called a copier, one that does not is not."""
import dataclasses
import json
import re

import numpy as np
import pytest
from markupsafe import escape

import ganlab
from ganlab import load_split, to_unit_range
from ganlab.plugin import registry
from ganlab.testing import make_context, run_component
from ganlab_plugins.memorisation.data_copying import DataCopying
from ganlab_plugins.memorisation.dedup import HashCollisions
from ganlab_plugins.memorisation.neighbours import NearestNeighbours, copy_limit

NUMBER = r"(-?[\d.]+(?:e-?\d+)?)"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_gan(tiny_run):
    return ganlab.load(tiny_run / "last.pt")


def _pretending(gan, images_uint8):
    """The tiny GAN (its D included) with a G that "samples" the given real images, in order."""
    fake = dataclasses.replace(gan)
    images = to_unit_range(images_uint8)
    fake.sample = lambda n, seed=0, batch_size=256: images[:n].clone()
    return fake


@pytest.fixture(scope="module")
def digits():
    """The training split, and the held-out images outside the 450 that nearest-neighbours takes with
    test_limit=450 (load_split's subset: the first 450 of a fixed permutation)."""
    train, _ = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, _ = load_split("digits", "test", image_size=16, channels=1, progress=False)
    return train, test[np.sort(np.random.default_rng(0).permutation(len(test))[450:])]


def _numbers(pattern, line):
    found = re.fullmatch(pattern.replace("NUMBER", NUMBER), line)
    assert found, line
    return [float(x) for x in found.groups()]


def _check_neighbours(result):
    m = result.metrics
    pixels, features, expected = _numbers(r"copy fraction NUMBER in pixels and NUMBER in features against NUMBER "
                                          r"expected: .*", result.verdict)
    assert pixels == pytest.approx(m["copy_fraction_pixels"], rel=2e-3)
    assert features == pytest.approx(m["copy_fraction_features"], rel=2e-3)
    assert expected == m["copy_fraction_expected"]
    copying = max(m["copy_fraction_pixels"], m["copy_fraction_features"]) > copy_limit(m)
    assert ("G copies training images" in result.verdict) == copying
    assert any("G memorises" in p and "copy fraction" in p for p in result.problems) == copying
    exact = [p for p in result.problems if "exact copies" in p]
    assert [_numbers(r"NUMBER of NUMBER samples are exact copies .*", p) for p in exact] == (
        [[m["exact_copies"], m["samples"]]] if m["exact_copies"] else [])
    return copying


def test_nearest_neighbours_calls_a_copier_a_copier_and_held_out_images_not(tiny_gan, digits):
    train, unseen = digits
    copier = run_component(NearestNeighbours(), _pretending(tiny_gan, train), options={"samples": 300})
    assert _check_neighbours(copier) and copier.metrics["exact_copies"] == 300
    assert len(copier.problems) == 2
    honest = run_component(NearestNeighbours(), _pretending(tiny_gan, unseen),
                           options={"samples": 400, "test_limit": 450})
    assert not _check_neighbours(honest) and honest.problems == []
    assert "no closer to the training images than new images are" in honest.verdict


def test_nearest_neighbours_without_a_held_out_split_says_what_can_be_read(tiny_gan):
    ctx = make_context(tiny_gan, NearestNeighbours(), options={"samples": 40})
    ctx = dataclasses.replace(ctx, layout=dataclasses.replace(ctx.layout, heldout=None))
    result = NearestNeighbours().run(ctx)
    median, exact = _numbers(r"median distance to the nearest training image NUMBER in pixels, NUMBER exact "
                             r"copies; no held-out split, so no copy fraction: look at the image grids", result.verdict)
    assert median == pytest.approx(result.metrics["median_distance_generated_pixels"], rel=2e-3)
    assert exact == result.metrics["exact_copies"] == 0 and result.problems == []


def test_data_copying_verdict_is_c_t_and_copying_is_a_problem(tiny_gan, digits):
    train, unseen = digits
    for images, copying in ((train, True), (unseen, False)):
        result = run_component(DataCopying(), _pretending(tiny_gan, images), options={"samples": 400,
                                                                                      "test_limit": 450})
        value, sd = result.metrics["C_T"], result.metrics["C_T_null_sd"]
        assert _numbers(r"C_T = NUMBER is .*", result.verdict) == [pytest.approx(value, abs=0.005)]
        assert (value < -2 * sd) == copying
        assert ("well below 0" in result.verdict) == copying
        assert [_numbers(r"C_T = NUMBER, beyond 2 null standard deviations \(NUMBER\) below 0: G copies .*", p)
                for p in result.problems] == ([[pytest.approx(value, abs=0.005), pytest.approx(sd, abs=0.005)]]
                                              if copying else [])


def _check_collisions(result, max_rms=0.04):
    m = result.metrics
    collides, n, rate, train_rate, copies, rms = _numbers(
        r"NUMBER of NUMBER samples share a training image's hash \(rate NUMBER; training images with each other: "
        r"NUMBER\), NUMBER within NUMBER pixel RMS of it: (?:copies of training images|no copies)", result.verdict)
    assert n == m["samples"] and collides == round(m["collision_rate"] * n) and copies == round(m["copy_rate"] * n)
    assert rate == pytest.approx(m["collision_rate"], rel=2e-3)
    assert train_rate == pytest.approx(m["train_collision_rate"], rel=2e-3, abs=1e-12) and rms == max_rms
    assert [_numbers(r"NUMBER of NUMBER samples are copies of training images .*", p) for p in result.problems] == (
        [[copies, n]] if copies else [])
    return copies


def test_hash_collisions_calls_training_images_copies_and_noise_not(tiny_gan, tmp_path):
    train, _ = load_split("digits", "train", image_size=32, channels=3, limit=300, progress=False)
    options = {"train_limit": 300, "samples": 50, "epochs": 1}
    copier = run_component(HashCollisions(), _pretending(tiny_gan, train), options=options, cache_dir=tmp_path)
    assert _check_collisions(copier) == 50 and copier.metrics["copy_rate"] == 1.0
    honest = run_component(HashCollisions(), tiny_gan, options=options, cache_dir=tmp_path)
    assert _check_collisions(honest) == 0 and honest.problems == []


def test_the_report_shows_each_verdict_and_a_2_epoch_g_copies_nothing(tiny_run, tmp_path):
    from ganlab.report import make_report

    registry.reset()  # built-ins: they load through their entry points
    try:
        make_report(tiny_run, only=["nearest-neighbours", "data-copying", "hash-collisions"], out=tmp_path / "r",
                    device="cpu", progress=False,
                    settings={"nearest-neighbours.samples": "200", "data-copying.samples": "200",
                              "hash-collisions.samples": "64", "hash-collisions.train_limit": "300",
                              "hash-collisions.epochs": "1"})
    finally:
        registry.reset()
    components = json.loads((tmp_path / "r" / "metrics.json").read_text())["components"]
    results = {name: ganlab.Result(metrics=entry["metrics"], verdict=entry["verdict"], problems=entry["problems"])
               for name, entry in components.items()}
    assert not _check_neighbours(results["nearest-neighbours"]) and results["nearest-neighbours"].problems == []
    c_t = results["data-copying"].metrics["C_T"]
    assert _numbers(r"C_T = NUMBER is well above 0: .*", results["data-copying"].verdict) == [
        pytest.approx(c_t, abs=0.005)]
    assert _check_collisions(results["hash-collisions"]) == 0
    assert all(not r.problems for r in results.values())
    html = (tmp_path / "r" / "index.html").read_text()
    assert all(str(escape(r.verdict)) in html for r in results.values())
