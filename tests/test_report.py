"""`ganlab report` and `ganlab run`: metrics.json, failures, skips, options, across-epochs plots."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.neighbors import NearestNeighbors

import ganlab
from ganlab import load_split, to_unit_range
from ganlab.cli import cli
from ganlab.plugin import registry
from ganlab.plugin.components import Evaluator, Result
from ganlab.report import make_report

# the cheapest svm-probe that still runs every row
QUICK_PROBE = [item for pair in (("--set", f"svm-probe.{k}={v}") for k, v in {
    "labels_per_class": 5, "draws": 2, "kmeans_k": 8, "supervised_steps": 5, "supervised_draws": 1, "umap": "false",
    "C_grid": "0.01"}.items()) for item in pair]


def _errors(output):
    return [line for line in re.split(r"[\r\n]", output) if line.startswith("Error:")]


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    registry.reset()
    # svm-probe has its own tests (test_probe.py); here it would only add minutes
    data, folder = make_report(tiny_run, out=out, device="cpu", progress=False, skip=["svm-probe"])
    return data, folder, json.loads((folder / "metrics.json").read_text())


def test_metrics_json_content(report, tiny_run):
    data, folder, metrics = report
    assert metrics["dataset"] == "digits" and metrics["seed"] == 0
    assert metrics["versions"]["ganlab"] == ganlab.__version__
    assert metrics["versions"]["torch"] == str(torch.__version__)
    assert metrics["config"]["image_size"] == 16 and metrics["training"]["epoch"] == 2
    components = metrics["components"]
    assert {"d-score", "latent-walk", "nearest-neighbours"} <= set(components)
    for entry in components.values():
        assert entry["status"] == "ok" and entry["seconds"] >= 0 and entry["error"] is None
    assert (folder / "index.html").is_file()


def test_d_score_against_a_hand_computation(report, tiny_run):
    metrics = report[2]["components"]["d-score"]["metrics"]
    gan = ganlab.load(tiny_run)
    images, _ = load_split("digits", "test", image_size=16, channels=1, limit=1000, progress=False)
    with torch.no_grad():
        real = torch.sigmoid(gan.discriminator(to_unit_range(images)))
        fake = torch.sigmoid(gan.discriminator(gan.sample(len(images), seed=0)))
    assert metrics["images"] == len(images) == 899
    assert metrics["D_x_mean"] == pytest.approx(real.mean().item(), abs=1e-5)
    assert metrics["D_G_z_mean"] == pytest.approx(fake.mean().item(), abs=1e-5)
    expected_accuracy = ((real > 0.5).float().mean() + (fake < 0.5).float().mean()).item() / 2
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)


def test_nearest_neighbours_against_sklearn(report, tiny_run):
    import numpy as np

    metrics = report[2]["components"]["nearest-neighbours"]["metrics"]
    gan = ganlab.load(tiny_run)
    train, _ = load_split("digits", "train", image_size=16, channels=1, progress=False)
    test, _ = load_split("digits", "test", image_size=16, channels=1, progress=False)
    samples = to_unit_range(ganlab.to_uint8(gan.sample(1000, seed=0))).flatten(1).numpy()  # rounded as real images
    nn = NearestNeighbors(n_neighbors=1).fit(to_unit_range(train).flatten(1).numpy())
    dist = nn.kneighbors(samples)[0][:, 0]
    test_dist = nn.kneighbors(to_unit_range(test).flatten(1).numpy())[0][:, 0]
    assert metrics["train_images_searched"] == 898 and metrics["samples"] == 1000 and metrics["test_images"] == 899
    assert metrics["sample_nn_rmse"] == pytest.approx((dist / 16).mean(), rel=1e-4)
    assert metrics["median_distance_test_pixels"] == pytest.approx(np.median(test_dist), rel=1e-4)
    assert metrics["copy_fraction_pixels"] == pytest.approx((dist < np.percentile(test_dist, 1)).mean())


def _epoch_weights(run_dir, epoch, model):
    """One model's raw state dict from an epoch file, read with torch alone (not ganlab's loader)."""
    return torch.load(run_dir / f"epoch_{epoch:04d}.pt", map_location="cpu", weights_only=True)[model]


def test_across_epochs_series_for_cheap_components(report, tiny_run):
    """Each epoch's point is D's mean output on the held-out images, recomputed from that epoch's file by hand."""
    series = report[2]["across_epochs"]
    assert [e for e, _ in series["d-score.accuracy"]] == [1, 2]
    assert "nearest-neighbours.sample_nn_rmse" not in series  # not declared cheap
    images, _ = load_split("digits", "test", image_size=16, channels=1, limit=1000, progress=False)
    expected = []
    for epoch in (1, 2):
        D = ganlab.Discriminator(ganlab.load(tiny_run).config)
        D.load_state_dict(_epoch_weights(tiny_run, epoch, "discriminator"))
        with torch.no_grad():
            expected.append((epoch, torch.sigmoid(D.eval()(to_unit_range(images))).mean().item()))
    assert expected[0][1] != pytest.approx(expected[1][1], abs=1e-4)  # the two epochs' D really differ
    assert [e for e, _ in series["d-score.D_x_mean"]] == [1, 2]
    assert [v for _, v in series["d-score.D_x_mean"]] == pytest.approx([v for _, v in expected], abs=1e-5)


