"""Plugins: every hook, entry-point loading with a real installed package, failures, clashes, disabling."""
import importlib
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import ganlab
from ganlab.errors import GanlabError
from ganlab.plugin import hookspecs, registry
from ganlab.plugin.components import Evaluator, Result
from ganlab.report import make_report

EXAMPLE = Path(__file__).parent / "example_plugin"
GANLAB = str(Path(sys.executable).parent / "ganlab")


@pytest.fixture(scope="session")
def example_plugin():
    """pip-installs tests/example_plugin into this environment for the session, then removes it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(EXAMPLE)],
                   check=True, capture_output=True)
    importlib.invalidate_caches()
    registry.reset()
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "ganlab-example-plugin"], capture_output=True)
    importlib.invalidate_caches()
    registry.reset()


@pytest.fixture
def plugin_module():
    """Registers an in-process plugin module for one test and always unregisters it."""
    made = []

    def make(name, **hooks):
        module = types.ModuleType(name)
        for hook_name, func in hooks.items():
            setattr(module, hook_name, ganlab.hookimpl(func))
        made.append(module)
        return registry.register_plugin(module, name)

    try:
        yield make
    finally:
        registry.reset()


class Constant(Evaluator):
    description = "returns a constant"

    def __init__(self, name="constant", value=1.0):
        self.name, self.value = name, value

    def run(self, ctx):
        return Result(metrics={"value": self.value})


class ConstantAnalysis(ganlab.Analysis):
    description = "looks at nothing"

    def __init__(self, name):
        self.name = name


def test_every_hookspec_has_a_test():
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("ganlab_")]
    assert len(specs) == 9
    tests = {name for name, _ in inspect.getmembers(sys.modules[__name__], inspect.isfunction)}
    missing = [s for s in specs if f"test_hook_{s}" not in tests]
    assert not missing, f"hooks without a test: {missing}"


def test_hook_ganlab_summarise_seeds(plugin_module):
    from ganlab.api import seed_tables
    from ganlab.report import seed_runs

    table = ganlab.Table("m over seeds", ["metric", "mean"], [["x", "0.5"]])
    plugin_module("seedy", ganlab_summarise_seeds=lambda summary: [table] if "m" in summary["components"] else None)
    summary = seed_runs.summarise({0: {"components": {"m": {"metrics": {"x": 0.4}}}},
                                   1: {"components": {"m": {"metrics": {"x": 0.6}}}}})
    assert seed_tables(summary) == [table]
    assert "## m over seeds" in seed_runs.markdown(summary, "exp", seed_tables(summary))
    assert seed_tables({"seeds": [0], "components": {}}) == []


def test_hook_ganlab_register_evaluators(plugin_module, tiny_run, tmp_path):
    reg = plugin_module("mine", ganlab_register_evaluators=lambda register: register(Constant("my-eval", 3.0)))
    assert reg.evaluators["my-eval"].value == 3.0 and reg.owner[("evaluators", "my-eval")] == "mine"
    assert reg.plugins["mine"].registers == {"evaluators": ["my-eval"]}
    # the effect: a report runs it as an evaluator of this plugin, and its number reaches metrics.json
    data, out = make_report(tiny_run, only=["my-eval"], out=tmp_path / "r", device="cpu", progress=False)
    run = data.components[0]
    assert (run.name, run.kind, run.plugin, run.status) == ("my-eval", "evaluator", "mine", "ok")
    assert json.loads((out / "metrics.json").read_text())["components"]["my-eval"]["metrics"] == {"value": 3.0}


def test_hook_ganlab_register_analyses(plugin_module, tiny_run, tmp_path):
    class Look(ganlab.Analysis):
        name, description = "my-look", "looks"

        def run(self, ctx):
            return Result(text=[f"seen {ctx.gan.config.nz} latent dims"])

    reg = plugin_module("mine", ganlab_register_analyses=lambda register: register(Look()))
    assert "my-look" in reg.analyses and "my-look" in reg.components() and "my-look" not in reg.evaluators
    data, out = make_report(tiny_run, only=["my-look"], out=tmp_path / "r", device="cpu", progress=False)
    run = data.components[0]
    assert (run.kind, run.plugin, run.status, run.result.text) == ("analysis", "mine", "ok", ["seen 8 latent dims"])
    assert 'id="component-my-look"' in (out / "index.html").read_text()


def test_hook_ganlab_register_datasets(plugin_module, tmp_path):
    from ganlab import DatasetSource, load_split

    def open_split(split, root, download, variant):
        return [(torch.full((4, 4), 255 * (i % 2), dtype=torch.uint8).numpy(), i % 2) for i in range(6)]

    source = DatasetSource("checkers", "tiny test set", ("train",), 2, "nothing", open_split)
    reg = plugin_module("mine", ganlab_register_datasets=lambda register: register(source))
    assert reg.datasets["checkers"] is source and "digits" in reg.datasets  # built-ins come the same way
    images, labels = load_split("checkers", image_size=16, channels=1, progress=False)
    assert images.shape == (6, 1, 16, 16) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert images[1].min() == 255 and images[0].max() == 0
    tensors = DatasetSource("tensors", "what ToTensor gives", ("train",), 2, "nothing",
                            lambda *args: [(torch.zeros(1, 4, 4), 0), (torch.ones(1, 4, 4), 1)])
    plugin_module("mine-too", ganlab_register_datasets=lambda register: register(tensors))
    with pytest.raises(ganlab.GanlabError, match=r"^tensors/train item 0 is a Tensor, not an image: a dataset gives "
                                                 "a PIL image or a numpy array"):
        load_split("tensors", image_size=16, channels=1, progress=False)


def test_a_plugin_hook_that_raises_is_one_line_naming_the_plugin(plugin_module, tmp_path):
    from ganlab import DatasetSource, load, open_split

    def missing_files(split, root, download, variant):
        raise FileNotFoundError(f"no files at {root}")

    def strict_reader(path, state):
        return {"mu": 0}["image_size"]  # a reader that takes every file for its own

    source = DatasetSource("fragile", "raises when opened", ("train",), None, "nothing", missing_files)
    plugin_module("raisers", ganlab_register_datasets=lambda register: register(source),
                  ganlab_load_checkpoint=strict_reader)
    with pytest.raises(ganlab.GanlabError, match=r"^fragile: cannot open split 'train' \(FileNotFoundError: no "
                                                 r"files at None\); check --data-root$"):
        open_split("fragile")
    (tmp_path / "stats.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ganlab.GanlabError, match=r"plugin raisers failed to read .*stats.npz \(KeyError: "
                                                 r"'image_size'\); its ganlab_load_checkpoint should return None"):
        load(tmp_path / "stats.npz")


def test_hook_ganlab_register_detectors(plugin_module, tiny_run, tmp_path):
    class Corner(ganlab.Detector):
        name, description = "corner", "a box in the top-left corner of every image"

        def detect(self, image):
            return [(0, 0, image.shape[1] // 2, image.shape[0] // 2)]

    class UsesDetector(Evaluator):
        name, description = "uses-detector", "counts the corner detector's boxes on 4 samples"

        def run(self, ctx):
            import numpy as np

            images = ((ctx.gan.sample(4, seed=0) + 1) * 127.5).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
            return Result(metrics={"boxes": sum(len(ctx.detectors["corner"].detect(np.asarray(i))) for i in images)})

    reg = plugin_module("boxes", ganlab_register_detectors=lambda register: register(Corner()),
                        ganlab_register_evaluators=lambda register: register(UsesDetector()))
    assert reg.owner[("detectors", "corner")] == "boxes" and ganlab.detector("corner").name == "corner"
    data, _ = make_report(tiny_run, only=["uses-detector"], out=tmp_path / "r", device="cpu", progress=False)
    assert data.components[0].result.metrics == {"boxes": 4}
    bad = plugin_module("not-a-detector", ganlab_register_detectors=lambda register: register(Constant("x")))
    assert "is not a Detector" in bad.plugins["not-a-detector"].error


def test_hook_ganlab_register_feature_spaces(plugin_module, tiny_run, tmp_path):
    class MeanBrightness(ganlab.FeatureSpace):
        name, description = "mean-brightness", "one number per image: its mean pixel value"

        def embed(self, ctx, images):
            return images.float().mean((1, 2, 3), keepdim=False)[:, None].numpy()

    class UsesSpace(Evaluator):
        name, description = "uses-space", "embeds 8 real test images in the registered space"

        def run(self, ctx):
            images, _ = ctx.split("test", limit=8)
            vectors = ctx.feature_spaces["mean-brightness"].embed(ctx, images)
            return Result(metrics={"dim": vectors.shape[1], "first": float(vectors[0, 0]),
                                   "expected": images[0].float().mean().item()})

    reg = plugin_module("spaces", ganlab_register_feature_spaces=lambda register: register(MeanBrightness()),
                        ganlab_register_evaluators=lambda register: register(UsesSpace()))
    assert reg.owner[("feature_spaces", "mean-brightness")] == "spaces"
    data, _ = make_report(tiny_run, only=["uses-space"], out=tmp_path / "r", device="cpu", progress=False)
    metrics = data.components[0].result.metrics
    assert metrics["dim"] == 1 and metrics["first"] == pytest.approx(metrics["expected"])
    bad = plugin_module("not-a-space", ganlab_register_feature_spaces=lambda register: register(Constant("x")))
    assert "is not a FeatureSpace" in bad.plugins["not-a-space"].error


def test_hook_ganlab_register_experiments(plugin_module, tiny_run, tmp_path, in_tmp):
    from click.testing import CliRunner

    from ganlab.cli import cli

    class Option(Evaluator):
        name, description, options = "my-option", "reports its option", {"k": 1}

        def run(self, ctx):
            return Result(metrics={"k": ctx.options["k"]})

    exp = ganlab.Experiment("my-exp", "an experiment of mine", train={"epochs": 1},
                            components=("my-option",), component_options={"my-option.k": 7})
    reg = plugin_module("mine", ganlab_register_experiments=lambda register: register(exp),
                        ganlab_register_evaluators=lambda register: (register(Option()), register(Constant())))
    assert reg.experiments["my-exp"] is exp and "probe-digits" in reg.experiments
    # the effect: `ganlab run` lists it and runs its recipe (its components, with its options)
    listing = CliRunner().invoke(cli, ["run", "--list"])
    lines = listing.output.splitlines()
    mine = "my-exp           an experiment of mine"
    assert listing.exit_code == 0 and mine in lines
    # what it trains with, over `ganlab train`'s defaults (which `ganlab run --help` shows), is said under it
    assert lines[lines.index(mine) + 1].split() == ["trains", "with:", "epochs", "1"]
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["run", "my-exp", "--checkpoint", str(tiny_run), "--report-out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    components = json.loads((out / "metrics.json").read_text())["components"]
    assert list(components) == ["my-option"] and components["my-option"]["metrics"] == {"k": 7}


def test_hook_ganlab_register_commands(example_plugin):
    result = subprocess.run([GANLAB, "example-hello", "tester"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "hello tester from ganlab-example-plugin"
    listing = subprocess.run([GANLAB, "--help"], capture_output=True, text=True).stdout
    assert "example-hello" in listing


def test_hook_ganlab_load_checkpoint(plugin_module, tiny_run, tmp_path):
    payload = torch.load(tiny_run / "last.pt", weights_only=True)
    foreign = tmp_path / "model.mine"
    torch.save({"my-format": 1, "g": payload["generator"]}, foreign)
    loaded_paths = []

    def reader(path):
        state = torch.load(path, weights_only=True)
        if not (isinstance(state, dict) and "my-format" in state):
            return None
        loaded_paths.append(path)
        gan = ganlab.load(tiny_run / "last.pt")
        gan.generator.load_state_dict(state["g"])
        return ganlab.LoadedGAN(gan.config, gan.generator, None, Path(path), {"format": "mine"})

    plugin_module("mine", ganlab_load_checkpoint=reader)
    gan = ganlab.load(foreign)
    assert loaded_paths == [str(foreign)] and gan.meta["format"] == "mine" and gan.discriminator is None
    with pytest.raises(GanlabError, match="no plugin recognised"):
        junk = tmp_path / "junk.pt"
        torch.save({"something": torch.zeros(1)}, junk)
        ganlab.load(junk)


def test_a_loader_with_plausible_loose_metadata_reports_fine(plugin_module, tiny_run, tmp_path):
    """meta={"dataset": "digits"} (a name, not ganlab's dict) and the state dict from a plugin work in a report."""
    source = ganlab.load(tiny_run)
    weights = {"g": source.generator.state_dict(), "d": source.discriminator.state_dict()}

    def reader(path, state):
        if not str(path).endswith(".loose"):
            return None
        return ganlab.LoadedGAN.from_state_dicts(source.config, weights["g"], weights["d"], path=path,
                                                 meta={"dataset": "digits", "epoch": "late", "history": None})

    (tmp_path / "model.loose").write_bytes(b"my own format")
    plugin_module("loose", ganlab_load_checkpoint=reader)
    data, out = make_report(tmp_path / "model.loose", only=["d-score"], out=tmp_path / "r", device="cpu",
                            progress=False)
    assert data.dataset == "digits" and data.components[0].status == "ok" and data.training["epoch"] is None


def _badly_directed():
    c = Constant("directed")
    c.directions = {"*.fd": "smaller"}
    return c


def _needing(needs):
    c = Constant("needy")
    c.needs = needs
    return c


@pytest.mark.parametrize("bad, message", [
    (Constant("Bad Name"), "lowercase"),
    (object(), "not an Evaluator"),
    (Constant, "not an Evaluator; register an instance, Constant()"),
    (_badly_directed(), "directions *.fd: 'smaller': use 'higher', 'lower' or None"),
    (_needing("heldout"), "needs 'heldout': give a tuple of 'labels', 'heldout'"),  # ("heldout") is no tuple
    (_needing(("held-out",)), "needs ('held-out',): give a tuple of"),
])
def test_register_checks_name_and_base_class(plugin_module, bad, message):
    reg = plugin_module("sloppy",
                        ganlab_register_evaluators=lambda register: (register(Constant("fine")), register(bad)))
    assert message in reg.plugins["sloppy"].error
    assert "fine" not in reg.evaluators  # a failing plugin's partial registrations are dropped
    assert "d-score" in reg.evaluators  # and everything else still works


def test_name_clash_names_both_plugins_and_the_builtin_keeps_its_name(plugin_module):
    # copycat registers after the built-ins but pluggy calls it first: it must still be the one refused
    reg = plugin_module("copycat", ganlab_register_evaluators=lambda register: register(Constant("d-score")),
                        ganlab_register_analyses=lambda register: register(ConstantAnalysis("copycat-extra")))
    error = reg.plugins["copycat"].error
    assert "'d-score' is registered by both copycat and d-score; copycat was disabled" in error
    assert type(reg.evaluators["d-score"]).__name__ == "DiscriminatorScore"
    assert reg.owner[("evaluators", "d-score")] == "d-score"
    assert "copycat-extra" not in reg.components()  # all or nothing: its other hook's registration is gone too
    assert reg.pm.get_plugin("copycat") is None


def test_an_analysis_named_like_a_builtin_evaluator_is_refused(plugin_module):
    """Evaluators and analyses share one name space: --only, --set and metrics.json name components."""
    reg = plugin_module("shadow", ganlab_register_analyses=lambda register: register(ConstantAnalysis("d-score")))
    assert "'d-score' is registered by both d-score and shadow; shadow was disabled" in reg.plugins["shadow"].error
    assert type(reg.components()["d-score"]).__name__ == "DiscriminatorScore"
    assert reg.component_owner("d-score") == "d-score"
    twice = plugin_module("twice", ganlab_register_evaluators=lambda register: register(Constant("same")),
                          ganlab_register_analyses=lambda register: register(ConstantAnalysis("same")))
    assert "registered the name 'same' twice" in twice.plugins["twice"].error and "same" not in twice.components()


def test_two_third_party_plugins_clash(plugin_module):
    first = types.ModuleType("first")
    first.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(Constant("same-name")))
    registry.register_plugin(first, "first")
    pm, plugins = registry.plugin_manager()
    second = types.ModuleType("second")
    second.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(Constant("same-name")))
    plugins["second"] = registry.PluginInfo("second", "(in-process)", "-")
    pm.register(second, name="second")
    reg = registry.Registry(pm, plugins)
    failed = [name for name in ("first", "second") if reg.plugins[name].error]
    assert len(failed) == 1 and "both" in reg.plugins[failed[0]].error and "first" in reg.plugins[failed[0]].error
    assert reg.owner[("evaluators", "same-name")] in ("first", "second")


