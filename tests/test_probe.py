"""The svm-probe evaluator: D feature pooling and dims, caching, baselines, determinism, SVHN protocol."""
import json
import os
import re

import numpy as np
import pytest
import scipy.io
import torch
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

import ganlab
import ganlab.measure.features as F
from ganlab import load_split, to_unit_range
from ganlab.model.networks import PRESETS, Discriminator, ModelConfig
from ganlab.plugin import registry
from ganlab.report import make_report

QUICK = {"svm-probe.kmeans_k": "16", "svm-probe.supervised_steps": "15", "svm-probe.supervised_draws": "2",
         "svm-probe.draws": "3", "svm-probe.labels_per_class": "5,all", "svm-probe.umap_points": "200",
         "svm-probe.C_grid": "1e-3,1e-1"}


@pytest.mark.parametrize("preset, dim", [("dcgan32", 7168), ("imagenet32", 28672),
                                        ("dcgan64", 16 * (64 + 128 + 256 + 512))])
def test_feature_dims_per_architecture(preset, dim):
    D = Discriminator(PRESETS[preset])
    assert F.feature_dim(D) == dim
    images = torch.randint(0, 256, (3, 3, PRESETS[preset].image_size, PRESETS[preset].image_size), dtype=torch.uint8)
    assert F.discriminator_features(D, images).shape == (3, dim)


def test_pooling_is_4x4_max_against_numpy():
    maps = [torch.randn(2, 3, 16, 16), torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4)]
    pooled = F.pool_maps(maps).numpy()
    expected = []
    for m in maps:
        a = m.numpy()
        s = a.shape[-1] // 4
        expected.append(a.reshape(2, a.shape[1], 4, s, 4, s).max(axis=(3, 5)).reshape(2, -1))
    np.testing.assert_array_equal(pooled, np.concatenate(expected, axis=1))