class Exploding(Evaluator):
    name, description = "exploding", "always raises"

    def run(self, ctx):
        raise ZeroDivisionError("no luck")


class NeedsGpu(Evaluator):
    name, description, needs = "needs-gpu", "wants a GPU", ("gpu",)

    def run(self, ctx):
        return Result(metrics={"x": 1})


@pytest.fixture
def extra_components():
    import types

    module = types.ModuleType("extra")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: (register(Exploding()), register(NeedsGpu())))
    try:
        yield registry.register_plugin(module, "extra")
    finally:
        registry.reset()


def test_failing_component_report_still_written_exit_1(extra_components, tiny_run, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["report", str(tiny_run / "last.pt"), "--out", str(out), "--device", "cpu",
                                      "--skip", "svm-probe,d-score,nearest-neighbours"])
    assert result.exit_code == 1
    assert _errors(result.output) == ["Error: components failed: exploding (see their sections in the report)"]
    metrics = json.loads((out / "metrics.json").read_text())["components"]
    assert metrics["exploding"]["status"] == "failed" and metrics["exploding"]["error"] == "ZeroDivisionError: no luck"
    assert metrics["latent-walk"]["status"] == "ok"
    lines = result.stderr.splitlines()
    assert "  exploding: FAILED (ZeroDivisionError: no luck)" in lines
    assert any(re.fullmatch(r"  latent-walk: ok \(\d+\.\d s\)", line) for line in lines)
    if not torch.cuda.is_available():
        assert metrics["needs-gpu"]["status"] == "skipped" and metrics["needs-gpu"]["reason"] == "needs a CUDA GPU"
        assert "  needs-gpu: skipped (needs a CUDA GPU)" in lines
    assert result.stdout.strip() == f"report: {(out / 'index.html').resolve().as_uri()}"
    html = (out / "index.html").read_text()
    assert "ZeroDivisionError" in html and "no luck" in html
    # the traceback: in metrics.json, collapsed in the page, and on the terminal only when asked
    trace = metrics["exploding"]["traceback"]
    assert trace.startswith("Traceback (most recent call last)") and 'raise ZeroDivisionError("no luck")' in trace
    assert "<details class=\"traceback\"><summary>Traceback</summary>" in html
    assert "Traceback (most recent" not in result.stderr
    shown = CliRunner().invoke(cli, ["report", str(tiny_run / "last.pt"), "--out", str(out), "--device", "cpu",
                                     "--only", "exploding", "--traceback"])
    assert "traceback of exploding:" in shown.stderr and 'raise ZeroDivisionError("no luck")' in shown.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs-gpu can run on this machine")
def test_only_a_component_that_cannot_run_is_an_error(extra_components, tiny_run, tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["report", str(tiny_run), "--out", str(out), "--only", "latent-walk,needs-gpu"])
    assert result.exit_code == 1
    assert _errors(result.output) == ["Error: needs-gpu cannot run here: it needs a CUDA GPU (dataset: digits)"]
    assert not out.exists()  # failed before anything ran or was written


