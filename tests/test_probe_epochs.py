"""probe-epochs: a cheap probe across a run's epochs, C fixed from validation, flat baseline lines."""
import numpy as np
import pytest
from sklearn.svm import LinearSVC

import ganlab
from ganlab import load_split, to_unit_range
from ganlab.plugin import registry
from ganlab.report import make_report
from ganlab_plugins.probe.protocol import validation_split

SETTINGS = {"probe-epochs.C_grid": "1e-3,1e-2,1e-1", "probe-epochs.kmeans_k": "16", "probe-epochs.solver": "liblinear"}


@pytest.fixture(scope="module")
def across(tiny_run, tmp_path_factory):
    registry.reset()
    data, folder = make_report(tiny_run, only=["probe-epochs"], device="cpu", progress=False, settings=SETTINGS,
                               out=tmp_path_factory.mktemp("epochs") / "r")
    return data, folder


def _svm(C):
    return LinearSVC(C=C, loss="squared_hinge", dual=False, max_iter=20000)


def test_the_last_checkpoint_matches_sklearn(across, tiny_run):
    data, _ = across
    metrics = data.components[0].result.metrics
    train, y_train = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, y_test = load_split("digits", "test", image_size=16, channels=1, progress=False)
    pool, val = validation_split(len(y_train), 0.2, np.random.default_rng(0))
    gan = ganlab.load(tiny_run)
    F_train, F_test = (ganlab.discriminator_features(gan.discriminator, x, real_images=train) for x in (train, test))
    # C: the validation choice among the grid (made on the first checkpoint seen, kept afterwards)
    C = float(data.components[0].result.tables[0].rows[0][3])
    assert C in (1e-3, 1e-2, 1e-1)
    svm = _svm(C).fit(F_train[pool], y_train[pool])
    assert metrics["d.val_accuracy"] == pytest.approx(svm.score(F_train[val], y_train[val]), abs=1.5 / len(val))
    assert metrics["d.test_accuracy"] == pytest.approx(svm.score(F_test, y_test), abs=1.5 / len(y_test))
    # pixels: C chosen on the same validation split by validation accuracy, then scored on the test set
    X_train, X_test = (to_unit_range(x).flatten(1).numpy() for x in (train, test))
    val_acc = {c: _svm(c).fit(X_train[pool], y_train[pool]).score(X_train[val], y_train[val]) for c in (1e-3, 1e-2,
                                                                                                          1e-1)}
    best = max(val_acc, key=lambda c: (val_acc[c], -[1e-3, 1e-2, 1e-1].index(c)))
    assert metrics["pixels.val_accuracy"] == pytest.approx(val_acc[best], abs=1.5 / len(val))
    assert metrics["pixels.test_accuracy"] == pytest.approx(_svm(best).fit(X_train[pool], y_train[pool])
                                                            .score(X_test, y_test), abs=1.5 / len(y_test))
    assert 0.1 < metrics["kmeans.test_accuracy"] <= 1
    verdict = data.components[0].result.verdict
    assert verdict.startswith(f"D's features: {100 * metrics['d.test_accuracy']:.1f}% on held-out images with "
                              f"{len(pool)} labels (validation {100 * metrics['d.val_accuracy']:.1f}%), against raw "
                              f"pixels {100 * metrics['pixels.test_accuracy']:.1f}%, K-means "
                              f"{100 * metrics['kmeans.test_accuracy']:.1f}%")


def test_it_follows_the_epochs_with_flat_baselines(across):
    data, folder = across
    series = data.across_epochs
    epochs = [e for e, _ in series["probe-epochs.d.test_accuracy"]]
    assert epochs == [1, 2]  # the tiny run's two epoch checkpoints
    for name in ("pixels", "kmeans"):
        values = {v for _, v in series[f"probe-epochs.{name}.test_accuracy"]}
        assert len(values) == 1  # computed once: the same line on every epoch
    assert all(0.1 < v <= 1 for _, v in series["probe-epochs.d.val_accuracy"])
    # D's line is drawn against the baselines' lines: one figure per measure, three lines each
    assert data.across_groups == {f"probe-epochs: {m}": [f"probe-epochs.{n}.{m}" for n in ("d", "pixels", "kmeans")]
                                  for m in ("val_accuracy", "test_accuracy")}
    page = (folder / "index.html").read_text()
    assert 'alt="probe-epochs: test_accuracy by epoch"' in page and "probe-epochs.d.test_accuracy by epoch" not in page
    from PIL import Image

    picture = folder / "assets" / "across-epochs-02-probe-epochs-test-accuracy.png"
    assert Image.open(picture).size[0] > 100


