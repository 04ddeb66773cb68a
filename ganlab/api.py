"""The Python API's entry points: they look names up in the plugin registry and hand the results down.

``ganlab.load``, ``ganlab.train``, ``ganlab.open_split``, ``ganlab.load_split``,
``ganlab.dataset_source`` and ``ganlab.detector`` live here, so that the modules below (checkpoint, datasets, training)
never ask the registry themselves.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganlab.errors import GanlabError, a
from ganlab.registry import get_registry, plugin_manager

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ganlab.datasets import DatasetSource, PreparedSplit
    from ganlab.defaults import TrainOptions
    from ganlab.detectors import Detector
    from ganlab.loaded_gan import LoadedGAN


def dataset_source(name: str) -> "DatasetSource":
    """The registered source for ``name`` (``"lsun:church_outdoor"`` -> the ``lsun`` source)."""
    return get_registry().get("datasets", name.partition(":")[0])


def detector(name: str) -> "Detector":
    """The registered ``ganlab.Detector`` called ``name`` (e.g. ``haar-face``)."""
    return get_registry().get("detectors", name)


def _variant(name: str) -> str | None:
    return name.partition(":")[2] or None


def open_split(name: str, split: str = "train", **kwargs: Any) -> "PreparedSplit":
    """``ganlab.datasets.open_split`` by dataset name: items (uint8 C x H x W tensor, int label or -1)."""
    from ganlab import datasets

    return datasets.open_split(dataset_source(name), split, variant=_variant(name), **kwargs)


def load_split(name: str, split: str = "train", **kwargs: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``ganlab.datasets.load_split`` by dataset name: (uint8 N x C x H x W, int64 N labels, -1 = unlabelled)."""
    from ganlab import datasets

    return datasets.load_split(dataset_source(name), split, variant=_variant(name), **kwargs)


def _read_foreign(path: Path, state: Any) -> "LoadedGAN | None":
    """The first plugin's answer to ``ganlab_load_checkpoint``, in pluggy's order; an answer that is not a
    ``LoadedGAN`` is an error naming the plugin that gave it."""
    from ganlab.loaded_gan import LoadedGAN
    from ganlab.registry import call_one, call_order

    pm = plugin_manager()[0]
    for plugin in call_order(pm, ["ganlab_load_checkpoint"]):
        loaded = call_one(pm, plugin, "ganlab_load_checkpoint", path=str(path), state=state)
        if loaded is not None and not isinstance(loaded, LoadedGAN):
            raise GanlabError(f"plugin {plugin} read {path} as {a(type(loaded).__name__)}, not a ganlab.LoadedGAN; "
                              f"its ganlab_load_checkpoint must return a LoadedGAN or None (see `ganlab plugins`)")
        if loaded is not None:
            return loaded
    return None


def load(path: str | Path, device: "torch.device | str" = "cpu") -> "LoadedGAN":
    """Load a ganlab checkpoint, a run folder (its last.pt), or any format a plugin can read.

    Returns a ``LoadedGAN`` with ``.generator``, ``.discriminator``, ``.config`` and ``.sample(n, seed)``.
    """
    from ganlab.checkpoint import load_checkpoint

    return load_checkpoint(path, device, foreign=_read_foreign)


def train(options: "TrainOptions", progress: bool = True) -> Path:
    """Train a GAN as ``options`` (a ``ganlab.TrainOptions``) say; returns the path of ``OUT/last.pt``."""
    from ganlab.training import resume_state
    from ganlab.training import train as run_training

    options, payload, changed = resume_state(options)
    return run_training(options, dataset_source(options.dataset), progress=progress, resume_payload=payload,
                        changed=changed)


def seed_tables(summary: dict[str, Any]) -> list[Any]:
    """The tables plugins add to a summary over GAN seeds (``ganlab_summarise_seeds``), in call order."""
    return [table for found in plugin_manager()[0].hook.ganlab_summarise_seeds(summary=summary) if found
            for table in found]