def test_json_prints_metrics_only_and_quiet_has_no_bars(tiny_run, tmp_path):
    out = tmp_path / "r"
    registry.reset()
    result = CliRunner().invoke(cli, ["report", str(tiny_run / "last.pt"), "--out", str(out), "--only",
                                      "latent-walk", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["schema_version"] == 2 and printed["components"]["latent-walk"]["status"] == "ok"
    assert "it/s" not in result.stderr and "%|" not in result.stderr  # no tqdm bars
    assert f"report: {(out / 'index.html').resolve().as_uri()}" in result.stderr


class Declared(Evaluator):
    name, description = "declared", "has declared options"
    options = {"steps": ganlab.Option(8, "frames per walk", min=2, max=64),
               "mode": ganlab.Option("auto", "how to interpolate", choices=("auto", "lerp", "slerp")),
               "rate": ganlab.Option(0.5, min=0.0, max=1.0), "plain": 3}

    def run(self, ctx):
        return Result(metrics={k: float(v) for k, v in ctx.options.items() if isinstance(v, (int, float))})


@pytest.fixture
def declared_component():
    import types

    module = types.ModuleType("declaring")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(Declared()))
    try:
        yield registry.register_plugin(module, "declaring")
    finally:
        registry.reset()


def test_components_lists_options_with_types_help_and_rules(declared_component):
    from ganlab.cli import components

    result = CliRunner().invoke(components, ["--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["components"]}
    assert set(rows) == set(declared_component.components())
    declared = rows["declared"]
    assert declared["kind"] == "evaluator" and declared["cheap"] is False and declared["plugin"] == "declaring"
    assert declared["options"]["steps"] == {"default": 8, "type": "int", "help": "frames per walk", "choices": None,
                                            "min": 2, "max": 64, "of": None}
    assert rows["sample-quality"]["options"]["spaces"]["of"] == "feature_spaces"
    assert declared["options"]["plain"]["default"] == 3 and declared["options"]["plain"]["help"] == ""
    assert rows["svm-probe"]["needs"] == ["discriminator", "heldout", "labels"]
    assert rows["sample-quality"]["directions"]["*.fd"] == "lower"
    assert all("directions" in row for row in rows.values())
    text = CliRunner().invoke(components, []).output
    assert "--set declared.steps=...  (int, default 8; >= 2; <= 64); frames per walk" in text
    assert "--set declared.mode=...  (str, default 'auto'; one of auto, lerp, slerp); how to interpolate" in text


@pytest.mark.parametrize("setting, message", [
    ("declared.steps=1", "--set declared.steps=1: must be >= 2 (frames per walk)"),
    ("declared.steps=100", "must be <= 64"),
    ("declared.mode=cubic", "choose one of auto, lerp, slerp (how to interpolate)"),
    ("declared.rate=nan", "must be a finite number"),
    ("declared.rate=1.5", "must be <= 1"),
    ("declared.steps=many", "expected an int"),
])
def test_declared_options_are_checked_before_anything_runs(declared_component, tiny_run, tmp_path, setting, message):
    result = CliRunner().invoke(cli, ["report", str(tiny_run), "--out", str(tmp_path / "r"), "--only",
                                      "declared", "--set", setting])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_declared_options_reach_the_component_as_plain_values(declared_component, tiny_run, tmp_path):
    data, _ = make_report(tiny_run, only=["declared"], out=tmp_path / "r", device="cpu", progress=False,
                          settings={"declared.steps": "12"})
    assert data.components[0].result.metrics == {"steps": 12.0, "rate": 0.5, "plain": 3.0}
    assert data.components[0].options == {"steps": 12, "mode": "auto", "rate": 0.5, "plain": 3}


def test_options_from_the_command_line(tiny_run, tmp_path):
    out = tmp_path / "r"
    registry.reset()
    result = CliRunner().invoke(cli, ["report", str(tiny_run / "last.pt"), "--out", str(out), "--only", "latent-walk",
                                      "--set", "latent-walk.steps=4", "--set", "latent-walk.mode=lerp"])
    assert result.exit_code == 0, result.output
    options = json.loads((out / "metrics.json").read_text())["components"]["latent-walk"]["options"]
    assert options == {"rows": 6, "points": 9, "steps": 4, "mode": "lerp"}
    for args, message in [
        (["--set", "latent-walk.steps=many"], "expected an int"),
        (["--set", "latent-walk.colour=red"], "has no option 'colour'"),
        (["--set", "nodot"], "expected COMPONENT.OPTION=VALUE"),
        (["--set", "no-such-component.x=1"], "no component named 'no-such-component'"),
        (["--only", "no-such-thing"], "unknown component 'no-such-thing'"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
    ]:
        result = CliRunner().invoke(cli, ["report", str(tiny_run / "last.pt"), "--out", str(out), *args])
        assert result.exit_code == 1 and len(_errors(result.output)) == 1, (args, result.output)
        assert message in _errors(result.output)[0]
        assert "Traceback" not in result.output


def test_latent_walk_endpoints_are_the_latent_points(tiny_run):
    from ganlab_plugins.latent_walk import walk

    def interpolate(a, b, frames, mode):
        return walk(torch.stack([a, b]), frames - 1, mode)

    z0, z1 = torch.randn(3, 8, 1, 1), torch.randn(3, 8, 1, 1)
    for mode in ("lerp", "slerp"):
        path = interpolate(z0, z1, 5, mode)
        assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    # on the unit sphere slerp stays on the sphere (lerp cuts inside it) and moves at constant angle
    u0, u1 = z0 / z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1), z1 / z1.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    path = interpolate(u0, u1, 5, "slerp").flatten(2)
    assert torch.allclose(path.norm(dim=2), torch.ones(5, 3), atol=1e-5)
    assert interpolate(u0, u1, 3, "lerp")[1].flatten(1).norm(dim=1).max() < 1
    angles = torch.arccos((path[1:] * path[:-1]).sum(2).clamp(-1, 1))
    assert torch.allclose(angles, angles[0].expand_as(angles), atol=1e-4)


def test_run_experiment_trains_once_then_reuses(in_tmp):
    registry.reset()
    runner = CliRunner()
    listing = runner.invoke(cli, ["run", "--list"])
    assert listing.exit_code == 0 and re.search(r"^probe-digits\s+the probe recipe", listing.output, re.M)
    args = ["run", "probe-digits", "--epochs", "1", "--limit", "64", "--ngf", "8", "--ndf", "8", "--image-size", "16",
            "--out", "runs/quick", "--set", "latent-walk.rows=2", *QUICK_PROBE]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert (in_tmp / "runs/quick/last.pt").is_file() and (in_tmp / "reports/probe-digits/index.html").is_file()
    payload = torch.load(in_tmp / "runs/quick/last.pt", weights_only=True)
    assert payload["options"]["ngf"] == 8 and payload["options"]["epochs"] == 1 and payload["dataset"]["size"] == 64
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "using existing runs/quick/last.pt" in second.output
    unknown = runner.invoke(cli, ["run", "no-such-experiment"])
    assert unknown.exit_code == 1 and "unknown experiment 'no-such-experiment'" in unknown.output


def test_run_probe_on_a_labelled_folder_gets_its_own_run_and_never_reuses_another(in_tmp):
    """`ganlab run probe` on a folder of train/ and test/ class folders: the run and report are named for the
    dataset, the epoch is chosen on validation accuracy, and a run trained otherwise is never taken for it."""
    from tests.conftest import picture_folder

    for split in ("train", "test"):
        picture_folder(in_tmp / "shapes" / split, 24)
    registry.reset()
    tiny = ["--epochs", "2", "--ngf", "8", "--ndf", "8", "--image-size", "16", "--data-root", "shapes",
            *QUICK_PROBE, "--set", "probe-epochs.C=0.01", "-q"]
    # what would refuse the report is refused before any training: no labels, an unknown option
    # (one class folder is no labels either: nothing to tell apart)
    picture_folder(in_tmp / "flat" / "all", 8)
    for split in ("train", "test"):
        shutil.rmtree(picture_folder(in_tmp / "single" / split, 8) / "b")
    no_labels = "svm-probe cannot run on dataset folder: it needs a dataset with labels of 2 classes or more"
    for args, said in ((["--data-root", "flat/all/a"], "Error: svm-probe cannot run on dataset folder: it needs a "
                        "held-out (test) split of the dataset; needs a dataset with labels of 2 classes or more; "
                        "nothing was trained"), (["--data-root", "single"], f"Error: {no_labels}; nothing was trained"),
                       (["--set", "svm-probe.drawz=3"], "no option 'drawz'")):
        refused = CliRunner().invoke(cli, ["run", "probe", "--dataset", "folder", *tiny, *args])
        assert refused.exit_code == 1 and said in _errors(refused.output)[0], refused.output
        assert not (in_tmp / "runs").exists()
    first = CliRunner().invoke(cli, ["run", "probe", "--dataset", "folder", *tiny])
    assert first.exit_code == 0, first.output
    assert re.search(r"epoch [12]: probe-epochs.d.val_accuracy is best there", first.output)
    metrics = json.loads((in_tmp / "reports/probe-folder/metrics.json").read_text())
    assert set(metrics["components"]) == {"svm-probe", "probe-epochs"}
    assert metrics["components"]["svm-probe"]["metrics"]["d.5pc.accuracy"] > 0
    assert torch.load(in_tmp / "runs/probe-folder/last.pt", weights_only=True)["options"]["batch_size"] == 64
    for changed, said in ((["--ndf", "16"], "ndf 8, not 16"), (["--lr", "1e-3"], "lr 0.0002, not 0.001")):
        again = CliRunner().invoke(cli, ["run", "probe", "--dataset", "folder", *tiny, *changed])
        assert again.exit_code == 1 and _errors(again.output) == [
            f"Error: runs/probe-folder holds a run trained with {said}; give --retrain to replace it, or --out for "
            "a run folder of its own"], again.output
    longer = CliRunner().invoke(cli, ["run", "probe", "--dataset", "folder", *tiny, "--epochs", "3"])
    assert longer.exit_code == 0 and "resuming runs/probe-folder/last.pt to epoch 3" in longer.output, longer.output
    assert torch.load(in_tmp / "runs/probe-folder/last.pt", weights_only=True)["epoch"] == 3


class FirstWeights(Evaluator):
    """Not cheap: only --across-epochs runs it on every epoch. Reports sums of G's and D's first conv weights."""

    name, description = "first-weights", "sums of the first conv layers' weights"

    def run(self, ctx):
        return Result(metrics={"G": ctx.gan.generator.main[0].weight.detach().sum().item(),
                               "D": ctx.gan.discriminator.main[0].weight.detach().sum().item()})


def test_across_epochs_flag_includes_every_component(tiny_run, tmp_path):
    import types

    module = types.ModuleType("first_weights")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(FirstWeights()))
    registry.register_plugin(module, "first-weights")
    try:
        data, _ = make_report(tiny_run, only=["first-weights"], out=tmp_path / "r", device="cpu",
                              progress=False, all_across_epochs=True)
        plain, _ = make_report(tiny_run, only=["first-weights"], out=tmp_path / "plain", device="cpu",
                               progress=False)
    finally:
        registry.reset()
    assert not plain.across_epochs  # not cheap: without the flag it runs on the last checkpoint only
    # each point from that epoch's own file, read with torch.load alone
    for model, key in (("G", "generator"), ("D", "discriminator")):
        expected = [(epoch, _epoch_weights(tiny_run, epoch, key)["main.0.weight"].sum().item()) for epoch in (1, 2)]
        assert expected[0][1] != pytest.approx(expected[1][1])
        got = data.across_epochs[f"first-weights.{model}"]
        assert [e for e, _ in got] == [1, 2] and [v for _, v in got] == pytest.approx([v for _, v in expected])


class Misbehaving(Evaluator):
    """Returns or does whatever its name says."""

    def __init__(self, name, behaviour):
        self.name, self.description, self.behaviour = name, f"misbehaves: {name}", behaviour

    def run(self, ctx):
        return self.behaviour()

    def available(self, options):
        if self.behaviour is None:  # an optional package that is not installed
            import not_installed  # noqa: F401
        return None


def _exit():
    import sys

    sys.exit(3)


def _interrupt():
    raise KeyboardInterrupt


MISBEHAVIOURS = {
    "returns-dict": (lambda: {"metrics": {"x": 1}}, "returns-dict.run returned a dict, not a ganlab.Result"),
    "text-metric": (lambda: Result(metrics={"x": "high"}), "metric 'x' = 'high' (str), not a number"),
    "bad-image": (lambda: Result(images=[ganlab.Image("grid", torch.full((3, 4, 4), 2.0))]),
                  "has values from 2 to 2; expected [0, 1]"),
    "bad-shape": (lambda: Result(images=[ganlab.Image("grid", torch.zeros(4, 4))]), "expected C x H x W"),
    "calls-exit": (_exit, "SystemExit: calls-exit called sys.exit(3)"),
    "chw-array": (lambda: Result(images=[ganlab.Image("grid", np.zeros((3, 16, 16), np.uint8))]),
                  "uint8 array of shape (3, 16, 16); expected uint8 H x W or H x W x C"),
    "axes-figure": (lambda: Result(figures=[ganlab.Figure("plot", object())]), "expected a matplotlib Figure"),
    "text-string": (lambda: Result(text="one paragraph"), "returned text that is not a list of strings"),
    "columns-string": (lambda: Result(tables=[ganlab.Table("t", "ab", [[1, 2]])]), "give columns as a list"),
    "unavailable": (None, "ModuleNotFoundError in available(): No module named 'not_installed'"),
}


def test_a_component_named_twice_runs_once(tiny_run, tmp_path):
    data, _ = make_report(tiny_run, only=["latent-walk", "latent-walk"], out=tmp_path / "r", device="cpu",
                          progress=False)
    assert [run.name for run in data.components] == ["latent-walk"]


def test_results_are_checked_at_the_boundary(tiny_run, tmp_path):
    import types

    module = types.ModuleType("misbehaving")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: [
        register(Misbehaving(name, behaviour)) for name, (behaviour, _) in MISBEHAVIOURS.items()] + [
        register(Misbehaving("tensor-metric", lambda: Result(metrics={"x": torch.tensor(0.25), "n": 3}))),
        register(Misbehaving("nan-metric", lambda: Result(metrics={"x": float("nan")}))),
        register(Misbehaving("interrupts", _interrupt))])
    registry.register_plugin(module, "misbehaving")
    try:
        names = [*MISBEHAVIOURS, "tensor-metric", "nan-metric", "latent-walk"]
        data, out = make_report(tiny_run, only=names, out=tmp_path / "r", device="cpu", progress=False)
        # Ctrl-C (here raised by a component) is not a component's failure: the report is not written
        with pytest.raises(KeyboardInterrupt):
            make_report(tiny_run, only=["interrupts", "latent-walk"], out=tmp_path / "r", device="cpu",
                        progress=False)
    finally:
        registry.reset()
    runs = {run.name: run for run in data.components}
    for name, (_, message) in MISBEHAVIOURS.items():
        assert runs[name].status == "failed" and message in runs[name].error, (name, runs[name].error)
    assert runs["tensor-metric"].status == "ok" and runs["tensor-metric"].result.metrics == {"x": 0.25, "n": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the first report kept, no staging folder left
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text)  # strict JSON: json.loads would accept NaN, so check the text too
    assert "NaN" not in text and metrics["components"]["nan-metric"]["metrics"] == {"x": None}
    assert metrics["non_finite"] == ["components.nan-metric.metrics.x = nan"]
    assert (out / "index.html").is_file()


class EpochCounter(Evaluator):
    """Cheap; records which checkpoint files it ran on and scores each by its epoch (highest at epoch 3)."""
    name, description, cheap = "epoch-counter", "records its checkpoints", True
    directions = {"score": "higher", "loss": "lower"}  # "epoch" has none
    seen: list = []

    def run(self, ctx):
        from pathlib import Path

        EpochCounter.seen.append(Path(ctx.gan.path).name)
        epoch = int(ctx.gan.meta["epoch"])
        return Result(metrics={"epoch": epoch, "score": -abs(epoch - 3), "loss": (epoch - 2) ** 2})


@pytest.fixture(scope="module")
def five_epochs(tmp_path_factory):
    from conftest import tiny_options

    out = tmp_path_factory.mktemp("five") / "run"
    ganlab.train(tiny_options(out, epochs=5), progress=False)
    return out


@pytest.fixture
def epoch_counter():
    import types

    module = types.ModuleType("counter")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(EpochCounter()))
    registry.register_plugin(module, "counter")
    EpochCounter.seen = []
    try:
        yield
    finally:
        registry.reset()