def test_a_bad_option_is_a_one_line_error_before_anything_runs(tiny_run, tmp_path):
    registry.reset()
    with pytest.raises(ganlab.GanlabError, match=r"^--set probe-epochs.baselines=pixels,nope: choose one of pixels"):
        make_report(tiny_run, only=["probe-epochs"], device="cpu", progress=False, out=tmp_path / "r",
                    settings={**SETTINGS, "probe-epochs.baselines": "pixels,nope"})
    assert not (tmp_path / "r").exists()


def test_select_epoch_reports_on_the_epoch_with_the_best_validation_accuracy(tiny_run, tmp_path):
    registry.reset()
    data, _ = make_report(tiny_run, only=["probe-epochs"], device="cpu", progress=False, settings=SETTINGS,
                          out=tmp_path / "r", select_epoch="probe-epochs.d.val_accuracy")
    points = data.across_epochs["probe-epochs.d.val_accuracy"]
    best_epoch, best = max(points, key=lambda p: (p[1], -p[0]))
    chosen = data.training["selected_by"]
    assert chosen == {"metric": "probe-epochs.d.val_accuracy", "epoch": best_epoch, "value": best,
                      "direction": "higher"}
    assert data.checkpoint.endswith(f"epoch_{best_epoch:04d}.pt") and data.training["epoch"] == best_epoch
    assert data.components[0].result.metrics["d.val_accuracy"] == pytest.approx(best)


@pytest.mark.parametrize("metric, message", [("svm-probe.d.all.accuracy", "not cheap"),
                                             ("probe-epochs.nope", "no such metric"),
                                             ("nothing", "COMPONENT.METRIC")])
def test_select_epoch_mistakes_are_one_line_errors(tiny_run, tmp_path, metric, message):
    from click.testing import CliRunner

    from ganlab.cli import cli

    registry.reset()
    result = CliRunner().invoke(cli, ["report", str(tiny_run), "--only", "probe-epochs,svm-probe", "--select-epoch",
                                      metric, "--out", str(tmp_path / "r"), "--quiet", "--device", "cpu",
                                      "--set", "probe-epochs.kmeans_k=16"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_c_is_chosen_by_the_last_epoch_whatever_runs_first(tiny_run, tmp_path):
    """Reporting epoch 1 alone first must not fix C for the run: the last epoch file chooses it."""
    registry.reset()
    first, _ = make_report(tiny_run / "epoch_0001.pt", only=["probe-epochs"], device="cpu", progress=False,
                           settings=SETTINGS, out=tmp_path / "e1")
    last, _ = make_report(tiny_run / "last.pt", only=["probe-epochs"], device="cpu", progress=False,
                          settings=SETTINGS, out=tmp_path / "e2")
    text = " ".join(first.components[0].result.text)
    assert "by epoch_0002.pt" in text
    assert first.components[0].result.tables[0].rows[0][3] == last.components[0].result.tables[0].rows[0][3]


def test_a_nan_metric_never_selects_an_epoch(tmp_path):
    from ganlab.report.epochs import best_epoch

    class M(ganlab.Evaluator):
        name, directions = "m", {"x": "higher", "y": "lower"}

    for n in (1, 2, 3):
        (tmp_path / f"epoch_{n:04d}.pt").write_bytes(b"")
    best = best_epoch({"m.x": [(1, float("nan")), (2, 0.9), (3, 0.5)]}, "m.x", tmp_path, [M()])
    assert best["epoch"] == 2 and best["value"] == 0.9
    best = best_epoch({"m.y": [(1, float("nan")), (2, 0.9), (3, 0.5)]}, "m.y", tmp_path, [M()])
    assert best["epoch"] == 3 and best["value"] == 0.5
    with pytest.raises(ganlab.GanlabError, match="NaN or infinite on every epoch"):
        best_epoch({"m.x": [(1, float("nan"))]}, "m.x", tmp_path, [M()])


def test_a_hand_set_C_needs_no_validation_split(tiny_run, tmp_path):
    """C set by hand and val_size 0: D is fitted on every training image, as LinearSVC at that C is."""
    registry.reset()
    settings = {"probe-epochs.C": "0.01", "probe-epochs.val_size": "0", "probe-epochs.baselines": "",
                "probe-epochs.solver": "liblinear"}
    data, _ = make_report(tiny_run, only=["probe-epochs"], device="cpu", progress=False, settings=settings,
                          out=tmp_path / "r", epoch_points=1)
    metrics = data.components[0].result.metrics
    train, y_train = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, y_test = load_split("digits", "test", image_size=16, channels=1, progress=False)
    gan = ganlab.load(tiny_run)
    F_train, F_test = (ganlab.discriminator_features(gan.discriminator, x, real_images=train) for x in (train, test))
    expected = _svm(0.01).fit(F_train, y_train).score(F_test, y_test)
    assert metrics["d.test_accuracy"] == pytest.approx(expected, abs=1.5 / len(y_test))
