"""Every hook ganlab calls. Plugins implement them with ``@ganlab.hookimpl``.

The ``register_*`` hooks hand the plugin a callback; calling it adds one object to the registry, which checks
its base class, its name (lowercase letters, digits and dashes) and that no other plugin registered that name.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import click

    from ganlab.model.checkpoint import LoadedGAN

hookspec = pluggy.HookspecMarker("ganlab")
hookimpl = pluggy.HookimplMarker("ganlab")


@hookspec
def ganlab_register_datasets(register: Callable[[Any], None]) -> None:
    """Register datasets: call ``register(DatasetSource(...))`` once per dataset; a ``ganlab.DatasetSource``
    names the dataset, its splits, whether it has labels and how to open one split from a root folder."""


@hookspec
def ganlab_register_evaluators(register: Callable[[Any], None]) -> None:
    """Register evaluators: call ``register(MyEvaluator())`` with a ``ganlab.Evaluator``. Evaluators measure a
    model (metrics such as probe accuracy) and get a report section each."""


@hookspec
def ganlab_register_analyses(register: Callable[[Any], None]) -> None:
    """Register analyses: call ``register(MyAnalysis())`` with a ``ganlab.Analysis``. Analyses look into a model
    (latent walks, arithmetic, feature plots) and get a report section each."""


@hookspec
def ganlab_register_detectors(register: Callable[[Any], None]) -> None:
    """Register detectors: call ``register(MyDetector())`` with a ``ganlab.Detector``, which finds objects in
    an image (``detect(uint8 H x W x C) -> [(x, y, w, h), ...]``); analyses such as ``forget-concept`` and
    commands such as ``ganlab faces`` get them by name from ``ctx.detectors`` or ``ganlab.detector(name)``."""


@hookspec
def ganlab_register_feature_spaces(register: Callable[[Any], None]) -> None:
    """Register feature spaces: call ``register(MySpace())`` with a ``ganlab.FeatureSpace``, which embeds uint8
    images as vectors (``embed(ctx, images) -> N x D``) for the sample-quality and memorisation metrics;
    components get them by name from ``ctx.feature_spaces``."""


@hookspec
def ganlab_register_experiments(register: Callable[[Any], None]) -> None:
    """Register experiments: call ``register(ganlab.Experiment(...))``. An experiment is a named recipe for
    ``ganlab run NAME``: what to train, with which options, then which components to run for the report."""


@hookspec
def ganlab_summarise_seeds(summary: dict[str, Any]) -> "list[Any] | None":
    """Tables for the summary of ``ganlab run EXPERIMENT --seeds K`` (seeds.md, and printed by the command).

    ``summary["seeds"]`` lists the GAN seeds; ``summary["components"]`` maps each component name to its
    metrics, each ``{"mean", "std", "min", "max", "n", "values"}`` over the seeds' reports (``std`` with ddof 1;
    ``values`` one per seed in ``seeds`` order, None where that seed's report lacks the metric). Return a list
    of ``ganlab.Table`` for your component's headline numbers over seeds (or None).
    """


@hookspec
def ganlab_register_commands(cli: "click.Group") -> None:
    """Add click commands to the ``ganlab`` command group: ``cli.add_command(my_command)``."""


@hookspec(firstresult=True)
def ganlab_load_checkpoint(path: str, state: Any) -> "LoadedGAN | None":
    """Read a checkpoint in a format ganlab does not know natively.

    Called for every file that is not a ganlab checkpoint. ``state`` is the file's content as
    ``torch.load(path, weights_only=True)`` read it when the file was written by ``torch.save`` (a state dict,
    say), and None for any other file (``.npz``, safetensors, a TorchScript or ``torch.export`` archive, a torch
    file that ``weights_only`` refuses), which ganlab never unpickles: read it yourself from ``path``. Your
    implementation may take ``path`` only.

    Return a ``ganlab.LoadedGAN`` (``LoadedGAN.from_state_dicts(config, g_state, d_state)``) when the file is in
    your format, else ``None`` so the next implementation is tried. The first non-None answer wins. Never
    unpickle untrusted data. Raise ``ganlab.GanlabError`` for a file that is in your format but broken.
    """
