"""`ganlab new-plugin` writes a package that installs, is listed, and passes its own test; ganlab.testing helpers."""
import gc
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import ganlab
from ganlab.cli import cli
from ganlab.plugin import registry
from ganlab.report import make_report
from ganlab.testing import make_context, plugin, run_component, train_tiny_gan

BIN = Path(sys.executable).parent


def test_new_plugin_installs_is_listed_and_passes_its_own_test(tmp_path):
    folder = tmp_path / "sparkle"
    result = CliRunner().invoke(cli, ["new-plugin", str(folder), "--name", "sparkle"])
    assert result.exit_code == 0, result.output
    assert (folder / "ganlab_sparkle" / "__init__.py").is_file() and (folder / "pyproject.toml").is_file()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(folder)],
                   check=True, capture_output=True)
    try:
        # (the example plugin's deliberately broken entry point may be installed by another test: not --check)
        listed = subprocess.run([BIN / "ganlab", "plugins", "--json"], capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows["sparkle"]["distribution"] == "ganlab-sparkle" and rows["sparkle"]["error"] is None
        assert rows["sparkle"]["registers"] == {"evaluators": ["sparkle-brightness"], "analyses": ["sparkle-gallery"]}
        tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
                                capture_output=True, text=True, cwd=tmp_path)
        assert tested.returncode == 0 and "3 passed" in tested.stdout, tested.stdout[-2000:] + tested.stderr[-2000:]
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "ganlab-sparkle"], capture_output=True)
        registry.reset()


@pytest.mark.parametrize("args, message", [
    (["--name", "Bad_Name"], "use lowercase letters, digits and dashes"),
    (["--name", "ok"], "is not an empty folder"),
    (["--name", "svm-probe"], "an installed plugin has that name already"),  # it would disable the built-in
])
def test_new_plugin_refuses_bad_names_and_used_folders(tmp_path, args, message):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    result = CliRunner().invoke(cli, ["new-plugin", str(tmp_path / "used"), *args])
    assert result.exit_code == 1 and message in result.output
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["mine.txt"]


class Echo(ganlab.Evaluator):
    name, description = "echo", "returns its options"
    options = {"count": ganlab.Option(3, min=1), "scale": 0.5}

    def run(self, ctx):
        return ganlab.Result(metrics={**ctx.options, "heldout_is_test": float(ctx.heldout_split == "test")})


def test_make_context_merges_declared_defaults(tiny_run, tmp_path, monkeypatch):
    ctx = make_context(tiny_run, Echo(), options={"count": 7}, cache_dir=tmp_path / "mine")
    assert ctx.options == {"count": 7, "scale": 0.5} and ctx.dataset == "digits" and ctx.layout.classes
    assert ctx.gan.config.image_size == 16 and ctx.split("test", limit=5)[0].shape == (5, 1, 16, 16)
    with pytest.raises(ganlab.GanlabError, match="must be >= 1"):
        make_context(tiny_run, Echo(), options={"count": 0})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = run_component(Echo(), tiny_run, options={"scale": 2.0})
    assert result.metrics == {"count": 3, "scale": 2.0, "heldout_is_test": 1.0}
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []  # the context's own cache folder went with it


class Draws(ganlab.Evaluator):
    name, description = "draws", "a random number, the held-out size and the classes, through ctx.progress"

    def run(self, ctx):
        images, labels = ctx.split(ctx.heldout_split)
        steps = sum(1 for _ in ctx.progress(range(3), desc="steps"))
        return ganlab.Result(metrics={"r": float(torch.rand(1)), "n": len(images), "classes": len(set(labels.tolist())),
                                      "steps": steps})


def test_run_component_gives_what_the_report_gives(tmp_path):
    """The checkpoint's recorded dataset (not digits), torch seeded as the report seeds it, a working progress."""
    folder = tmp_path / "pictures"
    for kind in ("a", "b"):
        (folder / kind).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((8, 8), 20 * i, np.uint8)).save(folder / kind / f"{i}.png")
    run = train_tiny_gan(tmp_path / "run", dataset="folder", data_root=str(folder), limit=None, epochs=1)
    module = types.ModuleType("draws")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(Draws()))
    with plugin(module, "draws") as loaded:
        assert "draws" in loaded.evaluators
        data, _ = make_report(run / "last.pt", only=["draws"], out=tmp_path / "r", device="cpu", progress=False)
    first, second = (run_component(Draws(), run / "last.pt").metrics for _ in range(2))
    assert first == second == data.components[0].result.metrics
    assert first["classes"] == 2 and first["n"] == 4 and first["steps"] == 3  # 20% of 20 pictures held out


def test_plugin_block_raises_when_the_module_fails_to_register():
    def broken(register):
        raise RuntimeError("a bug in my hook")

    module = types.ModuleType("broken")
    module.ganlab_register_evaluators = ganlab.hookimpl(broken)
    with pytest.raises(ganlab.GanlabError, match="plugin broken failed: RuntimeError: a bug in my hook"):
        with plugin(module, "broken"):
            pass


def test_pytest_plugin_fixtures_are_available(ganlab_tiny_run, ganlab_context):
    assert (ganlab_tiny_run / "last.pt").is_file() and (ganlab_tiny_run / "epoch_0002.pt").is_file()
    ctx = ganlab_context(Echo(), count=2)
    assert ctx.options["count"] == 2 and ctx.gan.config.nz == 8
