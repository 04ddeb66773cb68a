"""Datasets: where images come from, as uint8 tensors of one size and channel count. Functions here take a
:class:`DatasetSource`, never a name (the entry points look names up); nothing is downloaded unless asked."""
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm import tqdm

from ganlab.data.pixel_formats import BadImageError, array_to_8bit, one_line, to_8bit
from ganlab.errors import GanlabError, a, count

SUBSET_SEED = 0  # seed of the fixed permutation that ``load_split(limit=...)`` draws from


@dataclass(frozen=True)
class Layout:
    """One copy of a dataset on disk: its splits, classes (None: unlabelled) and held-out split (None: none)."""

    splits: tuple[str, ...]
    classes: tuple[str, ...] | None
    heldout: str | None

    @property
    def labelled(self) -> bool:
        """Labels a classifier can learn from: two classes or more (one class folder is an unlabelled set)."""
        return len(self.classes or ()) >= 2


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset and how to open one of its splits.

    ``open(split, root, download, variant)`` returns a ``Dataset`` of ``(image, label)``: a PIL image or a uint8
    array (H x W or H x W x C, 0..255; others follow ``pixel_formats``) and an int (-1: unlabelled). ``root``
    is ``--data-root`` (a ``Path`` or None), ``variant`` the part after ':' in ``lsun:church_outdoor``; ``"*"`` in
    ``splits``: the opener checks other split names itself. When splits or classes depend on the files (a user's
    folder), ``inspect(root, variant)`` returns the ``Layout`` of one copy.
    """

    name: str  # lowercase letters, digits, dashes
    description: str  # one line
    splits: tuple[str, ...]
    num_classes: int | None  # None when the dataset has no labels
    expected_files: str  # human text for error messages
    open: Callable[[str, "Path | None", bool, "str | None"], Dataset]
    channels: int = 3  # 1 (grey) or 3 (RGB): what a model trained on it uses unless told otherwise
    heldout: str | None = "test"  # the held-out split, when it is one of ``splits``
    inspect: "Callable[[Path | None, str | None], Layout] | None" = None
    # when the files decide (a user's folder of grey or colour images): ``detect_channels(root, split)``
    detect_channels: "Callable[[Path | None, str], int] | None" = None

    def channels_at(self, root: str | Path | None = None, split: str = "train") -> int:
        """1 or 3: what a model trained on ``split`` of the copy at ``root`` uses unless told otherwise."""
        if self.detect_channels is None:
            return self.channels
        return self.detect_channels(Path(root).expanduser() if root is not None else None, split)

    def layout(self, root: str | Path | None = None, variant: str | None = None) -> Layout:
        """The splits, classes and held-out split of the copy at ``root``."""
        if self.inspect is not None:
            return self.inspect(Path(root).expanduser() if root is not None else None, variant)
        classes = tuple(str(i) for i in range(self.num_classes)) if self.num_classes else None
        return Layout(tuple(s for s in self.splits if s != "*"), classes,
                      self.heldout if self.heldout in self.splits else None)


def missing(name: str, files: str, folder: Path | str, downloadable: bool = True) -> GanlabError:
    hint = "give --data-root DIR, or --download to fetch it" if downloadable else "give --data-root DIR"
    return GanlabError(f"{name}: expected {files} in {folder} ({hint})")


def need_root(source: str, root: Path | None, files: str) -> Path:
    if root is None:
        raise GanlabError(f"--data-root is required for {source} (the folder with {files})")
    return root


def no_variant(source: str, variant: str | None) -> None:
    if variant:
        raise GanlabError(f"{source} has no variants (got '{source}:{variant}'); use '{source}'")


class PreparedSplit(Dataset):
    """Items ``(uint8 tensor channels x image_size x image_size, int label or -1)``, by ``pixel_formats``."""

    def __init__(self, base: Dataset, name: str, split: str, image_size: int, channels: int):
        from torchvision import transforms as T

        self.base, self.name, self.split, self.image_size, self.channels = base, name, split, image_size, channels
        self.classes = getattr(base, "classes", None)
        self._mode = "L" if channels == 1 else "RGB"
        # Resize(int) scales the shorter side (bilinear, antialiased); the crop then squares it.
        self._transform = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.PILToTensor()])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        where = f"{self.name}/{self.split} item {index}"
        if isinstance(image, np.ndarray):
            image = Image.fromarray(array_to_8bit(image, where))
        elif not isinstance(image, Image.Image):  # a dataset's bug, not a bad file: no skipping hint
            raise GanlabError(f"{where} is {a(type(image).__name__)}, not an image: a dataset gives a PIL image or a "
                              "numpy array H x W (x C), e.g. without torchvision's ToTensor")
        image = to_8bit(image, getattr(image, "filename", "") or where)
        return self._transform(image if image.mode == self._mode else image.convert(self._mode)), int(label)


def open_split(source: DatasetSource, split: str = "train", *, variant: str | None = None,
               root: str | Path | None = None, image_size: int = 32, channels: int = 3,
               download: bool = False) -> PreparedSplit:
    """One split, each item decoded when indexed as 1 ('L') or 3 ('RGB') channels, the shorter side resized to
    ``image_size`` and centre-cropped square. ``split`` may join splits with '+' (``train+extra``, as the paper)."""
    if channels not in (1, 3):
        raise GanlabError(f"channels must be 1 or 3, not {channels}")
    if not isinstance(image_size, int) or image_size < 1:
        raise GanlabError(f"image size must be a positive integer, not {image_size!r}")
    bases = []
    for part in split.split("+"):
        if part not in source.splits and "*" not in source.splits:
            raise GanlabError(f"{source.name}: unknown split '{part}'; choose from {', '.join(source.splits)}")
        try:
            bases.append(source.open(part, Path(root).expanduser() if root is not None else None, download, variant))
        except GanlabError:
            raise
        except Exception as exc:  # a plugin's dataset: name it and what it said, not its traceback
            said = " ".join(str(exc).split())
            raise GanlabError(f"{source.name}: cannot open split '{part}' ({type(exc).__name__}: {said}); check "
                              "--data-root") from None
    base = bases[0] if len(bases) == 1 else ConcatDataset(bases)
    return PreparedSplit(base, source.name, split, image_size, channels)


class _Guarded(Dataset):
    """Items ``(image, label, kind, text)``: kind 0 fine, 1 a bad image, 2 another GanlabError, text its message
    (as data it stays one line; a worker would re-raise it with its traceback in the message)."""

    def __init__(self, dataset: Dataset, shape: tuple[int, int, int]):
        self.dataset, self.shape = dataset, shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        try:
            return (*self.dataset[index], 0, "")
        except GanlabError as exc:
            bad = isinstance(exc, BadImageError)
            return torch.zeros(self.shape, dtype=torch.uint8), -1, 1 if bad else 2, exc.reason if bad else str(exc)


def load_split(source: DatasetSource, split: str = "train", *, variant: str | None = None,
               root: str | Path | None = None, image_size: int = 32, channels: int = 3, download: bool = False,
               limit: int | None = None, progress: bool = True, skip_bad: bool = False,
               exclude: Collection[int] | None = None, report: dict | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split into memory: (uint8 N x C x H x W in 0..255, int64 N labels, -1 = unlabelled).

    ``limit`` keeps the first ``limit`` of a fixed permutation (``default_rng(SUBSET_SEED)``) in dataset order (a
    smaller limit gives a subset of a larger one); then the positions in ``exclude`` are left out. An unusable image
    raises a one-line ``BadImageError``; ``skip_bad`` drops them instead (after ``limit``) with one line on stderr,
    unless none is readable. ``report`` gets ``{"skipped": int, "total": int, "first": "PATH: why" or None,
    "positions": [int], "unreadable": [int]}``: positions in the whole split of the images returned and dropped.
    """
    dataset = open_split(source, split, variant=variant, root=root, image_size=image_size, channels=channels,
                         download=download)
    where = f"{source.name}/{split}"
    keep = _positions(len(dataset), limit, exclude, where)
    if len(keep) < len(dataset):
        dataset = Subset(dataset, keep.tolist())
    images, labels, good, first = _decode(dataset, (channels, image_size, image_size), where, progress, skip_bad)
    total, skipped = len(good), len(good) - int(good.sum())
    if report is not None:
        good_at = good.numpy()
        report.update(skipped=skipped, total=total, first=first, positions=keep[good_at].tolist(),
                      unreadable=keep[~good_at].tolist())
    if skipped:
        if skipped == total:
            raise GanlabError(f"all {skipped} images in {where} are unreadable (first: {first})")
        print(f"skipped {count(skipped, 'unreadable image')} of {total} in {where} (first: {first})", file=sys.stderr)
        images, labels = images[good], labels[good]
    return images, labels


