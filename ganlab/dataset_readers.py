"""The built-in datasets' readers: one opener per dataset, returning (image, label) items.

Own small readers replace torchvision's where it would refuse usable files (MNIST wants all
four files for either split; SVHN and CelebA md5-check every file) or misbehave (LSUN pickles
its key list to ``_cache_*`` in the working directory and unpickles any such file it finds;
CIFAR-10's batches are read with ``pickle.load``, which runs whatever code a doctored file names).
The file formats themselves are parsed and checked in ``ganlab.official_formats``; torchvision
still downloads.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ganlab.datasets import DatasetSource
from ganlab.errors import GanlabError
from ganlab.folder_dataset import folder_layout, open_folder
from ganlab.image_files import (
    FileImages,
    bad_image,
    decode_image,
    download_failed,
    image_folder,
    missing,
    need_root,
    no_variant,
    one_line,
)
from ganlab.official_formats import check_lmdb_file, read_cifar_batch, read_idx, read_svhn_mat

LSUN_CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room",
                   "dining_room", "kitchen", "living_room", "restaurant", "tower")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArrayImages(Dataset):
    """uint8 images (N x H x W or N x H x W x C) with int64 labels, all in memory."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str] | None = None):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])



# ----------------------------------------------------------------------------- built-in openers

@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images 1797 x 8 x 8 in 0..255, labels, train indices, test indices)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)  # 0..16 -> 0..255
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(labels)), test_size=0.5, random_state=0, stratify=labels)
    return images, labels, np.sort(train), np.sort(test)