def test_register_hooks_follow_pluggy_order_and_wrappers(plugin_module):
    calls = []

    def wrapper(register):
        calls.append("wrapper-before")
        yield
        calls.append("wrapper-after")

    module = types.ModuleType("ordered")
    module.ganlab_register_evaluators = ganlab.hookimpl(tryfirst=True)(
        lambda register: (calls.append("tryfirst"), register(Constant("ordered-first"))))
    module.wrap = ganlab.hookimpl(wrapper=True, specname="ganlab_register_evaluators")(wrapper)
    reg = registry.register_plugin(module, "ordered")
    assert reg.plugins["ordered"].error is None
    assert calls[:2] == ["wrapper-before", "tryfirst"] and calls[-1] == "wrapper-after"
    assert reg.owner[("evaluators", "ordered-first")] == "ordered"


def test_a_plugin_raising_in_one_hook_is_disabled_whole(plugin_module):
    def boom(register):
        raise RuntimeError("no GPU here")

    reg = plugin_module("halfway", ganlab_register_analyses=lambda register: register(Constant("halfway-ok")),
                        ganlab_register_evaluators=boom)
    assert reg.plugins["halfway"].error == "RuntimeError: no GPU here"
    assert "halfway-ok" not in reg.components() and "d-score" in reg.evaluators
    with pytest.raises(GanlabError, match="halfway .RuntimeError: no GPU here"):
        reg.get("evaluators", "halfway-thing")


