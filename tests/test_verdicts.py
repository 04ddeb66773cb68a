"""Each built-in component's verdict line states its own metrics, and its problems name a broken model."""
import math

import pytest
import torch

import ganlab
from ganlab.testing import registered, run_component


def _component(name):
    return {**registered("evaluators"), **registered("analyses")}[name]


def _broken(tiny_run, change):
    gan = ganlab.load(tiny_run / "last.pt")
    with torch.no_grad():
        change(gan)
    return gan


def test_d_score(tiny_run):
    result = run_component(_component("d-score"), tiny_run / "last.pt", options={"samples": 200})
    m = result.metrics
    assert (f"D is right on {m['accuracy']:.1%} of {m['images']} held-out images and as many samples (mean D(x) "
            f"{m['D_x_mean']:.3f}, mean D(G(z)) {m['D_G_z_mean']:.3f})") in result.verdict
    assert not result.problems


def test_d_score_when_d_rates_every_image_alike(tiny_run):
    gan = _broken(tiny_run, lambda gan: gan.discriminator.main[-1].weight.zero_())  # logit 0 for every image
    result = run_component(_component("d-score"), gan, options={"samples": 50})
    assert result.metrics["accuracy"] == 0 and result.metrics["D_x_mean"] == result.metrics["D_G_z_mean"] == 0.5
    assert result.verdict == ("D is right on 0.0% of 50 held-out images and as many samples (mean D(x) 0.500, mean "
                              "D(G(z)) 0.500): it rates samples at least as real as real images")


def test_latent_walk(tiny_run):
    result = run_component(_component("latent-walk"), tiny_run / "last.pt", options={"rows": 3, "steps": 2})
    m, rows = result.metrics, result.tables[0].rows
    worst = max(rows, key=lambda row: row[3])
    assert (f"the largest step along a walk is {m['max_step_over_median_step']:.2f}x the median step (worst walk "
            f"{m['max_step_over_median_step_worst']:.2f}x) over 3 walks through 9 points: ") in result.verdict
    assert worst[3] == pytest.approx(m["max_step_over_median_step_worst"], abs=1e-3)
    if worst[3] > 3:
        assert f"walk {worst[0]} jumps between frames {worst[4]}" in result.verdict
    else:
        assert result.verdict.endswith("smooth, no jump that would suggest memorisation")
    assert not result.problems


def test_latent_walk_problem_for_a_generator_that_ignores_z_and_error_for_nan(tiny_run):
    last = lambda gan: gan.generator.main[-2].weight  # noqa: E731 - G's last transposed convolution
    flat = _broken(tiny_run, lambda gan: last(gan).zero_())  # tanh(0) everywhere, whatever z
    result = run_component(_component("latent-walk"), flat, options={"rows": 2, "steps": 2})
    assert result.problems == ["G draws the same image all along every walk (2 walks): its output ignores z, a "
                               "collapsed generator"]
    assert result.metrics["max_step_over_median_step"] == 1 and "(worst walk 1.00x)" in result.verdict
    nan = _broken(tiny_run, lambda gan: last(gan)[0, 0, 0, 0].fill_(float("nan")))
    with pytest.raises(ganlab.GanlabError, match="NaN or infinite in [0-9]+ of 8704 pixel values"):  # 2 x 17 x 256
        run_component(_component("latent-walk"), nan, options={"rows": 2, "steps": 2})


def test_guided_backprop(tiny_run):
    result = run_component(_component("guided-backprop"), tiny_run / "last.pt",
                           options={"filters": 2, "top": 2, "images": 200})
    m = result.metrics
    assert (f"put {m['top5_mass_trained']:.1%} of their saliency in the top 5% of pixels against "
            f"{m['top5_mass_random']:.1%} for a random D (a flat map gives {13 / 256:.1%})") in result.verdict
    assert f"({100 * m['top5_mass_difference']:+.1f} points)" in result.verdict
    assert ("look at more localised" if m["top5_mass_difference"] > 0 else "look at no more") in result.verdict
    assert not result.problems


def test_guided_backprop_problem_when_the_last_filters_ignore_the_input(tiny_run):
    # D = Conv, LeakyReLU, Conv, BN, LeakyReLU, Conv: the second conv at 0 makes the last maps constant
    dead = _broken(tiny_run, lambda gan: gan.discriminator.main[2].weight.zero_())
    result = run_component(_component("guided-backprop"), dead, options={"filters": 2, "top": 2, "images": 50})
    assert math.isnan(result.metrics["top5_mass_trained"])
    assert result.problems == ["the trained D's saliency is zero on every top image of its first 2 last-layer "
                               "filters: they do not respond to the input"]


def test_filter_health(tiny_run):
    result = run_component(_component("filter-health"), tiny_run / "last.pt", options={"samples": 64})
    m = result.metrics
    assert m["collapsed_fraction_G"] == m["collapsed_fraction_D"] == 0 and not result.problems
    assert result.verdict == (f"no collapsed maps in G or D; samples are {m['pixel_distance_ratio']:.2f}x as spread "
                              f"as training images in pixels and {m['feature_distance_ratio']:.2f}x in D's features")


def test_filter_health_problem_for_a_dead_layer(tiny_run):
    def kill_g1(gan):  # G = ConvT, BN, ReLU (G1: 16 maps), ConvT, BN, ReLU (G2: 8 maps), ConvT, Tanh
        gan.generator.main[1].weight.zero_()
        gan.generator.main[1].bias.fill_(-1.0)  # ReLU(-1) = 0 for every z

    result = run_component(_component("filter-health"), _broken(tiny_run, kill_g1), options={"samples": 32})
    m = result.metrics
    dead_g = round(m["collapsed_fraction_G"] * 24)
    assert m["collapsed_fraction_G1"] == 1 and dead_g >= 16
    assert result.verdict.startswith(f"{dead_g} of 24 maps of G and {round(m['collapsed_fraction_D'] * 24)} of 24 "
                                     "of D are collapsed; samples are")
    assert result.problems[0] == "every map of layer G1 is collapsed (16 of 16): the layer passes nothing on"


def test_vector_arithmetic_when_no_class_has_enough_bank_samples(tiny_run):
    result = run_component(_component("vector-arithmetic"), tiny_run / "last.pt",
                           options={"bank": 20, "exemplars": 21, "train_limit": 300})
    m = result.metrics
    assert m["concepts"] == m["images_judged"] == 0 and math.isnan(m["match_rate"])
    assert result.verdict == ("no class has 21 bank samples the classifier assigns to it: nothing to judge (the "
                              f"classifier reads {m['classifier_heldout_accuracy']:.1%} of held-out images right)")