def _positions(n: int, limit: int | None, exclude: Collection[int] | None, where: str) -> np.ndarray:
    """The positions ``load_split`` keeps: a seeded subset of ``limit``, then the excluded ones left out."""
    if limit is not None and limit < 1:
        raise GanlabError(f"limit must be a positive number of images, not {limit}")
    keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:limit]) if limit else np.arange(n)
    if not exclude:
        return keep
    outside = sorted(i for i in exclude if not 0 <= i < n)
    if outside:
        raise GanlabError(f"the exclusion list names image {outside[0]}, but {where} has {n} images "
                          f"(0..{n - 1}); was it made for another dataset?")
    keep = np.setdiff1d(keep, np.fromiter(exclude, dtype=np.int64))
    if not len(keep):
        raise GanlabError(f"the exclusion list removes every image of {where}")
    return keep


def _decode(dataset: Dataset, shape: tuple[int, int, int], where: str, progress: bool, skip_bad: bool):
    """(images, labels, which decoded, the first unreadable one's "PATH: reason") of every item, in order."""
    n, done, first = len(dataset), 0, None
    images = torch.empty((n, *shape), dtype=torch.uint8)
    labels, kinds = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
    workers = min(2, os.cpu_count() or 1) if n > 2000 else 0  # they pay off once decoding outweighs their start-up
    loader = DataLoader(_Guarded(dataset, shape), batch_size=256, num_workers=workers)
    with tqdm(total=n, desc=f"loading {where}", unit="img", disable=not progress) as bar:
        for batch_images, batch_labels, batch_kinds, texts in loader:
            for kind, text in zip(batch_kinds.tolist(), texts):
                if kind == 2:
                    raise GanlabError(text)
                if kind == 1 and not skip_bad:
                    raise BadImageError(text)
                first = first or (text if kind == 1 else None)
            rows = slice(done, done + len(batch_labels))
            images[rows], labels[rows], kinds[rows] = batch_images, batch_labels, batch_kinds
            done = rows.stop
            bar.update(len(batch_labels))
    return images, labels, kinds == 0, first


def read_exclusion_list(path: str | Path) -> set[int]:
    """Image positions from an exclusion list: one whole number per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GanlabError(f"cannot read the exclusion list {path}: {one_line(exc)}") from None
    texts = [line.split("#", 1)[0].strip() for line in lines]
    for number, text in enumerate(texts, 1):
        if text and not (text.isascii() and text.isdigit()):
            raise GanlabError(f"{path}, line {number}: {text[:40]!r} is not an image position (a whole number >= 0)")
    return {int(text) for text in texts if text}