def test_features_use_eval_mode_batchnorm_and_match_a_manual_forward():
    config = ModelConfig(image_size=16, channels=1, ndf=4, ngf=4, nz=4)
    D = Discriminator(config)
    for m in D.modules():  # non-trivial running statistics, so train/eval mode would differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    got = F.discriminator_features(D.train(), images, batch_size=2)
    D.eval()
    x = to_unit_range(images)
    manual = []
    for layer in D.main:
        x = layer(x)
        if isinstance(layer, torch.nn.LeakyReLU):
            manual.append(torch.nn.functional.max_pool2d(x, x.shape[-1] // 4).flatten(1))
    np.testing.assert_allclose(got, torch.cat(manual, 1).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_large_features_are_memory_mapped_and_cached(tmp_path, monkeypatch):
    import ganlab.store.cache

    D = Discriminator(ModelConfig(image_size=16, channels=1, ndf=4))
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8)
    monkeypatch.setattr(ganlab.store.cache, "MEMMAP_BYTES", 1000)  # force the memory-mapped path
    first = F.cached_features(ganlab.Cache(tmp_path), "key", D, images)
    stored = list((tmp_path / "features").glob("*.npy"))
    second = F.cached_features(ganlab.Cache(tmp_path), "key", D, images)  # another process, say: read back
    assert isinstance(first, np.memmap) and isinstance(second, np.memmap) and len(stored) == 1
    assert str(first.filename) == str(second.filename) == str(stored[0])
    np.testing.assert_array_equal(second, F.discriminator_features(D, images))


@pytest.fixture(scope="module")
def probe_report(tiny_run, tmp_path_factory):
    registry.reset()
    out = tmp_path_factory.mktemp("probe")
    data, folder = make_report(tiny_run, only=["svm-probe"], out=out, device="cpu", progress=False, settings=QUICK)
    return data.components[0], json.loads((folder / "metrics.json").read_text())


def test_probe_rows_and_metrics(probe_report):
    run, _ = probe_report
    assert run.status == "ok", run.error
    rows = run.result.tables[0].rows
    assert [(r[0], r[1]) for r in rows] == [(name, labels) for labels in ("5 per class", "all") for name in (
        "DCGAN discriminator (this checkpoint)", "raw pixels", "same D architecture, random init",
        "K-means triangle (Coates & Ng 2011)", "supervised CNN, D's architecture")]
    dims = {r[0]: r[2] for r in rows}
    assert dims["DCGAN discriminator (this checkpoint)"] == 16 * (8 + 16) == dims["same D architecture, random init"]
    assert dims["raw pixels"] == 16 * 16 and dims["K-means triangle (Coates & Ng 2011)"] == 4 * 16
    draws = {(r[0], r[1]): r[3] for r in rows}
    assert draws[("raw pixels", "5 per class")] == 3 and draws[("supervised CNN, D's architecture", "5 per class")] == 2
    m = run.result.metrics
    for name in ("d", "pixels", "random-d", "kmeans", "supervised"):
        for mode in ("5pc", "all"):
            assert 0.1 < m[f"{name}.{mode}.accuracy"] <= 1  # better than chance on 10 digit classes
            assert m[f"{name}.{mode}.error"] == pytest.approx(1 - m[f"{name}.{mode}.accuracy"])
    assert len(run.result.figures) == 1 and "UMAP" in run.result.figures[0].title


def test_every_accuracy_has_an_interval_and_d_is_compared_pairwise(probe_report):
    """All-label rows: the 95% Wilson interval over the test images (scipy's binomtest as the reference).
    D minus each baseline: a t-interval over the same draws, or a paired bootstrap over test images."""
    from scipy.stats import binomtest

    run, _ = probe_report
    m, tables, text = run.result.metrics, run.result.tables, " ".join(run.result.text)
    n = 899  # the digits test split
    for name in ("d", "pixels", "kmeans"):
        k = round(m[f"{name}.all.accuracy"] * n)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert (m[f"{name}.all.low"], m[f"{name}.all.high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    rows = {(r[0], r[1]): r for r in tables[0].rows}
    low, high = m["d.all.low"], m["d.all.high"]
    assert rows[("DCGAN discriminator (this checkpoint)", "all")][4].endswith(f"({100 * low:.2f}–{100 * high:.2f})")
    assert "±" in rows[("raw pixels", "5 per class")][4]
    paired = {(r[0], r[1]): r for r in tables[1].rows}
    assert tables[1].title.startswith("Trained D minus each baseline")
    assert len(paired) == 6 and tables[1].columns[-1] == "reading"
    for mode in ("5pc", "all"):  # paired over the same draws or images: the difference of the two accuracies
        diff = m[f"d.{mode}.accuracy"] - m[f"pixels.{mode}.accuracy"]
        assert m[f"d_minus_pixels.{mode}.difference"] == pytest.approx(diff)
        assert m[f"d_minus_pixels.{mode}.low"] <= diff <= m[f"d_minus_pixels.{mode}.high"]
    reading = paired[("raw pixels", "all labels")][4]
    assert reading == ("D ahead" if m["d_minus_pixels.all.low"] > 0 else "D behind"
                       if m["d_minus_pixels.all.high"] < 0 else "within noise")
    assert "95% Wilson interval over the 899 test images" in text and "Seconds per fit" in text


def test_the_papers_claim_is_read_from_the_intervals_never_a_bare_win(probe_report):
    """Per label budget: holds only when every paired interval is above 0, does not when one is below."""
    run, _ = probe_report
    m = run.result.metrics
    names = {"pixels": "raw pixels", "random-d": "a random D", "kmeans": "K-means"}
    readings = {}
    for mode, words in (("5pc", "5 labels per class"), ("all", "all labels")):
        low = {n: m[f"d_minus_{n}.{mode}.low"] for n in names}
        high = {n: m[f"d_minus_{n}.{mode}.high"] for n in names}
        behind = [names[n] for n in names if high[n] < 0]
        level = [names[n] for n in names if not high[n] < 0 and not low[n] > 0]
        join = lambda w: w[0] if len(w) == 1 else ", ".join(w[:-1]) + " and " + w[-1]  # noqa: E731
        expected = (f"does not hold (D behind {join(behind)})" if behind else
                    f"cannot be told apart from noise (D within noise of {join(level)})" if level else "holds")
        readings.setdefault(expected, []).append(words)
    said = "; ".join(f"{reading} at {' and '.join(budgets)}" for reading, budgets in readings.items())
    claim = "The paper's claim (D's features beat raw pixels, a random D and K-means): " + said
    assert run.result.text[0] == claim and run.result.verdict.endswith(". " + claim)


def test_paired_intervals_against_scipy():
    """Draws: scipy's t-interval of the differences. Test images: scipy's paired percentile bootstrap."""
    from scipy.stats import bootstrap, t

    from ganlab_plugins.probe.intervals import packed
    from ganlab_plugins.probe.presentation import differences

    rng = np.random.default_rng(3)
    d_draws, p_draws = rng.uniform(0.8, 0.9, 7), rng.uniform(0.7, 0.9, 7)
    d_hits, p_hits = rng.random(2000) < 0.9, rng.random(2000) < 0.85
    rows = {("d", 10): {"accuracies": list(d_draws)}, ("pixels", 10): {"accuracies": list(p_draws)},
            ("d", None): {"accuracies": [d_hits.mean()], "correct": packed(d_hits)},
            ("pixels", None): {"accuracies": [p_hits.mean()], "correct": packed(p_hits)}}
    found = differences(rows, [10, None], seed=0)
    diff = d_draws - p_draws
    interval = t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=diff.std(ddof=1) / np.sqrt(len(diff)))
    assert found["pixels", 10] == pytest.approx((diff.mean(), *interval))
    scipy_ci = bootstrap((d_hits.astype(float), p_hits.astype(float)), lambda a, b: a.mean() - b.mean(),
                         paired=True, vectorized=False, n_resamples=2000, method="percentile",
                         random_state=1).confidence_interval
    mean, low, high = found["pixels", None]
    assert mean == pytest.approx(d_hits.mean() - p_hits.mean())
    assert low == pytest.approx(scipy_ci.low, abs=0.004) and high == pytest.approx(scipy_ci.high, abs=0.004)


def test_full_label_rows_match_sklearn(tiny_run, tmp_path):
    """The pixels row and both D rows equal a LinearSVC on the public feature functions' output (C=0.01)."""
    registry.reset()
    settings = {**QUICK, "svm-probe.C_grid": "0.01", "svm-probe.labels_per_class": "all",
                "svm-probe.baselines": "pixels,random-d", "svm-probe.umap": "false"}
    data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, settings=settings,
                          out=tmp_path / "r-sk")
    metrics = data.components[0].result.metrics
    train, y_train = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, y_test = load_split("digits", "test", image_size=16, channels=1, progress=False)
    X_train, X_test = (to_unit_range(x).flatten(1).numpy() for x in (train, test))
    svm = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000).fit(X_train, y_train)
    assert metrics["pixels.all.accuracy"] == pytest.approx(svm.score(X_test, y_test), abs=0.005)  # raw, as the paper
    # the D rows: D's pooled features from ganlab.discriminator_features, for the trained D and for the random D
    # the report builds (seeded with the report's seed); each must score exactly what sklearn scores on them
    gan = ganlab.load(tiny_run)
    torch.manual_seed(0)
    expected = {}
    for name, D in (("d", gan.discriminator), ("random-d", Discriminator(gan.config))):
        # BatchNorm statistics recomputed on the training images (bn_stats="real", the default)
        F_train, F_test = (ganlab.discriminator_features(D, x, real_images=train) for x in (train, test))
        svm = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000).fit(F_train, y_train)
        expected[name] = svm.score(F_test, y_test)
        # the same number of correct test images: a row on the other D's features would be off by several
        assert metrics[f"{name}.all.accuracy"] == pytest.approx(expected[name], abs=0.5 / len(y_test)), name
    assert expected["d"] != expected["random-d"]
    # four cache entries: (trained D, random D) x (train, test), none shared
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 4
    # bn_stats=running: D's stored running averages, as LinearSVC scores features taken with them
    data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, out=tmp_path / "r-run",
                          settings={**settings, "svm-probe.baselines": "pixels", "svm-probe.bn_stats": "running"})
    F_train, F_test = (ganlab.discriminator_features(gan.discriminator, x, bn_stats="running") for x in (train, test))
    running = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000).fit(F_train, y_train)
    assert data.components[0].result.metrics["d.all.accuracy"] == pytest.approx(running.score(F_test, y_test),
                                                                                abs=0.5 / len(y_test))
    assert running.score(F_test, y_test) != expected["d"]
    data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, out=tmp_path / "r-sk2",
                          settings={**settings, "svm-probe.preprocess": "standardize", "svm-probe.baselines": "pixels"})
    scaler = StandardScaler().fit(X_train)
    svm = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000).fit(scaler.transform(X_train), y_train)
    assert data.components[0].result.metrics["pixels.all.accuracy"] == pytest.approx(
        svm.score(scaler.transform(X_test), y_test), abs=0.005)


