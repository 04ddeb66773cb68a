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
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from ganlab.errors import GanlabError
from ganlab.pixel_formats import BadImageError, array_to_8bit, to_8bit

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
    ``(image, label)``: image a PIL image or a uint8 numpy array (H x W or H x W x C, 0..255; other
    pixel modes and dtypes are converted by ``ganlab.pixel_formats``' rules or refused), label an int
    (-1 when the dataset has no labels). ``root`` is the ``--data-root`` folder (a ``Path``, or None
    when not given); ``variant`` is the part after ':' in ``lsun:church_outdoor``.
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
    """Items ``(uint8 tensor channels x image_size x image_size, int label or -1)``.

    Images in other pixel formats (16-bit, float, palette, alpha, ...) and non-uint8 arrays are brought to
    8 bits by ``ganlab.pixel_formats``' rules, or refused with a ``BadImageError``.
    """

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
            image = Image.fromarray(array_to_8bit(image, f"{self.name}/{self.split} item {index}"))
        elif image.mode not in ("L", "RGB"):
            image = to_8bit(image, getattr(image, "filename", "") or f"{self.name}/{self.split} item {index}")
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


class _Guarded(Dataset):
    """Items ``(image, label, kind, text)``: a ``GanlabError`` comes back as data instead of being raised.

    kind 0: fine; 1: a bad image (text = its reason), which may be skipped; 2: any other GanlabError
    (text = its message). A DataLoader worker re-raises an item's exception with the worker's traceback
    inside the message; carried as data, the error reaches the caller as the one line it was.
    """

    def __init__(self, dataset: Dataset, shape: tuple[int, int, int]):
        self.dataset, self.shape = dataset, shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        try:
            image, label = self.dataset[index]
            return image, label, 0, ""
        except BadImageError as exc:
            return torch.zeros(self.shape, dtype=torch.uint8), -1, 1, exc.reason
        except GanlabError as exc:
            return torch.zeros(self.shape, dtype=torch.uint8), -1, 2, str(exc)


def load_split(source: DatasetSource, split: str = "train", *, variant: str | None = None,
               root: str | Path | None = None, image_size: int = 32, channels: int = 3, download: bool = False,
               limit: int | None = None, progress: bool = True, skip_bad: bool = False,
               exclude: "Collection[int] | None" = None,
               report: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split into memory: (uint8 N x C x H x W in 0..255, int64 N labels, -1 = unlabelled).

    ``limit`` keeps the first ``limit`` indices of a fixed permutation (numpy ``default_rng(0)``),
    a random and so roughly class-balanced subset that is the same on every call; the kept items
    are returned in dataset order, so a smaller limit gives a subset of a larger one.

    ``exclude`` holds positions in the whole split (0-based, in the order ``open_split`` gives; e.g. the
    duplicates ``ganlab dedup`` found) that are left out, after ``limit`` chose its subset.

    An image that cannot be used (unreadable, corrupt, empty, not an image, too large, pixel values
    out of range; see ``ganlab.image_files``) raises a one-line ``BadImageError`` (a ``GanlabError``)
    naming the file, also when decoded in DataLoader worker processes. With ``skip_bad=True`` such
    images are dropped instead (not replaced: N shrinks, labels stay with their images, and ``limit``
    counts before dropping), and one line goes to stderr: ``skipped 3 unreadable images of 120 in
    folder/train (first: PATH: reason)``; when every image is unreadable it is an error all the same.
    ``report``, when given, is filled with ``{"skipped": int, "total": int, "first": str | None}``
    (``total`` = images tried, ``first`` = ``"PATH: reason"`` of the first one skipped), whether or not
    any were skipped.
    """
    dataset = open_split(source, split, variant=variant, root=root, image_size=image_size, channels=channels,
                         download=download)
    keep = _positions(len(dataset), limit, exclude, f"{source.name}/{split}")
    if len(keep) < len(dataset):
        dataset = Subset(dataset, keep.tolist())
    images, labels, good, first = _decode(dataset, (channels, image_size, image_size), f"{source.name}/{split}",
                                          progress, skip_bad)
    skipped = len(good) - int(good.sum())
    if report is not None:
        report.update(skipped=skipped, total=len(good), first=first)
    if skipped:
        where = f"{source.name}/{split}"
        if skipped == len(good):
            raise GanlabError(f"all {skipped} images in {where} are unreadable (first: {first})")
        print(f"skipped {skipped} unreadable image{'s' if skipped > 1 else ''} of {len(good)} in {where} "
              f"(first: {first})", file=sys.stderr)
        images, labels = images[good], labels[good]
    return images, labels


def _positions(n: int, limit: int | None, exclude: "Collection[int] | None", where: str) -> np.ndarray:
    """The positions ``load_split`` keeps: a seeded subset of ``limit``, then the excluded ones left out."""
    keep = np.arange(n)
    if limit is not None:
        if limit < 1:
            raise GanlabError(f"limit must be a positive number of images, not {limit}")
        if limit < n:
            keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:limit])
    if exclude:
        outside = sorted(i for i in exclude if not 0 <= i < n)
        if outside:
            raise GanlabError(f"the exclusion list names image {outside[0]}, but {where} has {n} images "
                              f"(0..{n - 1}); was it made for another dataset?")
        keep = keep[~np.isin(keep, np.fromiter(exclude, dtype=np.int64))]
        if not len(keep):
            raise GanlabError(f"the exclusion list removes every image of {where}")
    return keep


def _decode(dataset: Dataset, shape: tuple[int, int, int], where: str, progress: bool, skip_bad: bool):
    """(images, labels, which decoded, the first unreadable one's "PATH: reason") of every item, in order."""
    from tqdm import tqdm

    n = len(dataset)
    images = torch.empty((n, *shape), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    good = torch.ones(n, dtype=torch.bool)
    first: str | None = None
    # Worker processes pay off only once decoding outweighs their start-up (about a second).
    workers = min(2, os.cpu_count() or 1) if n > 2000 else 0
    loader = DataLoader(_Guarded(dataset, shape), batch_size=256, shuffle=False, num_workers=workers)
    done = 0
    with tqdm(total=n, desc=f"loading {where}", unit="img", disable=not progress) as bar:
        for batch_images, batch_labels, kinds, texts in loader:
            for kind, text in zip(kinds.tolist(), texts):
                if kind == 2:
                    raise GanlabError(text)
                if kind == 1 and not skip_bad:
                    raise BadImageError(text)
                first = first or (text if kind == 1 else None)
            size = len(batch_labels)
            images[done:done + size], labels[done:done + size] = batch_images, batch_labels
            good[done:done + size] = kinds == 0
            done += size
            bar.update(size)
    return images, labels, good, first


def read_exclusion_list(path: str | Path) -> set[int]:
    """Image positions from an exclusion list: one whole number per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GanlabError(f"cannot read the exclusion list {path}: {getattr(exc, 'strerror', None) or exc}") from None
    indices = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit():
            raise GanlabError(f"{path}, line {number}: {text[:40]!r} is not an image position (a whole number >= 0)")
        indices.add(int(text))
    return indices
