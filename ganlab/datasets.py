"""Datasets: where images come from, as uint8 tensors of one size and channel count.

Each dataset is a :class:`DatasetSource` registered through ``ganlab_register_datasets``
(``ganlab.core_plugin`` registers the built-ins as any plugin would). The functions here take the
source itself, never a name: looking names up in the registry is the job of the top-level entry
points (``ganlab.open_split``/``ganlab.load_split`` in ``ganlab.api``, the CLI, the report).
``open_split`` gives a ``Dataset`` of ``(uint8 C x H x W, int label)``; ``load_split`` decodes a
split into memory. Nothing is downloaded unless ``download=True``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from ganlab.errors import GanlabError

SUBSET_SEED = 0  # seed of the fixed permutation that ``load_split(limit=...)`` draws from


@dataclass(frozen=True)
class Layout:
    """What one copy of a dataset on disk offers: its splits, its classes and its held-out split.

    ``classes`` is None for an unlabelled dataset. ``heldout`` names the split used as held-out real
    data (never trained on), or None when there is none.
    """

    splits: tuple[str, ...]
    classes: tuple[str, ...] | None
    heldout: str | None


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset and how to open one of its splits.

    ``open(split, root, download, variant)`` returns a ``torch.utils.data.Dataset`` whose items are
    ``(image, label)``: image a PIL image or a uint8 numpy array (H x W or H x W x C, 0..255),
    label an int (-1 when the dataset has no labels). ``root`` is the ``--data-root`` folder (a
    ``Path``, or None when not given); ``variant`` is the part after ':' in ``lsun:church_outdoor``.
    ``"*"`` in ``splits`` means the opener also accepts other split names and checks them itself.

    ``num_classes`` (None: unlabelled), ``splits`` and ``heldout`` describe every copy of the
    dataset. When they depend on the files (a user's folder), ``inspect(root, variant)`` returns
    the ``Layout`` of one copy instead. ``channels`` (1 grey or 3 RGB) is what a model trained on
    it uses unless ``--channels`` says otherwise.
    """

    name: str  # lowercase letters, digits, dashes
    description: str  # one line
    splits: tuple[str, ...]
    num_classes: int | None  # None when the dataset has no labels
    expected_files: str  # human text for error messages
    open: Callable[[str, "Path | None", bool, "str | None"], Dataset]
    channels: int = 3
    heldout: str | None = "test"  # the held-out split, when it is one of ``splits``
    inspect: "Callable[[Path | None, str | None], Layout] | None" = None

    def layout(self, root: str | Path | None = None, variant: str | None = None) -> Layout:
        """The splits, classes and held-out split of the copy at ``root``."""
        if self.inspect is not None:
            return self.inspect(Path(root).expanduser() if root is not None else None, variant)
        classes = tuple(str(i) for i in range(self.num_classes)) if self.num_classes else None
        return Layout(tuple(s for s in self.splits if s != "*"), classes,
                      self.heldout if self.heldout in self.splits else None)


class PreparedSplit(Dataset):
    """Items ``(uint8 tensor channels x image_size x image_size, int label or -1)``."""

    def __init__(self, base: Dataset, name: str, split: str, image_size: int, channels: int):
        from torchvision import transforms as T

        self.base, self.name, self.split = base, name, split
        self.image_size, self.channels = image_size, channels
        self.classes = getattr(base, "classes", None)
        self._mode = "L" if channels == 1 else "RGB"
        # Resize(int) scales the shorter side (bilinear, antialiased); the crop then squares it.
        self._transform = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if image.mode != self._mode:
            image = image.convert(self._mode)
        return self._transform(image), int(label)


def open_split(source: DatasetSource, split: str = "train", *, variant: str | None = None,
               root: str | Path | None = None, image_size: int = 32, channels: int = 3,
               download: bool = False) -> PreparedSplit:
    """Open one split of a dataset, lazily: each item is decoded when indexed.

    Images are converted to 1 ('L') or 3 ('RGB') channels, the shorter side resized to
    ``image_size``, then centre-cropped to ``image_size x image_size``. ``split`` may join
    splits with '+' (SVHN's ``train+extra``, as the paper trained on).
    """
    if "+" in split:
        parts = [open_split(source, part, variant=variant, root=root, image_size=image_size, channels=channels,
                            download=download) for part in split.split("+")]
        return PreparedSplit(ConcatDataset([part.base for part in parts]), source.name, split, image_size, channels)
    if split not in source.splits and "*" not in source.splits:
        raise GanlabError(f"{source.name}: unknown split '{split}'; choose from {', '.join(source.splits)}")
    if channels not in (1, 3):
        raise GanlabError(f"channels must be 1 or 3, not {channels}")
    if not isinstance(image_size, int) or image_size < 1:
        raise GanlabError(f"image size must be a positive integer, not {image_size!r}")
    base = source.open(split, Path(root).expanduser() if root is not None else None, download, variant)
    return PreparedSplit(base, source.name, split, image_size, channels)


def load_split(source: DatasetSource, split: str = "train", *, variant: str | None = None,
               root: str | Path | None = None, image_size: int = 32, channels: int = 3, download: bool = False,
               limit: int | None = None, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split into memory: (uint8 N x C x H x W in 0..255, int64 N labels, -1 = unlabelled).

    ``limit`` keeps the first ``limit`` indices of a fixed permutation (numpy ``default_rng(0)``),
    a random and so roughly class-balanced subset that is the same on every call; the kept items
    are returned in dataset order, so a smaller limit gives a subset of a larger one.
    """
    from tqdm import tqdm

    dataset = open_split(source, split, variant=variant, root=root, image_size=image_size, channels=channels,
                         download=download)
    if limit is not None:
        if limit < 1:
            raise GanlabError(f"limit must be a positive number of images, not {limit}")
        if limit < len(dataset):
            keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(dataset))[:limit])
            dataset = Subset(dataset, keep.tolist())
    n = len(dataset)
    images = torch.empty((n, channels, image_size, image_size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    # Worker processes pay off only once decoding outweighs their start-up (about a second).
    workers = min(2, os.cpu_count() or 1) if n > 2000 else 0
    loader = DataLoader(dataset, batch_size=256, shuffle=False, num_workers=workers)
    done = 0
    with tqdm(total=n, desc=f"loading {source.name}/{split}", unit="img", disable=not progress) as bar:
        for batch_images, batch_labels in loader:
            images[done:done + len(batch_labels)] = batch_images
            labels[done:done + len(batch_labels)] = batch_labels
            done += len(batch_labels)
            bar.update(len(batch_labels))
    return images, labels

