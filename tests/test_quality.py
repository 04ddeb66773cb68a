"""sample-quality: each metric against a direct numpy computation, closed forms, chunk independence, the spaces
(Inception from a local file with its hash checked) and the evaluator in a report with its reference row."""
import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

import ganlab
from ganlab import GanlabError
from ganlab.plugin import registry
from ganlab.testing import make_context, run_component
from ganlab_plugins.quality import plugin
from ganlab_plugins.quality.manifold import density_coverage, manifold_metrics, precision_recall, self_knn
from ganlab_plugins.quality.metrics import feature_moments, frechet_distance, frechet_distance_from_moments, kid

METRICS = ("precision", "recall", "density", "coverage")


def _sets(seed=0, n=300, m=260, d=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d))
    fake = rng.standard_normal((m, d)) * 1.3 + 0.4
    return real.astype(dtype), fake.astype(dtype)


# ---------------------------------------------------------------------------------------------- Frechet distance

def _fd_scipy(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = x.mean(0) - y.mean(0)
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(sqrtm(s1 @ s2).real)


def test_frechet_distance_matches_scipy_sqrtm_on_a_well_conditioned_case():
    real, fake = _sets(d=12)
    expected = _fd_scipy(real, fake)
    assert expected > 1
    for method in ("moments", "cross", "auto"):
        assert frechet_distance(real, fake, method=method) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(real.astype(np.float64), fake.astype(np.float64)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_identical_sets_is_zero_and_chunks_do_not_matter():
    real, fake = _sets(d=24)
    for method in ("moments", "cross"):
        assert abs(frechet_distance(real, real, method=method)) < 1e-6
    wide_real, wide_fake = _sets(n=40, m=50, d=90)  # D > N: the cross-product route, rank-deficient covariances
    assert abs(frechet_distance(wide_real, wide_real)) < 1e-6
    for x, y in ((real, fake), (wide_real, wide_fake)):
        values = [frechet_distance(x, y, chunk=c, method=mth) for c in (11, 4096) for mth in ("moments", "cross")]
        assert max(values) - min(values) <= 1e-6 * abs(values[0])


def test_frechet_distance_from_moments_is_exact_for_commuting_covariances():
    rng = np.random.default_rng(1)
    d = 10
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_from_moments(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed, abs=1e-8)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # the same rotation of both: they still commute
    rotated = frechet_distance_from_moments(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(closed, abs=1e-8)


def test_frechet_distance_of_sampled_gaussians_approaches_the_closed_form():
    rng = np.random.default_rng(2)
    n, mu1, mu2 = 40_000, np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    x = (mu1 + rng.standard_normal((n, 3)) * np.sqrt(a)).astype(np.float32)
    y = (mu2 + rng.standard_normal((n, 3)) * np.sqrt(b)).astype(np.float32)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 2.0 for these numbers
    assert frechet_distance(x, y, chunk=5000) == pytest.approx(closed, abs=0.05)
    mean, cov = feature_moments(x, chunk=777)
    assert np.allclose(mean, x.astype(np.float64).mean(0), atol=1e-12)
    assert np.allclose(cov, np.cov(x.astype(np.float64), rowvar=False), atol=1e-10)


# --------------------------------------------------------------------------------------------------------- KID

def _kid_numpy(x, y, subsets, m, seed):
    """The O(n^2) definition on the same seeded draws as kid(): x's subset, then y's, per subset."""
    rng = np.random.default_rng(seed)
    d, scores = x.shape[1], []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)].astype(np.float64)
        b = y[rng.choice(len(y), m, replace=False)].astype(np.float64)
        kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        scores.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return np.mean(scores), np.std(scores)


def test_kid_matches_the_direct_computation_by_both_routes():
    real, fake = _sets(d=16)
    expected = _kid_numpy(real, fake, 12, 100, seed=3)
    assert expected[0] > 0.1
    for method in ("subsets", "gram", "auto"):
        mean, std = kid(real, fake, subsets=12, subset_size=100, seed=3, method=method)
        assert mean == pytest.approx(expected[0], rel=1e-6) and std == pytest.approx(expected[1], rel=1e-5)
    exact = kid(real.astype(np.float64), fake.astype(np.float64), subsets=12, subset_size=100, seed=3)
    assert exact == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="subset_size"):
        kid(real, fake, subset_size=len(fake) + 1)