def test_same_seed_same_numbers(probe_report, tiny_run, tmp_path):
    registry.reset()
    data, _ = make_report(tiny_run, only=["svm-probe"], out=tmp_path / "again", device="cpu", progress=False,
                          settings={**QUICK, "svm-probe.umap": "false"})
    again = dict(data.components[0].result.metrics)
    before = dict(probe_report[0].result.metrics)
    assert again.pop("baseline_rows_reused") == 0  # this test's own cache starts empty: every row computed again
    before.pop("baseline_rows_reused")
    assert again == before


def _write_svhn(folder, split, n, rng):
    """A small file in the official SVHN layout: X uint8 [32, 32, 3, N], y [N, 1] with 10 for digit 0."""
    digits = load_split("digits", "all", image_size=32, channels=1, progress=False)
    idx = rng.choice(len(digits[0]), n, replace=False)
    grey = digits[0][idx, 0].numpy()
    X = np.stack([grey, 255 - grey, grey], axis=-1).transpose(1, 2, 3, 0).astype(np.uint8)
    y = digits[1][idx].numpy().copy()
    y[y == 0] = 10
    scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": X, "y": y.reshape(-1, 1)})


def test_svhn_protocol_on_official_format_files(tmp_path, in_tmp):
    from click.testing import CliRunner

    from ganlab.cli import cli

    rng = np.random.default_rng(0)
    root = tmp_path / "svhn"
    root.mkdir()
    _write_svhn(root, "train", 400, rng)
    _write_svhn(root, "extra", 100, rng)
    _write_svhn(root, "test", 200, rng)
    registry.reset()
    result = CliRunner().invoke(cli, [
        "run", "probe-svhn", "--data-root", str(root), "--epochs", "1", "--ngf", "8", "--ndf", "8",
        "--set", "svm-probe.labels_per_class=5", "--set", "svm-probe.val_size=100",
        "--set", "svm-probe.select_draws=2", "--set", "svm-probe.draws=6", "--set", "svm-probe.umap=false",
        "--set", "svm-probe.baselines=pixels"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((in_tmp / "reports/probe-svhn/metrics.json").read_text())
    probe = metrics["components"]["svm-probe"]
    assert probe["options"]["ci95"] is True and probe["options"]["labels_per_class"] == ["5"]
    assert probe["options"]["train_split"] == "train"
    m = probe["metrics"]
    assert set(m) >= {"d.5pc.error", "pixels.5pc.error"} and not any(".all." in k for k in m)
    # the table reports mean +- 1.96 std over the 6 draws (SVHN Table 2 style)
    error = f"{100 * m['d.5pc.error']:.2f} ± {196 * m['d.5pc.std']:.2f}"
    html = (in_tmp / "reports/probe-svhn/index.html").read_text()
    assert error in html
    assert "22.48%" in html and "Paper figures" in html  # the paper's Table 2, labelled
    payload = torch.load(in_tmp / "runs/probe-svhn/last.pt", weights_only=True)
    assert payload["dataset"]["name"] == "svhn" and payload["dataset"]["size"] == 500  # train+extra
    assert ganlab.load(in_tmp / "runs/probe-svhn").config.channels == 3


# --- each row is tied to its own features (issue 14) -------------------------------------------------

def test_trained_and_random_d_rows_differ(probe_report):
    """A row reading another row's (cached) features would repeat its accuracies and its C selection."""
    run, _ = probe_report
    m = run.result.metrics

    def signature(name):
        return tuple(m[f"{name}.{mode}.{stat}"] for mode in ("5pc", "all") for stat in ("accuracy", "std"))

    assert signature("d") != signature("random-d")
    # "<row>, <mode>: C=..., validation error by C 0.001: x%, 0.1: y%; features took ..."
    details = dict(re.match(r"(.*), (?:5pc|all): (C=.*); features took", line).groups() for line in run.result.text
                   if "validation error by C" in line and ", 5pc: " in line)
    assert details["DCGAN discriminator (this checkpoint)"] != details["same D architecture, random init"]


def test_feature_cache_key_separates_models_tags_and_images(tmp_path, monkeypatch):
    key = ganlab.feature_cache_key
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"model one")
    base = key(ckpt, "D", "digits", "train", None)
    assert base == key(ckpt, "D", "digits", "train", None) == key(str(ckpt), "D", "digits", "train", None)
    assert len({base, key(ckpt, "random-D-seed0", "digits", "train", None), key(ckpt, "random-D-seed1", "digits",
                "train", None), key(ckpt, "D", "mnist", "train", None), key(ckpt, "D", None, "train", None),
                key(ckpt, "D", "digits", "test", None), key(ckpt, "D", "digits", "train", 100),
                key(ckpt, "D", "digits", "train", 200)}) == 8
    other = tmp_path / "b.pt"
    other.write_bytes(b"model one")
    os.utime(other, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns))
    assert key(other, "D", "digits", "train", None) != base  # another file with the same size and time
    # the same path, rewritten: other content and size, or the same size at another time
    stat = ckpt.stat()
    ckpt.write_bytes(b"model two, longer")
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    longer = key(ckpt, "D", "digits", "train", None)
    ckpt.write_bytes(b"model 1!!")
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    later = key(ckpt, "D", "digits", "train", None)
    assert len({base, longer, later}) == 3
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert key(ckpt, "D", "digits", "train", None) == later  # nothing changed: the same entry
    # a relative path names the same file as its absolute one
    monkeypatch.chdir(tmp_path)
    assert key("a.pt", "D", "digits", "train", None) == later


