"""``ganlab new-plugin DIR --name NAME``: write an installable plugin package that passes its own test.

The package has one evaluator, one analysis, the entry point that registers them, and a test that uses the
fixtures ganlab's pytest plugin provides (``ganlab_tiny_run``, ``ganlab_context``).
"""
from __future__ import annotations

import re
from pathlib import Path

from ganlab.errors import GanlabError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "ganlab-{name}"
version = "0.1.0"
description = "A ganlab plugin: {name}"
requires-python = ">=3.10"
dependencies = ["ganlab"]

[project.optional-dependencies]
test = ["pytest>=7.4"]

[project.entry-points.ganlab]
{name} = "{package}"

[tool.setuptools]
packages = ["{package}"]
'''

MODULE = '''"""ganlab plugin {name}: an evaluator and an analysis, registered through the ``ganlab`` entry point.

Import only names of ``ganlab`` itself; import heavy packages (torch) inside ``run`` so ``ganlab --help``
stays fast. Reference: ganlab's docs/plugins.md.
"""
import ganlab


class Brightness(ganlab.Evaluator):
    name = "{name}-brightness"
    description = "Mean pixel brightness of generated images (0 = black, 1 = white)"
    options = {{"samples": ganlab.Option(256, "how many images to generate", min=1)}}
    cheap = True  # fast enough to rerun on every epoch checkpoint of a run
    directions = {{"brightness": None}}  # which way is better: "higher", "lower" or None (neither)

    def run(self, ctx):
        images = ctx.gan.sample(ctx.options["samples"], seed=ctx.seed)  # N x C x H x W in [-1, 1]
        return ganlab.Result(metrics={{"brightness": ((images + 1) / 2).mean().item()}})


class Gallery(ganlab.Analysis):
    name = "{name}-gallery"
    description = "A grid of generated images next to held-out real ones"
    needs = ("heldout",)
    options = {{"count": ganlab.Option(16, "images of each kind", min=1, max=256)}}

    def run(self, ctx):
        import torch
        from torchvision.utils import make_grid

        count = ctx.options["count"]
        fake = ctx.gan.sample(count, seed=ctx.seed)
        real, _ = ctx.split(ctx.heldout_split, limit=count)
        both = torch.cat([fake, ganlab.to_unit_range(real)])
        grid = make_grid(both, nrow=count, normalize=True, value_range=(-1, 1))
        return ganlab.Result(images=[ganlab.Image("top: generated; bottom: held-out real", grid)])


@ganlab.hookimpl
def ganlab_register_evaluators(register):
    register(Brightness())


@ganlab.hookimpl
def ganlab_register_analyses(register):
    register(Gallery())
'''

TEST = '''"""Runs out of the box: the fixtures come from ganlab's pytest plugin (installed with ganlab)."""
import ganlab
from ganlab.testing import run_component

from {package} import Brightness, Gallery


def test_brightness_is_the_mean_of_the_samples(ganlab_tiny_run):
    result = run_component(Brightness(), ganlab_tiny_run, options={{"samples": 32}})
    images = ganlab.load(ganlab_tiny_run).sample(32, seed=0)
    assert abs(result.metrics["brightness"] - ((images + 1) / 2).mean().item()) < 1e-6


def test_gallery_shows_both_rows(ganlab_context):
    ctx = ganlab_context(Gallery(), count=4)
    result = Gallery().run(ctx)
    grid = result.images[0].image
    assert grid.shape[0] == 3 and 0 <= grid.min() and grid.max() <= 1  # make_grid makes 3 channels


def test_the_plugin_is_registered():
    from ganlab.registry import get_registry

    registry = get_registry(reload=True)
    assert "{name}-brightness" in registry.evaluators and "{name}-gallery" in registry.analyses
'''

README = '''# ganlab-{name}

A ganlab plugin. Install it next to ganlab and it joins every report:

```bash
pip install -e .            # then: ganlab plugins  /  ganlab report RUN --only {name}-brightness
pip install -e '.[test]' && python -m pytest -q
```
'''


def new_plugin(folder: str | Path, name: str) -> list[Path]:
    """Write the plugin package into ``folder`` (which must not exist or be empty); returns the files written."""
    if not NAME.match(name):
        raise GanlabError(f"--name {name!r}: use lowercase letters, digits and dashes, starting with a letter")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise GanlabError(f"{folder} exists and is not an empty folder; choose a new one")
    package = "ganlab_" + name.replace("-", "_")
    files = {
        folder / "pyproject.toml": PYPROJECT.format(name=name, package=package),
        folder / package / "__init__.py": MODULE.format(name=name),
        folder / "tests" / f"test_{package}.py": TEST.format(name=name, package=package),
        folder / "README.md": README.format(name=name),
    }
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        raise GanlabError(f"cannot write the plugin into {folder}: {exc.strerror or exc}") from None
    return list(files)