def test_kid_does_not_depend_on_the_chunk_size():
    real, fake = _sets(d=16)
    for method in ("subsets", "gram"):
        values = [kid(real, fake, subsets=8, subset_size=120, seed=0, method=method, chunk=c)[0] for c in (64, 4096)]
        assert max(values) - min(values) <= 1e-6 * abs(values[0])


# -------------------------------------------------------------------------- precision, recall, density, coverage

def _manifold_numpy(real, fake, k=3, density_k=5):
    x, y = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dxx = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    dyy = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1))
    dyx = np.sqrt(((y[:, None] - x[None]) ** 2).sum(-1))  # M x N
    rx, ry = np.sort(dxx, 1)[:, k], np.sort(dyy, 1)[:, k]  # column 0 is the point itself
    rd = np.sort(dxx, 1)[:, density_k]
    return {"precision": (dyx <= rx[None]).any(1).mean(), "recall": (dyx <= ry[:, None]).any(0).mean(),
            "density": (dyx <= rd[None]).sum() / (density_k * len(y)), "coverage": (dyx <= rd[None]).any(0).mean()}


def test_manifold_metrics_match_numpy_on_integer_features_with_ties():
    rng = np.random.default_rng(4)  # small integers: every distance exact in float32, many of them equal
    real = rng.integers(-3, 4, (150, 6)).astype(np.float32)
    fake = (rng.integers(-3, 4, (120, 6)) + rng.integers(0, 2, (120, 6))).astype(np.float32)
    expected = _manifold_numpy(real, fake)
    assert 0 < expected["precision"] < 1 and 0 < expected["recall"] < 1
    for chunk in (16, 4096):
        for knn in ("symmetric", "core"):
            assert manifold_metrics(real, fake, chunk=chunk, knn=knn) == pytest.approx(expected, abs=1e-12)


def test_manifold_metrics_match_numpy_and_do_not_depend_on_chunks():
    real, fake = _sets(d=16)
    expected = _manifold_numpy(real, fake, k=4, density_k=6)
    found = [manifold_metrics(real, fake, k=4, density_k=6, chunk=c) for c in (13, 100, 4096)]
    for values in found:
        assert values == pytest.approx(expected, abs=1e-12)
    assert precision_recall(real, fake, k=4) == (expected["precision"], expected["recall"])
    assert density_coverage(real, fake, k=6) == (expected["density"], expected["coverage"])


def test_identical_sets_have_precision_and_recall_one():
    real, _ = _sets()
    found = manifold_metrics(real, real.copy())
    assert found["precision"] == 1 and found["recall"] == 1 and found["coverage"] == 1