def test_the_kmeans_row_is_standardised_as_coates_and_ng_do(tiny_run, tmp_path):
    """The K-means row equals a LinearSVC on StandardScaler-ed KMeansFeatures (kmeans_preprocess=none: raw)."""
    from ganlab_plugins.probe.kmeans_features import KMeansFeatures

    registry.reset()
    settings = {**QUICK, "svm-probe.C_grid": "0.01", "svm-probe.labels_per_class": "all",
                "svm-probe.baselines": "kmeans", "svm-probe.umap": "false"}
    train, y_train = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, y_test = load_split("digits", "test", image_size=16, channels=1, progress=False)
    model = KMeansFeatures(k=16, seed=0, device="cpu", progress=False)
    K_train = model.fit_transform(train)
    K_test = model.transform(test)
    scaler = StandardScaler().fit(K_train)
    svm = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000)
    standardised = svm.fit(scaler.transform(K_train), y_train).score(scaler.transform(K_test), y_test)
    raw = LinearSVC(C=0.01, loss="squared_hinge", dual=False, max_iter=10000).fit(K_train, y_train).score(K_test,
                                                                                                          y_test)
    assert abs(standardised - raw) > 2 / len(y_test)  # the two really differ here
    for preprocess, expected in (("standardize", standardised), ("none", raw)):
        data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, out=tmp_path / preprocess,
                              settings={**settings, "svm-probe.kmeans_preprocess": preprocess})
        got = data.components[0].result.metrics["kmeans.all.accuracy"]
        assert got == pytest.approx(expected, abs=1.5 / len(y_test)), preprocess


