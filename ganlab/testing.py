"""Helpers for testing ganlab plugins, and a pytest plugin (entry point ``pytest11``, loaded wherever ganlab is
installed) whose fixtures need no conftest:

- ``ganlab_tiny_run``: a finished 2-epoch run folder of a 16x16 grey DCGAN on the embedded digits, trained once
  per session in about a second.
- ``ganlab_context``: ``ganlab_context(component, **options)`` -> a ``RunContext`` for that run, as ``ganlab
  report`` would build it.

The plain functions (``train_tiny_gan``, ``make_context``, ``run_component``, ``registered``, ``plugin``) work
with any test runner.
"""
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

RECORDED = "<recorded>"  # make_context's default dataset: the checkpoint's, as the report takes it
TINY = {"dataset": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "nz": 8, "epochs": 2, "batch_size": 32,
        "limit": 96, "device": "cpu", "seed": 0}


def train_tiny_gan(out: str | Path, **changes: Any) -> Path:
    """Train a tiny DCGAN (16x16 grey digits, 2 epochs, ~1 s on a CPU) into ``out``; returns the run folder."""
    import ganlab

    options = ganlab.TrainOptions(**{**TINY, "out": str(out), **changes})
    return Path(ganlab.train(options, progress=False)).parent


def make_context(gan: Any, component: Any = None, *, options: dict[str, Any] | None = None,
                 dataset: str | None = RECORDED, data_root: str | Path | None = None, seed: int = 0,
                 device: str = "cpu", cache_dir: str | Path | None = None) -> Any:
    """A ``ganlab.RunContext`` as the report builds it. ``gan``: a ``LoadedGAN``, checkpoint or run folder; the
    component's option defaults are merged with ``options`` (checked like ``--set`` values); ``dataset`` is looked
    up in the registry (by default the dataset and data root the checkpoint recorded, as ``ganlab report`` takes
    them, else digits; None: no dataset); ``cache_dir`` defaults to a fresh temporary folder that is removed with
    the context's cache."""
    from tqdm.auto import tqdm

    import ganlab
    from ganlab.plugin.options import resolve_options
    from ganlab.plugin.registry import get_registry

    device_ = ganlab.select_device(device)
    if not isinstance(gan, ganlab.LoadedGAN):
        gan = ganlab.load(gan, device_)
    if dataset == RECORDED:
        dataset, data_root = gan.dataset or "digits", data_root or (gan.data_root if gan.dataset else None)
    merged = dict(options or {})
    if component is not None:
        merged = resolve_options(component, {f"{component.name}.{k}": v for k, v in merged.items()})
    source = ganlab.dataset_source(dataset) if dataset else None
    return ganlab.RunContext(
        gan=gan, device=device_, seed=seed, cache=ganlab.Cache(cache_dir) if cache_dir else _temporary_cache(),
        options=merged, dataset=dataset, data_root=Path(data_root) if data_root else None, quiet=True,
        progress=lambda it=None, **kw: tqdm(it, disable=True, **kw),
        detectors=dict(get_registry().detectors), feature_spaces=dict(get_registry().feature_spaces),
        source=source, layout=source.layout(data_root, (dataset or "").partition(":")[2] or None) if source else None)


def _temporary_cache() -> Any:
    """A cache in a fresh temporary folder that goes with the object: a plugin's test suite that makes a context
    per test would otherwise leave a folder in the temporary directory for each."""
    import shutil
    import tempfile
    import weakref

    import ganlab

    cache = ganlab.Cache(tempfile.mkdtemp(prefix="ganlab-cache-"))
    weakref.finalize(cache, shutil.rmtree, cache.root, True)
    return cache


def registered(kind: str) -> dict[str, Any]:
    """name -> object of one ``kind`` ("evaluators", "analyses", "datasets", "experiments", "detectors",
    "feature_spaces") as the installed plugins register them, the plugins loaded afresh."""
    from ganlab.plugin.registry import KINDS, get_registry

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return dict(get_registry(reload=True).items[kind])


@contextlib.contextmanager
def plugin(module: Any, name: str) -> Iterator[Any]:
    """Register ``module`` (with ``@ganlab.hookimpl`` functions) as plugin ``name`` for the block, as if it were
    installed; yields the registry (a plugin that fails to register raises, with why); the plugins are loaded
    afresh afterwards, and ``registered`` inside the block loads them afresh too."""
    import ganlab
    from ganlab.plugin import registry

    try:
        loaded = registry.register_plugin(module, name)
        if loaded.plugins[name].error:
            raise ganlab.GanlabError(f"plugin {name} failed: {loaded.plugins[name].error}")
        yield loaded
    finally:
        registry.reset()


def run_component(component: Any, gan: Any, **kwargs: Any) -> Any:
    """Run ``component`` on ``gan`` (see ``make_context`` for ``kwargs``); returns its checked ``Result``."""
    import torch

    from ganlab.plugin.components import check_result

    ctx = make_context(gan, component, **kwargs)
    torch.manual_seed(ctx.seed)  # as the report seeds each component
    return check_result(component.run(ctx), component.name)


@pytest.fixture(scope="session")
def ganlab_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch tiny digits run folder (see ``train_tiny_gan``)."""
    return train_tiny_gan(tmp_path_factory.mktemp("ganlab-tiny") / "run")


@pytest.fixture
def ganlab_context(ganlab_tiny_run: Path, tmp_path: Path):
    """``ganlab_context(component, **options)`` -> a RunContext on ``ganlab_tiny_run`` with digits."""

    def make(component: Any = None, **options: Any) -> Any:
        return make_context(ganlab_tiny_run, component, options=options, cache_dir=tmp_path / "cache")

    return make