def test_hookimpl_without_spec_is_reported(plugin_module):
    reg = plugin_module("typo", ganlab_register_evaluatorz=lambda register: None)
    assert "ganlab_register_evaluatorz" in reg.plugins["typo"].error
    assert reg.pm.get_plugin("typo") is None  # unregistered again


def test_installed_plugin_listed_with_import_failure(example_plugin):
    result = subprocess.run([GANLAB, "plugins", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example"]["distribution"] == "ganlab-example-plugin" and rows["example"]["version"] == "0.2.0"
    assert rows["example"]["registers"] == {"datasets": ["example-stripes"], "evaluators": ["example-brightness"],
                                            "analyses": ["example-histogram"], "commands": ["example-hello"]}
    assert rows["example-broken"]["error"].startswith("import failed: ModuleNotFoundError")
    assert rows["d-score"]["registers"] == {"evaluators": ["d-score"]} and rows["d-score"]["error"] is None
    assert rows["d-score"]["distribution"] == "ganlab"  # the built-in keeps its name; the other one is refused
    assert "'d-score' is ganlab's plugin's already" in rows["d-score (ganlab-example-plugin)"]["error"]
    assert rows["example-exits"]["error"] == "import failed: SystemExit: 3"
    text = subprocess.run([GANLAB, "plugins"], capture_output=True, text=True).stdout
    assert "example-broken (ganlab-example-plugin 0.2.0) [FAILED]" in text
    checked = subprocess.run([GANLAB, "plugins", "--check"], capture_output=True, text=True)
    assert checked.returncode == 1 and "plugins failed: d-score (ganlab-example-plugin), example-broken, " \
        "example-exits, example-half" in checked.stderr


def test_disabled_plugins(example_plugin, monkeypatch):
    monkeypatch.setenv("GANLAB_DISABLE_PLUGINS", "example, d-score")
    reg = registry.get_registry(reload=True)
    try:
        assert "example-brightness" not in reg.evaluators and "d-score" not in reg.evaluators
        assert reg.plugins["example"].disabled and reg.plugins["d-score"].disabled
        assert "latent-walk" in reg.analyses
    finally:
        monkeypatch.delenv("GANLAB_DISABLE_PLUGINS")
        registry.reset()


def test_example_plugin_section_in_report(example_plugin, tiny_run, tmp_path):
    registry.reset()
    data, out = make_report(tiny_run / "last.pt", only=["example-brightness"], out=tmp_path / "r", device="cpu",
                            progress=False)
    run = data.components[0]
    expected = ((ganlab.load(tiny_run).sample(256, seed=0) + 1) / 2).mean().item()
    assert run.status == "ok" and run.plugin == "example"
    assert run.result.metrics["brightness"] == pytest.approx(expected, abs=1e-6)
    html = (out / "index.html").read_text()
    assert 'id="component-example-brightness"' in html and "Mean pixel brightness" in html


def test_ganlab_still_works_when_plugins_break(example_plugin):
    env = {**os.environ, "GANLAB_DISABLE_PLUGINS": ""}
    result = subprocess.run([GANLAB, "--version"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and ganlab.__version__ in result.stdout


def test_example_plugin_dataset_declares_its_channels(example_plugin, tmp_path):
    registry.reset()
    images, labels = ganlab.load_split("example-stripes", "test", image_size=16, channels=1, progress=False)
    assert images.shape == (100, 1, 16, 16) and set(labels.tolist()) == {0, 1}
    layout = ganlab.dataset_source("example-stripes").layout()
    assert layout.classes == ("0", "1") and layout.heldout == "test"
    # no --channels: the source's declared channel count decides, as for the built-in grey datasets
    result = subprocess.run([GANLAB, "train", "--dataset", "example-stripes", "--image-size", "16", "--ngf", "8",
                             "--ndf", "8", "--nz", "8", "--epochs", "1", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    gan = ganlab.load(tmp_path / "run")
    assert gan.config.channels == 1 and gan.meta["dataset"]["name"] == "example-stripes"


def test_example_plugin_reads_npz_without_unpickling(example_plugin, tiny_run, tmp_path, monkeypatch):
    from ganlab_example import save_npz

    registry.reset()
    original = ganlab.load(tiny_run)
    save_npz(original, tmp_path / "model.npz")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("an .npz must never reach torch.load"))
    loaded = ganlab.load(tmp_path / "model.npz")
    assert loaded.meta["format"] == "example-npz" and loaded.config == original.config
    assert torch.equal(loaded.sample(4, seed=1), original.sample(4, seed=1))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(GanlabError, match="not a readable example .npz checkpoint"):
        ganlab.load(tmp_path / "junk.npz")


def test_example_plugin_analysis_section(example_plugin, tiny_run, tmp_path):
    registry.reset()
    data, out = make_report(tiny_run, only=["example-histogram"], out=tmp_path / "r", device="cpu", progress=False,
                            settings={"example-histogram.bins": "8"})
    run = data.components[0]
    assert run.status == "ok" and run.plugin == "example" and run.options["bins"] == 8
    assert len(run.result.figures) == 1 and "example-histogram" in (out / "index.html").read_text()


def test_the_reference_examples_work(tiny_run, tmp_path):
    """docs/reference.md's code blocks, run as one plugin: each registers what the page says, and runs."""
    import re

    text = (Path(__file__).parents[1] / "docs" / "reference.md").read_text()
    module = types.ModuleType("reference_examples")
    exec(compile("\n\n".join(re.findall(r"```python\n(.*?)```", text, re.S)), "reference.md", "exec"),
         module.__dict__)
    reg = registry.register_plugin(module, "reference-examples")
    try:
        assert reg.plugins["reference-examples"].error is None
        for kind, name in [("evaluators", "mean-dx"), ("analyses", "sample-grid"), ("datasets", "blobs"),
                           ("experiments", "blobs-quick"), ("detectors", "bright-spot"),
                           ("feature_spaces", "brightness")]:
            assert reg.owner[(kind, name)] == "reference-examples", (kind, name)
        data, _ = make_report(tiny_run, only=["mean-dx", "sample-grid"], out=tmp_path / "r", device="cpu",
                              progress=False)
        assert [run.status for run in data.components] == ["ok", "ok"]
        images, labels = ganlab.load_split("blobs", "test", image_size=16, channels=1, progress=False)
        assert images.shape == (100, 1, 16, 16) and labels[:4].tolist() == [0, 1, 0, 1]
        import numpy as np

        spot = np.zeros((10, 10, 3), dtype=np.uint8)
        spot[6, 3] = 255
        assert reg.detectors["bright-spot"].detect(spot) == [(1, 4, 4, 4)]
    finally:
        registry.reset()


def test_failed_plugins_are_named_in_components_report_and_help(example_plugin, tiny_run, tmp_path):
    listed = subprocess.run([GANLAB, "components"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    warnings = [line for line in listed.stderr.splitlines() if line.startswith("warning: plugin")]
    assert any("example-broken" in w and "import failed: ModuleNotFoundError" in w for w in warnings)
    assert any("example-half" in w and "'Not A Valid Name'" in w for w in warnings)
    assert "example-brightness (evaluator" in listed.stdout  # the working plugin's parts are still listed
    report = subprocess.run([GANLAB, "report", str(tiny_run / "last.pt"), "--only", "latent-walk", "--out",
                             str(tmp_path / "r")], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "warning: plugin example-broken (ganlab-example-plugin) failed and was skipped" in report.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.index("plugin example-half (ganlab-example-plugin) failed") < page.index('id="component-')
    help_text = " ".join(subprocess.run([GANLAB, "--help"], capture_output=True, text=True).stdout.split())
    assert "example-half-hello UNAVAILABLE: plugin example-half failed" in help_text
    assert "example-hello Says hello" in help_text or "example-hello" in help_text
    refused = subprocess.run([GANLAB, "example-half-hello"], capture_output=True, text=True)
    assert refused.returncode == 1 and "comes from plugin example-half, which failed" in refused.stderr
    assert "hello" not in refused.stdout


def test_components_lists_loaders_spaces_datasets_and_every_builtin_option_says_what_it_does():
    listed = subprocess.run([GANLAB, "components", "--json"], capture_output=True, text=True)
    found = json.loads(listed.stdout)
    plugins = json.loads(subprocess.run([GANLAB, "plugins", "--json"], capture_output=True, text=True).stdout)
    builtin = {row["name"] for row in plugins if row["distribution"] == "ganlab"}
    assert {"svm-probe", "sample-quality", "d-score"} <= builtin
    assert {"digits", "folder", "mnist"} <= {row["name"] for row in found["datasets"]}
    assert {"discriminator", "pixels", "fid-inception"} <= {row["name"] for row in found["feature_spaces"]}
    assert any("examples/dcgan" in row["description"] for row in found["loaders"])
    for kind in ("datasets", "feature_spaces", "loaders", "detectors"):
        assert all(row["description"] for row in found[kind]), kind
    blank = [f"{row['name']}.{option}" for row in found["components"] if row["plugin"] in builtin
             for option, spec in row["options"].items() if not spec["help"]]
    assert not blank, f"built-in options without a description: {blank}"
    text = subprocess.run([GANLAB, "components"], capture_output=True, text=True).stdout
    assert "feature spaces:" in text and "checkpoint loaders" in text and "datasets:" in text


def test_the_command_line_loads_every_plugin_without_torch():
    """``ganlab --help`` imports every plugin's hook module and commands; torch loads only when work runs."""
    code = "import sys, ganlab.cli; print(sorted(ganlab.cli.cli.commands)); print('torch' in sys.modules)"
    env = {**os.environ, "GANLAB_DISABLE_PLUGINS": "example, example-broken, example-half, example-exits"}  # built-ins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert "'fid'" in out and "'dedup'" in out and out.endswith("False\n")


def test_a_registry_built_again_lists_each_registration_once():
    pm, plugins = registry.plugin_manager()
    registry.Registry(pm, plugins)
    again = registry.Registry(pm, plugins)
    for info in again.plugins.values():
        for kind, names in info.registers.items():
            assert len(names) == len(set(names)), (info.name, kind, names)
    assert again.plugins["d-score"].registers["evaluators"] == ["d-score"]