@pytest.mark.parametrize("points, epochs", [(3, [1, 3, 5]), (2, [1, 5]), (1, [5]), (0, [1, 2, 3, 4, 5]),
                                            (9, [1, 2, 3, 4, 5])])
def test_plots_across_epochs_use_at_most_epoch_points_files(five_epochs, epoch_counter, tmp_path, points, epochs):
    data, _ = make_report(five_epochs, only=["epoch-counter"], out=tmp_path / "r", device="cpu", progress=False,
                          epoch_points=points)
    assert data.across_epochs["epoch-counter.epoch"] == [(e, e) for e in epochs]
    # epoch 5 is last.pt (same epoch and step): its results are reused, not computed again
    assert EpochCounter.seen == ["last.pt"] + [f"epoch_{e:04d}.pt" for e in epochs if e != 5]


def test_select_epoch_looks_at_every_epoch_whatever_epoch_points_says(five_epochs, epoch_counter, tmp_path):
    data, _ = make_report(five_epochs, only=["epoch-counter"], out=tmp_path / "r", device="cpu", progress=False,
                          epoch_points=2, select_epoch="epoch-counter.score")
    assert [e for e, _ in data.across_epochs["epoch-counter.score"]] == [1, 2, 3, 4, 5]
    assert data.training["selected_by"]["epoch"] == 3 and data.components[0].result.metrics["epoch"] == 3


