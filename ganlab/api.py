"""The Python API's entry points (``ganlab.load``, ``train``, ``open_split``, ``load_split``, ``dataset_source``,
``detector``): they look names up in the plugin registry and hand the results down, so that the modules below
(checkpoint, datasets, training) never ask the registry themselves."""
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganlab.errors import GanlabError, a
from ganlab.plugin.registry import get_registry, plugin_manager

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Collection

    import torch

    from ganlab.data.datasets import DatasetSource, PreparedSplit
    from ganlab.defaults import TrainOptions
    from ganlab.model.loaded_gan import LoadedGAN
    from ganlab.plugin.detectors import Detector


def dataset_source(name: str) -> "DatasetSource":
    """The registered source for ``name`` (``"lsun:church_outdoor"`` -> the ``lsun`` source)."""
    return get_registry().get("datasets", name.partition(":")[0])


def detector(name: str) -> "Detector":
    """The registered ``ganlab.Detector`` called ``name`` (e.g. ``haar-face``)."""
    return get_registry().get("detectors", name)


def open_split(name: str, split: str = "train", *, data_root: str | Path | None = None, image_size: int = 32,
               channels: int = 3, download: bool = False) -> "PreparedSplit":
    """One split of the dataset called ``name`` (``"lsun:church_outdoor"``: a variant after ':'), each item
    (uint8 C x H x W tensor, int label or -1) decoded when indexed, as 1 or 3 channels, the shorter side resized
    to ``image_size`` and centre-cropped. ``data_root``: the folder holding the dataset's files, as
    ``--data-root`` (None: the dataset's default place); ``download`` fetches a dataset that can be fetched."""
    from ganlab.data import datasets

    return datasets.open_split(dataset_source(name), split, variant=name.partition(":")[2] or None, root=data_root,
                               image_size=image_size, channels=channels, download=download)


def load_split(name: str, split: str = "train", *, data_root: str | Path | None = None, image_size: int = 32,
               channels: int = 3, download: bool = False, limit: int | None = None, progress: bool = True,
               skip_bad: bool = False, exclude: "Collection[int] | None" = None, report: dict | None = None,
               ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``open_split`` decoded into memory: (uint8 N x C x H x W in 0..255, int64 N labels, -1 = unlabelled).

    ``limit`` keeps the first N of a fixed permutation, the same on every call; ``exclude`` leaves out positions
    (e.g. the duplicates ``ganlab dedup`` found); ``skip_bad`` drops unreadable images with one line on stderr
    instead of stopping with a one-line error; ``report``, a dict, gets the positions kept and dropped."""
    from ganlab.data import datasets

    return datasets.load_split(dataset_source(name), split, variant=name.partition(":")[2] or None, root=data_root,
                               image_size=image_size, channels=channels, download=download, limit=limit,
                               progress=progress, skip_bad=skip_bad, exclude=exclude, report=report)


def _read_foreign(path: Path, state: Any) -> "LoadedGAN | None":
    """The first plugin's answer to ``ganlab_load_checkpoint``, in pluggy's order; an answer that is not a
    ``LoadedGAN`` is an error naming the plugin that gave it."""
    from ganlab.model.loaded_gan import LoadedGAN
    from ganlab.plugin.registry import call_one, call_order

    pm = plugin_manager()[0]
    for plugin in call_order(pm, ["ganlab_load_checkpoint"]):
        try:
            loaded = call_one(pm, plugin, "ganlab_load_checkpoint", path=str(path), state=state)
        except GanlabError:
            raise
        except Exception as exc:
            raise GanlabError(f"plugin {plugin} failed to read {path} ({type(exc).__name__}: {exc}); its "
                              "ganlab_load_checkpoint should return None for a file it does not know") from None
        if loaded is not None and not isinstance(loaded, LoadedGAN):
            raise GanlabError(f"plugin {plugin} read {path} as {a(type(loaded).__name__)}, not a ganlab.LoadedGAN; "
                              f"its ganlab_load_checkpoint must return a LoadedGAN or None (see `ganlab plugins`)")
        if loaded is not None:
            return loaded
    return None


def load(path: str | Path, device: "torch.device | str" = "cpu") -> "LoadedGAN":
    """Load a ganlab checkpoint, a run folder (its last.pt), or any format a plugin can read: a ``LoadedGAN``
    with ``.generator``, ``.discriminator``, ``.config`` and ``.sample(n, seed)``."""
    from ganlab.model.checkpoint import load_checkpoint

    return load_checkpoint(path, device, foreign=_read_foreign)


def train(options: "TrainOptions", progress: bool = True) -> Path:
    """Train a GAN as ``options`` (a ``ganlab.TrainOptions``) say; returns the path of ``OUT/last.pt``."""
    from ganlab.model import training

    options, payload, changed = training.resume_state(options)
    return training.train(options, dataset_source(options.dataset), progress=progress, resume_payload=payload,
                          changed=changed)


def seed_tables(summary: dict[str, Any]) -> list[Any]:
    """The tables plugins add to a summary over GAN seeds (``ganlab_summarise_seeds``), in call order."""
    return [table for found in plugin_manager()[0].hook.ganlab_summarise_seeds(summary=summary) if found
            for table in found]
