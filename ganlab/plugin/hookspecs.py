"""Every hook ganlab calls (docs/reference.md documents each). Plugins implement them with ``@ganlab.hookimpl``;
``register`` adds one object to the registry, which checks its base class, its name and that it is not taken."""
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
    """Register datasets: call ``register(ganlab.DatasetSource(...))`` once per dataset."""


@hookspec
def ganlab_register_evaluators(register: Callable[[Any], None]) -> None:
    """Register evaluators: call ``register(MyEvaluator())`` with a ``ganlab.Evaluator`` (a report section each)."""


@hookspec
def ganlab_register_analyses(register: Callable[[Any], None]) -> None:
    """Register analyses: call ``register(MyAnalysis())`` with a ``ganlab.Analysis`` (a report section each)."""


@hookspec
def ganlab_register_detectors(register: Callable[[Any], None]) -> None:
    """Register detectors: call ``register(MyDetector())`` with a ``ganlab.Detector``; analyses and commands get
    them by name from ``ctx.detectors`` or ``ganlab.detector(name)``."""


@hookspec
def ganlab_register_feature_spaces(register: Callable[[Any], None]) -> None:
    """Register feature spaces: call ``register(MySpace())`` with a ``ganlab.FeatureSpace``; components get them
    by name from ``ctx.feature_spaces``."""


@hookspec
def ganlab_register_experiments(register: Callable[[Any], None]) -> None:
    """Register experiments: call ``register(ganlab.Experiment(...))``, a recipe for ``ganlab run NAME``."""


@hookspec
def ganlab_summarise_seeds(summary: dict[str, Any]) -> "list[Any] | None":
    """A list of ``ganlab.Table`` (or None) for the summary of ``ganlab run EXPERIMENT --seeds K``; ``summary``
    holds the ``"seeds"`` and, under ``"components"``, each metric's statistics over them (docs/reference.md)."""


@hookspec
def ganlab_register_commands(cli: "click.Group") -> None:
    """Add click commands to the ``ganlab`` command group: ``cli.add_command(my_command)``."""


@hookspec(firstresult=True)
def ganlab_load_checkpoint(path: str, state: Any) -> "LoadedGAN | None":
    """Read a file that is not a ganlab checkpoint: a ``ganlab.LoadedGAN`` when it is in your format, else None
    (the first non-None answer wins). ``state`` is what ``torch.load(path, weights_only=True)`` read from a
    ``torch.save`` file, else None: ganlab never unpickles, so read ``path`` yourself (an implementation may take
    ``path`` only) and never unpickle untrusted data. Raise ``ganlab.GanlabError`` for a broken file in your
    format (docs/reference.md)."""