def test_select_epoch_follows_the_declared_direction(five_epochs, epoch_counter, tmp_path):
    """A lower-is-better metric selects its lowest epoch; a metric without a direction is refused."""
    data, out = make_report(five_epochs, only=["epoch-counter"], out=tmp_path / "r", device="cpu", progress=False,
                            select_epoch="epoch-counter.loss")
    assert data.training["selected_by"] == {"metric": "epoch-counter.loss", "epoch": 2, "value": 0,
                                            "direction": "lower"}
    assert data.components[0].result.metrics["epoch"] == 2
    EpochCounter.seen.clear()
    for metric in ("epoch", "nope"):  # no direction, or no such metric: refused before any epoch is measured
        with pytest.raises(ganlab.GanlabError, match="does not say whether higher or lower is better"):
            make_report(five_epochs, only=["epoch-counter"], out=tmp_path / "r2", device="cpu", progress=False,
                        select_epoch=f"epoch-counter.{metric}")
    assert EpochCounter.seen == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["components"]["epoch-counter"]["directions"] == {"epoch": None, "score": "higher",
                                                                     "loss": "lower"}


def test_select_epoch_ignores_files_that_only_look_numbered(five_epochs, epoch_counter, tmp_path):
    """A stray epoch_*.pt whose "number" is not ASCII digits (a superscript two is a digit to str.isdigit, not to
    int) is not one of the run's epochs."""
    run = tmp_path / "run"
    shutil.copytree(five_epochs, run)
    shutil.copy(run / "epoch_0003.pt", run / "epoch_\u00b2.pt")
    data, _ = make_report(run, only=["epoch-counter"], out=tmp_path / "r", device="cpu", progress=False,
                          select_epoch="epoch-counter.score")
    assert data.training["selected_by"]["epoch"] == 3 and data.checkpoint == str(run / "epoch_0003.pt")
    assert [e for e, _ in data.across_epochs["epoch-counter.score"]] == [1, 2, 3, 4, 5]