def test_symmetric_radii_equal_ganlab_nearest_neighbours():
    real, _ = _sets(n=210, d=9)
    dist, _ = ganlab.nearest_neighbours(real, real, 5, exclude_self=True, query_chunk=64, reference_chunk=50)
    mine = self_knn(real, 5, chunk=37)
    assert torch.allclose(mine.sqrt(), dist, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------ spaces

@pytest.fixture
def quality_plugin():
    registry.reset()  # sample-quality is a built-in: it loads through its entry point
    try:
        yield
    finally:
        registry.reset()


def _inception_file(tmp_path):
    import hashlib

    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(model.state_dict(), path)
    return model, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_space_from_a_local_file_and_its_hash_check(quality_plugin, tiny_run, tmp_path, one_thread):
    model, path, sha = _inception_file(tmp_path)
    component = plugin.SampleQuality()
    ctx = make_context(tiny_run, component, options={"inception_weights": str(path), "inception_sha256": sha})
    space = ctx.feature_spaces["torchvision-inception"]
    images, _ = ctx.split("test", limit=1)  # 16 x 16 grey
    found = space.embed(ctx, images)
    # torchvision's own pipeline for these weights: RGB in [0, 1], ImageNet mean/std, transform_input=True
    model.transform_input, model.fc = True, torch.nn.Identity()
    rgb = torch.nn.functional.interpolate(images.float().div(255).expand(-1, 3, -1, -1), size=(299, 299),
                                          mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        expected = model.eval()((rgb - mean) / std).numpy()
    assert found.shape == (1, 2048) and found.dtype == np.float32
    assert np.allclose(found, expected, rtol=1e-4, atol=1e-4)
    assert sha in space.note(ctx, 1) and "cannot be compared with published FIDs" in space.note(ctx, 1)
    wrong = make_context(tiny_run, component, options={"inception_weights": str(path)})  # default: 0cc3c7bd
    with pytest.raises(GanlabError) as caught:
        wrong.feature_spaces["torchvision-inception"].embed(wrong, images)
    assert sha in str(caught.value) and "0cc3c7bd" in str(caught.value)


def _fd_by_svd(x, y):
    """FD with the trace term as the nuclear norm of the centred cross product (numpy's SVD): digits' border
    pixels never vary, so the covariances are singular, sqrtm's weak spot."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a, b = (x - x.mean(0)) / np.sqrt(len(x) - 1), (y - y.mean(0)) / np.sqrt(len(y) - 1)
    diff = x.mean(0) - y.mean(0)
    return diff @ diff + (a * a).sum() + (b * b).sum() - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum()


def _train_and_heldout(ctx, n):
    """The evaluator's picks, recomputed: seeded (report seed 0, 1) random subsets of the two splits."""
    train, test = ctx.split(ctx.train_split)[0], ctx.split("test")[0]
    return [imgs[np.sort(np.random.default_rng(seed).choice(len(imgs), n, replace=False))]
            for seed, imgs in ((0, train), (1, test))]


def test_reference_row_in_pixels_and_unavailable_spaces(quality_plugin, tiny_run):
    loaded = ganlab.load(tiny_run / "last.pt")
    no_d = ganlab.LoadedGAN.from_state_dicts(loaded.config, loaded.generator.state_dict(), None)
    result = run_component(plugin.SampleQuality(), no_d, options={"n": 80, "kid_subsets": 5})
    m = result.metrics
    assert "pixels.fd" in m and not any(name.startswith("discriminator.") for name in m)
    assert any("'discriminator' skipped" in line for line in result.text)
    # the reference row recomputed independently: the same picks, pixels / 255 in float64
    x, y = ((imgs.reshape(80, -1).double() / 255).numpy() for imgs in _train_and_heldout(make_context(no_d), 80))
    assert m["pixels.reference.fd"] == pytest.approx(_fd_by_svd(x, y), rel=1e-6)
    expected = _manifold_numpy(x, y)  # float64 here, float32 there: a tie may round either way, hence 1 / 80
    assert {name: m[f"pixels.reference.{name}"] for name in METRICS} == pytest.approx(expected, abs=0.013)
    with pytest.raises(GanlabError, match="discriminator"):
        run_component(plugin.SampleQuality(), no_d, options={"spaces": "discriminator", "n": 40})
    with pytest.raises(GanlabError, match="inception_weights"):
        run_component(plugin.SampleQuality(), loaded, options={"spaces": "pixels,torchvision-inception", "n": 40})
    with pytest.raises(GanlabError, match="unknown feature space"):
        run_component(plugin.SampleQuality(), loaded, options={"spaces": "pixel", "n": 40})


def test_embedding_batch_size_does_not_change_the_features(quality_plugin, tiny_run):
    # BatchNorm runs in eval mode, so a batch's images never see each other: same features, hence same metrics
    images, _ = ganlab.load_split("digits", "test", image_size=16, channels=1, limit=50)
    found = {}
    for batch in (7, 256):
        ctx = make_context(tiny_run, plugin.SampleQuality(), options={"batch_size": batch})
        found[batch] = [ctx.feature_spaces[name].embed(ctx, images)
                        for name in ("discriminator", "random-discriminator")]
    for small, large in zip(found[7], found[256]):
        assert small.shape == (50, 16 * (8 + 16)) and np.allclose(small, large, rtol=1e-6, atol=1e-7)
    assert not np.allclose(found[7][0], found[7][1])  # the trained D and the random D differ
    torch.manual_seed(5)
    type(ctx.feature_spaces["random-discriminator"])().embed(ctx, images)  # a fresh one builds its D
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))  # building the random D left the caller's random state alone