def test_label_budgets_that_are_not_whole_numbers_are_refused_in_words(tiny_run, tmp_path):
    registry.reset()
    for budget in ("0", "ten", "\u00b2"):  # a superscript two is a digit to str.isdigit, not to int
        data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, out=tmp_path / "r",
                              settings={**QUICK, "svm-probe.labels_per_class": budget})
        run = data.components[0]
        assert run.status == "failed" and f"takes whole numbers and 'all', not {budget!r}" in run.error, run.error


def test_a_label_budget_larger_than_a_class_is_left_out_and_said(tiny_run, tmp_path):
    """Budgets a class cannot fill are not run, the report says which class and how many it has, and that
    number is the boundary: a draw of that many per class runs, one more is refused with what to give. With one
    hand-set C and no supervised row there is no validation split, so the whole class counts."""
    registry.reset()
    base = {**QUICK, "svm-probe.baselines": "pixels", "svm-probe.umap": "false"}

    def probe(budgets, out, grid="0.01"):
        data, _ = make_report(tiny_run, only=["svm-probe"], device="cpu", progress=False, out=tmp_path / out,
                              settings={**base, "svm-probe.labels_per_class": budgets, "svm-probe.C_grid": grid})
        return data.components[0]

    def boundary(run):
        said = [line for line in run.result.text if "5000 labels per class: not run" in line]
        assert len(said) == 1, run.result.text
        found = re.search(r"class '(\d)' has (\d+) training images( outside the validation split)?", said[0])
        return int(found.group(2)), bool(found.group(3))

    run = probe("5,5000,all", "mixed")
    assert run.status == "ok", run.error
    assert sorted({row[1] for row in run.result.tables[0].rows}) == ["5 per class", "all"]
    assert not any(key.startswith("d.5000pc") for key in run.result.metrics)
    _, labels = load_split("digits", "train", progress=False)
    count, said_split = boundary(run)
    assert count == np.bincount(labels.numpy()).min() and not said_split
    assert probe(str(count), "fits").status == "ok"
    refused = probe(str(count + 1), "one-more")
    assert refused.status == "failed" and f"a number up to {count}" in refused.error
    chosen, said_split = boundary(probe("5,5000", "grid", grid="0.01,0.1"))  # C chosen on a fifth of the rows
    assert said_split and 0.7 * count < chosen < 0.9 * count
    base["svm-probe.baselines"] = "supervised"  # the CNN stops on the validation split, even with one C
    assert boundary(probe("5,5000", "supervised")) == (chosen, True)
    assert probe(str(chosen), "supervised-fits").status == "ok"