def test_epoch_files_are_the_names_the_trainer_writes(tmp_path):
    for name in ("epoch_0003.pt", "epoch_9999.pt", "epoch_10000.pt", "epoch_best.pt", "epoch_7.pt", "epoch_00003.pt",
                 "epoch_\u00b2\u00b2\u00b2\u00b2.pt", "epoch_\u0663\u0663\u0663\u0663.pt", "epoch_0004.png"):
        (tmp_path / name).touch()
    (tmp_path / "epoch_0005.pt").mkdir()
    assert ganlab.epoch_files(tmp_path) == [(3, tmp_path / "epoch_0003.pt"), (9999, tmp_path / "epoch_9999.pt"),
                                            (10000, tmp_path / "epoch_10000.pt")]  # by epoch, not by name
    assert ganlab.epoch_files(tmp_path, "png") == [(4, tmp_path / "epoch_0004.png")]
    assert ganlab.epoch_files(tmp_path / "missing") == []


def test_the_best_epoch_of_each_metric_follows_its_direction(five_epochs, epoch_counter, tmp_path):
    data, out = make_report(five_epochs, only=["epoch-counter"], out=tmp_path / "r", device="cpu", progress=False,
                            epoch_points=0)
    best = json.loads((out / "metrics.json").read_text())["across_epochs_best"]
    assert best == {"epoch-counter.score": {"epoch": 3, "value": 0, "direction": "higher"},
                    "epoch-counter.loss": {"epoch": 2, "value": 0, "direction": "lower"}}
    from test_render import parse, table_rows

    [table] = [t for t in parse(out / "index.html").iter("table") if t.attrs.get("class") == "best-epochs"]
    assert table_rows(table)[1:] == [["epoch-counter.score", "3", "0", "higher"],
                                     ["epoch-counter.loss", "2", "0", "lower"]]