# ---------------------------------------------------------------------------------------------- the evaluator

def test_sample_quality_in_a_report_with_the_reference_row(quality_plugin, tiny_run, tmp_path):
    from ganlab.report import make_report

    data, _ = make_report(tiny_run, only=["sample-quality"], out=tmp_path / "r", device="cpu", progress=False,
                          settings={"sample-quality.n": "100", "sample-quality.kid_subsets": "10",
                                    "sample-quality.spaces": "discriminator"})
    run = data.components[0]
    assert run.status == "ok", run.error
    m = run.result.metrics
    assert m["images"] == 100 and len(m) == 1 + 2 * 7
    assert all(f"{row}.{name}" in m for row in ("discriminator", "discriminator.reference")
               for name in ("fd", "kid", "kid_std", *METRICS))
    # held-out digits look like training digits far more than a 2-epoch G's samples do
    assert m["discriminator.reference.fd"] < m["discriminator.fd"]
    assert m["discriminator.reference.precision"] > 0.5 and m["discriminator.reference.recall"] > 0.5
    # the reference row recomputed: the same picks through D's pooled features, FD by SVD
    D = ganlab.load(tiny_run / "last.pt").discriminator
    x, y = (ganlab.discriminator_features(D, imgs) for imgs in _train_and_heldout(make_context(tiny_run), 100))
    assert m["discriminator.reference.fd"] == pytest.approx(_fd_by_svd(x, y), rel=1e-5)
    assert [row[:3] for row in run.result.tables[0].rows] == [["discriminator", "generated vs train", 100],
                                                              ["discriminator", "held-out (test) vs train", 100]]
    series = data.across_epochs["sample-quality.discriminator.fd"]  # cheap: rerun on every epoch checkpoint
    assert [epoch for epoch, _ in series] == [1, 2] and series[0][1] != series[1][1]
    assert series[1][1] == pytest.approx(m["discriminator.fd"], rel=1e-9)  # last.pt is epoch 2: same number
    # across epochs, each measure's generated line is drawn beside its held-out line; KID's std and N are not drawn
    assert data.across_groups == {f"sample-quality: discriminator {name}": [
        f"sample-quality.discriminator.{name}", f"sample-quality.discriminator.reference.{name}"]
        for name in ("fd", "kid", *METRICS)}
    assert "sample-quality.discriminator.kid_std" in data.across_epochs  # still in metrics.json
    drawn = sorted(p.name for p in (tmp_path / "r" / "assets").glob("across-epochs-*.png"))
    assert len(drawn) == 2 + len(METRICS) and drawn[0] == "across-epochs-01-sample-quality-discriminator-fd.png"


def test_a_pair_compared_again_is_answered_from_memory(monkeypatch):
    rng = np.random.default_rng(5)
    real, fake, other = (rng.normal(size=(40, 6)).astype(np.float32) for _ in range(3))
    opts = {"k": 3, "density_k": 5, "kid_subsets": 4, "kid_subset_size": 10, "seed": 0}
    first = plugin.compare_sets(real, {"a": fake}, **opts)
    calls = []
    real_kid = kid
    monkeypatch.setattr("ganlab_plugins.quality.metrics.kid", lambda *a, **k: calls.append(1) or real_kid(*a, **k))
    again = plugin.compare_sets(real.copy(), {"b": fake.copy(), "c": other}, **opts)
    assert again["b"] == first["a"] and len(calls) == 1  # only the new pair was computed
    changed = plugin.compare_sets(real, {"a": fake}, **{**opts, "kid_subsets": 5})
    assert len(calls) == 2 and changed["a"]["fd"] == first["a"]["fd"]  # other settings: computed again


def test_the_reference_row_is_a_scale_never_the_best_epoch():
    """Held-out images against the training images: the same at every epoch, so no epoch is best by it."""
    quality = plugin.SampleQuality()
    assert quality.direction("pixels.reference.fd") is None and quality.direction("pixels.reference.kid") is None
    assert quality.direction("pixels.fd") == "lower" and quality.direction("discriminator.recall") == "higher"