def _open_digits(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("digits", variant)
    images, labels, train, test = _digits_arrays()
    index = {"train": train, "test": test}.get(split, np.arange(len(labels)))
    dataset = _ArrayImages(images[index], labels[index], [str(d) for d in range(10)])
    dataset.indices = index  # positions in sklearn's load_digits(), for reference
    return dataset


def _open_mnist(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("mnist", variant)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    root = need_root("mnist", root, f"MNIST/raw/{names[0]}")
    raw = root / "MNIST" / "raw"

    def find(stem: str) -> Path | None:  # torchvision's layout first, then the files in root itself
        for folder in (raw, root):
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    return candidate
        return None

    if download and not all(find(n) for n in names):
        from torchvision.datasets import MNIST

        try:  # fetches all four files into root/MNIST/raw and extracts them
            MNIST(str(root), train=split == "train", download=True)
        except Exception as exc:
            raise download_failed("mnist", root, exc) from None
    paths = [find(n) for n in names]
    if not all(paths):
        raise missing("mnist", f"{names[0]}[.gz] and {names[1]}[.gz]", raw)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1).astype(np.int64)
    if labels.shape != (len(images),):
        raise GanlabError(f"mnist: {paths[0].name} holds {len(images)} images but {paths[1].name} {len(labels)} "
                          f"labels (in {paths[0].parent}); replace them with the original files")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise GanlabError(f"mnist: {paths[1]} has labels above 9 ({bad.size} of them, first {labels[bad[0]]} at "
                          f"index {bad[0]}); replace it with the original file")
    return _ArrayImages(images, labels, [str(d) for d in range(10)])


def _open_svhn(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("svhn", variant)
    filename = f"{split}_32x32.mat"
    root = need_root("svhn", root, "train_32x32.mat / test_32x32.mat")
    if download and not (root / filename).is_file():
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import download_url

        url, _, md5 = SVHN.split_list[split]
        try:
            download_url(url, str(root), filename, md5)
        except Exception as exc:
            raise download_failed("svhn", root, exc) from None
    if not (root / filename).is_file():
        raise missing("svhn", filename, root)
    images, labels = read_svhn_mat(root / filename)
    return _ArrayImages(images, labels, [str(d) for d in range(10)])


def _open_cifar10(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("cifar10", variant)
    expected = "train/<class>/*.jpg and test/<class>/*.jpg, or cifar-10-batches-py/"
    root = need_root("cifar10", root, expected)
    if (root / "train").is_dir() or (root / "test").is_dir():  # an ImageFolder tree
        if not (root / split).is_dir():
            raise missing("cifar10", f"{split}/<class>/*.jpg", root, downloadable=False)
        dataset = image_folder("cifar10", root / split)
        if tuple(dataset.classes) != CIFAR10_CLASSES:  # labels come from sorted names: must be these
            raise GanlabError(f"cifar10: class folders in {root / split} are {', '.join(dataset.classes)}; "
                              f"expected {', '.join(CIFAR10_CLASSES)}")
        return dataset
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if download and not all((folder / n).is_file() for n in names):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:  # the md5-checked official archive; its batches are then read like any others
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except Exception as exc:
            raise download_failed("cifar10", root, exc) from None
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        raise missing("cifar10", f"cifar-10-batches-py/ ({', '.join(names)}; official python version, "
                       f"missing {', '.join(absent)}) or train/<class>/*.jpg", root)
    batches = [read_cifar_batch(folder / n) for n in names]
    images = np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
    labels = np.concatenate([b[1] for b in batches])
    return _ArrayImages(images, labels, list(CIFAR10_CLASSES))


_LMDB_ENVS: dict[str, Any] = {}  # path -> open lmdb environment, shared by every dataset in this process


def _close_lmdb_envs() -> None:
    # lmdb refuses a second open of the same files in one process, and a forked child inherits
    # that bookkeeping (and must not use the parent's handle): close everything before a fork so
    # DataLoader workers open their own. The parent reopens lazily on its next read.
    while _LMDB_ENVS:
        _LMDB_ENVS.popitem()[1].close()


os.register_at_fork(before=_close_lmdb_envs)


class _LmdbImages(Dataset):
    """LSUN lmdb (key -> webp/jpeg bytes); keys listed once, in memory; the shared environment is never pickled."""

    def __init__(self, path: Path):
        self.path = str(path)
        check_lmdb_file(path / "data.mdb")  # a truncated file would crash the process (SIGBUS), not raise
        self.keys = self._read(lambda txn: list(txn.cursor().iternext(keys=True, values=False)))
        if not self.keys:
            raise GanlabError(f"lsun: {path} holds no images (an empty lmdb database); fetch and unzip it again")

    def _read(self, action):
        import lmdb

        try:
            if self.path not in _LMDB_ENVS:
                _LMDB_ENVS[self.path] = lmdb.open(self.path, readonly=True, lock=False, readahead=False,
                                                  meminit=False)
            with _LMDB_ENVS[self.path].begin(write=False) as txn:
                return action(txn)
        except lmdb.Error as exc:
            raise GanlabError(f"lsun: cannot read the lmdb database {Path(self.path) / 'data.mdb'} "
                              f"({type(exc).__name__}: {one_line(exc)}); it is damaged: fetch and unzip it again") \
                from None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        key = self.keys[index]
        where = f"{Path(self.path) / 'data.mdb'} entry {key.decode('ascii', errors='backslashreplace')}"
        data = self._read(lambda txn: txn.get(key))
        if data is None:
            raise bad_image(where, "entry missing from the database")
        return decode_image(data, where), -1


def _open_lsun(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    category = variant or "bedroom"
    if not re.fullmatch(r"[a-z_]+", category):
        raise GanlabError(f"lsun: bad category '{category}'; use e.g. lsun:church_outdoor "
                          f"({', '.join(LSUN_CATEGORIES)})")
    folder_name = f"{category}_{split}_lmdb"
    root = need_root("lsun", root, f"{folder_name}/")
    try:
        import lmdb  # noqa: F401
    except ImportError:
        raise GanlabError("lsun needs the lmdb package: pip install lmdb") from None
    if download:
        raise GanlabError("lsun cannot be downloaded by ganlab; fetch it with LSUN's download.py "
                          "(github.com/fyu/lsun), unzip it, and give --data-root DIR")
    folder = root / folder_name
    if not (folder / "data.mdb").is_file():
        found = ", ".join(sorted(p.name for p in root.glob("*_lmdb"))) if root.is_dir() else ""
        raise GanlabError(f"lsun: expected {folder_name}/data.mdb in {root} (found: {found or 'no *_lmdb folders'}; "
                          f"give --data-root DIR, pick the category with lsun:CATEGORY)")
    return _LmdbImages(folder)


CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


def _celeba_partition(partition: Path, split: str) -> list[str]:
    """The image names ``list_eval_partition.txt`` assigns to ``split`` (all names for ``all``)."""
    try:
        text = partition.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GanlabError(f"celeba: cannot read {partition} as text ({one_line(exc)}); "
                          "replace it with the official file") from None
    names, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        shown = one_line(line)[:80]
        if len(fields) != 2:
            raise GanlabError(f"celeba: line {number} of {partition} is '{shown}'; expected 'NNNNNN.jpg 0|1|2'")
        if fields[1] not in ("0", "1", "2"):
            raise GanlabError(f"celeba: line {number} of {partition} has partition code '{fields[1][:20]}'; "
                              "expected 0 (train), 1 (valid) or 2 (test)")
        if "/" in fields[0] or "\\" in fields[0] or fields[0].startswith("."):
            raise GanlabError(f"celeba: line {number} of {partition} names '{fields[0][:80]}'; expected a file "
                              "name in img_align_celeba/, such as 000001.jpg")
        if fields[0] in seen:
            raise GanlabError(f"celeba: line {number} of {partition} lists {fields[0]} a second time; "
                              "replace it with the official file")
        seen.add(fields[0])
        if split == "all" or int(fields[1]) == CELEBA_SPLITS[split]:
            names.append(fields[0])
    if not names:
        raise GanlabError(f"celeba: {partition} lists no images for the '{split}' split; "
                          "replace it with the official file")
    return names


def _open_celeba(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("celeba", variant)
    expected = "celeba/img_align_celeba/*.jpg and celeba/list_eval_partition.txt"
    root = need_root("celeba", root, expected)
    if download and not (root / "celeba" / "img_align_celeba").is_dir():
        from torchvision.datasets import CelebA

        try:
            CelebA(str(root), split="all", target_type=[], download=True)
        except Exception as exc:
            raise download_failed("celeba", root, exc) from None
    # The official layout lives in root/celeba/; accept root itself being that folder.
    base = next((b for b in (root / "celeba", root) if (b / "img_align_celeba").is_dir()), root / "celeba")
    images, partition = base / "img_align_celeba", base / "list_eval_partition.txt"
    if not images.is_dir() or not partition.is_file():
        raise missing("celeba", expected, root)
    names = _celeba_partition(partition, split)
    present = set(os.listdir(images))
    absent = [n for n in names if n not in present]
    if absent:
        raise GanlabError(f"celeba: {len(absent)} images listed in {partition.name} are missing from {images} "
                          f"(e.g. {absent[0]}); unpack img_align_celeba.zip there")
    return FileImages([images / n for n in names])


def builtin_sources() -> list[DatasetSource]:
    """The datasets ganlab ships, in the order ``ganlab datasets`` lists them."""
    return [
        DatasetSource("digits", "scikit-learn's 1,797 8x8 handwritten digits (embedded, no download)",
                      ("train", "test", "all"), 10, "nothing (bundled with scikit-learn)", _open_digits, channels=1),
        DatasetSource("mnist", "MNIST handwritten digits, 28x28 grey (60,000 train / 10,000 test)",
                      ("train", "test"), 10,
                      "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]", _open_mnist, channels=1),
        DatasetSource("svhn", "Street View House Numbers, 32x32 colour digits (format 2, cropped)",
                      ("train", "test", "extra"), 10, "train_32x32.mat / test_32x32.mat / extra_32x32.mat",
                      _open_svhn),
        DatasetSource("cifar10", "CIFAR-10, 32x32 colour images in 10 classes",
                      ("train", "test"), 10,
                      "train/<class>/*.jpg + test/<class>/*.jpg, or cifar-10-batches-py/", _open_cifar10),
        DatasetSource("lsun", "LSUN scene category as lmdb (lsun:CATEGORY, default bedroom)",
                      ("train", "val"), None, "<category>_train_lmdb/ / <category>_val_lmdb/", _open_lsun,
                      heldout="val"),
        DatasetSource("celeba", "CelebA aligned faces, 178x218 (no class labels)",
                      ("train", "valid", "test", "all"), None,
                      "celeba/img_align_celeba/*.jpg + celeba/list_eval_partition.txt", _open_celeba),
        DatasetSource("folder", "your images: <root>/{train,test}/<class>/*.jpg, <root>/<class>/*.jpg, or *.jpg",
                      ("train", "test", "all", "*"), None, "<split>/<class>/*.jpg, <class>/*.jpg or *.jpg",
                      open_folder, inspect=folder_layout),
    ]