class Grouped(EpochCounter):
    """EpochCounter with its own across-epochs figures: epoch and score together, "hidden" in none."""
    name = "grouped"

    def run(self, ctx):
        return Result(metrics={"epoch": int(ctx.gan.meta["epoch"]), "score": 1.0, "hidden": 2.0, "alone": 3.0})

    def series_figures(self, names):
        return {"both": ["epoch", "score"], "alone": ["alone"]}


class BadGrouping(Grouped):
    name = "bad-grouping"

    def series_figures(self, names):
        raise RuntimeError("boom")


def test_components_choose_their_across_epochs_figures(five_epochs, tmp_path):
    import types

    module = types.ModuleType("grouped")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: (register(Grouped()),
                                                                          register(BadGrouping())))
    registry.register_plugin(module, "grouped")
    try:
        data, _ = make_report(five_epochs, only=["grouped", "bad-grouping"], out=tmp_path / "r", device="cpu",
                              progress=False, epoch_points=2)
    finally:
        registry.reset()
    assert data.across_groups == {
        "grouped: both": ["grouped.epoch", "grouped.score"], "grouped: alone": ["grouped.alone"],
        # the failing grouping falls back to a figure per series, and says so
        **{f"bad-grouping: {m}": [f"bad-grouping.{m}"] for m in ("epoch", "score", "hidden", "alone")}}
    assert "grouped.hidden" in data.across_epochs  # not drawn, still recorded
    assert any("bad-grouping.series_figures failed (RuntimeError: boom)" in p for p in data.problems)
    drawn = sorted(p.name for p in (tmp_path / "r" / "assets").glob("across-epochs-*.png"))
    assert drawn[:2] == ["across-epochs-01-grouped-both.png", "across-epochs-02-grouped-alone.png"]
    assert len(drawn) == 6


def test_epoch_points_from_the_command_line(five_epochs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(five_epochs), "--only", "d-score", "--epoch-points", "2", "-q",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [e for e, _ in metrics["across_epochs"]["d-score.D_x_mean"]] == [1, 5]
    # mean D(x) and mean D(G(z)) share a figure; the image count is not drawn
    assert sorted(p.name for p in (tmp_path / "r" / "assets").glob("across-epochs-*")) == [
        "across-epochs-01-d-score-mean-d-output.png", "across-epochs-02-d-score-accuracy.png"]
    bad = runner.invoke(cli, ["report", str(five_epochs), "--epoch-points", "-1"])
    assert bad.exit_code == 2 and "--epoch-points" in bad.output and "Traceback" not in bad.output


def test_a_limit_that_does_not_bind_shares_the_whole_split(tiny_run):
    from ganlab.testing import make_context

    expected = load_split("digits", "test", image_size=16, channels=1, limit=2000, progress=False)[0]
    ctx = make_context(tiny_run)
    whole = ctx.split("test")
    assert len(whole[0]) == 899
    assert ctx.split("test", limit=5000) is whole and ctx.split("test", limit=899) is whole
    part = ctx.split("test", limit=100)
    assert len(part[0]) == 100 and ctx.split("test", limit=100) is part
    assert torch.equal(ctx.split("test", limit=2000)[0], expected)  # what a load with that limit gives
    fresh = make_context(tiny_run)
    limited = fresh.split("train", limit=1000)  # the limit did not bind: it is the whole split
    assert fresh.split("train") is limited
