"""The built-in datasets' openers. ganlab parses the files itself (``official_formats``) where torchvision refuses
usable ones (MNIST, SVHN, CelebA) or misbehaves (LSUN and CIFAR-10 unpickle files that may run code)."""
import os
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, StackDataset

from ganlab.data.datasets import DatasetSource, missing, need_root, no_variant
from ganlab.data.folder_dataset import folder_channels, folder_layout, open_folder
from ganlab.data.image_files import FileImages, ImageTree, decode_image
from ganlab.data.official_formats import open_lmdb, read_celeba_partition, read_cifar_batch, read_idx, read_svhn_mat
from ganlab.data.pixel_formats import bad_image, error_text, one_line
from ganlab.errors import GanlabError

LSUN_CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room",
                   "dining_room", "kitchen", "living_room", "restaurant", "tower")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGITS = tuple(str(d) for d in range(10))


def _arrays(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> Dataset:
    """Items (uint8 image H x W or H x W x C, label) from arrays in memory."""
    dataset = StackDataset(images, labels)
    dataset.classes = list(classes)
    return dataset


def _download(source: str, root: Path, fetch: Callable[[], Any]) -> None:
    try:
        fetch()
    except Exception as exc:
        raise GanlabError(f"{source}: download into {root} failed ({one_line(exc)}); "
                          "fetch the files by hand and give --data-root DIR") from None


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
    dataset = _arrays(images[index], labels[index], DIGITS)
    dataset.indices = index  # positions in sklearn's load_digits(), for reference
    return dataset


def _open_mnist(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("mnist", variant)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    root = need_root("mnist", root, f"MNIST/raw/{names[0]}")
    raw = root / "MNIST" / "raw"

    def find(stem: str) -> Path | None:  # torchvision's layout first, then the files in root itself
        return next((f / name for f in (raw, root) for name in (stem, f"{stem}.gz") if (f / name).is_file()), None)

    if download and not all(find(n) for n in names):
        from torchvision.datasets import MNIST

        _download("mnist", root, lambda: MNIST(str(root), train=split == "train", download=True))
    images_path, labels_path = find(names[0]), find(names[1])
    if not (images_path and labels_path):
        raise missing("mnist", f"{names[0]}[.gz] and {names[1]}[.gz]", f"{raw} or in {root}")
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1).astype(np.int64)
    if labels.shape != (len(images),):
        raise GanlabError(f"mnist: {images_path.name} holds {len(images)} images but {labels_path.name} "
                          f"{len(labels)} labels (in {images_path.parent}); replace them with the official files")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise GanlabError(f"mnist: {labels_path} has labels above 9 ({bad.size} of them, first {labels[bad[0]]} at "
                          f"index {bad[0]}); replace it with the official file")
    return _arrays(images, labels, DIGITS)


def _open_svhn(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("svhn", variant)
    path = need_root("svhn", root, "train_32x32.mat / test_32x32.mat") / f"{split}_32x32.mat"
    if download and not path.is_file():
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import download_url

        url, _, md5 = SVHN.split_list[split]
        _download("svhn", path.parent, lambda: download_url(url, str(path.parent), path.name, md5))
    if not path.is_file():
        raise missing("svhn", path.name, path.parent)
    return _arrays(*read_svhn_mat(path), DIGITS)


def _open_cifar10(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("cifar10", variant)
    root = need_root("cifar10", root, "train/<class>/*.jpg and test/<class>/*.jpg, or cifar-10-batches-py/")
    if (root / "train").is_dir() or (root / "test").is_dir():  # an ImageFolder tree
        if not (root / split).is_dir():
            raise missing("cifar10", f"{split}/<class>/*.jpg", root, downloadable=False)
        dataset = ImageTree(root / split, "cifar10")
        if tuple(dataset.classes) != CIFAR10_CLASSES:  # labels come from sorted names: must be these
            raise GanlabError(f"cifar10: class folders in {root / split} are {', '.join(dataset.classes)}; "
                              f"expected {', '.join(CIFAR10_CLASSES)}")
        return dataset
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if download and not all((folder / n).is_file() for n in names):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        # the md5-checked official archive; its batches are then read like any others
        _download("cifar10", root, lambda: download_and_extract_archive(
            CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5))
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        raise missing("cifar10", f"cifar-10-batches-py/ ({', '.join(names)}; official python version, "
                       f"missing {', '.join(absent)}) or train/<class>/*.jpg", root)
    images, labels = zip(*(read_cifar_batch(folder / n) for n in names))
    return _arrays(np.concatenate(images), np.concatenate(labels), CIFAR10_CLASSES)


_LMDB_ENVS: dict[Path, Any] = {}  # data.mdb -> open lmdb environment, shared by every dataset in this process


def _close_lmdb_envs() -> None:
    # lmdb refuses a second open of the same files in a process, forked children included: close all before a fork.
    while _LMDB_ENVS:
        _LMDB_ENVS.popitem()[1].close()


os.register_at_fork(before=_close_lmdb_envs)


class _LmdbImages(Dataset):
    """LSUN lmdb (key -> webp/jpeg bytes); keys listed once, in memory; the shared environment is never pickled."""

    def __init__(self, folder: Path):
        self.data_file = folder / "data.mdb"
        self.keys = self._read(lambda txn: list(txn.cursor().iternext(keys=True, values=False)))
        if not self.keys:
            raise GanlabError(f"lsun: {folder} holds no images (an empty lmdb database); fetch and unzip it again")

    def _read(self, action):
        try:
            import lmdb
        except ImportError:
            raise GanlabError("lsun needs the lmdb package: pip install lmdb") from None
        try:
            if self.data_file not in _LMDB_ENVS:
                _LMDB_ENVS[self.data_file] = open_lmdb(self.data_file)  # checked: a truncated file would SIGBUS
            with _LMDB_ENVS[self.data_file].begin(write=False) as txn:
                return action(txn)
        except lmdb.Error as exc:
            raise GanlabError(f"lsun: cannot read the lmdb database {self.data_file} ({error_text(exc)}); "
                              "it is damaged: fetch and unzip it again") from None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        key = self.keys[index]
        where = f"{self.data_file} entry {key.decode('ascii', errors='backslashreplace')}"
        data = self._read(lambda txn: txn.get(key))
        if data is None:
            raise bad_image(where, "entry missing from the database")
        return decode_image(data, where), -1


def _open_lsun(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    category = variant or "bedroom"
    if not re.fullmatch(r"[a-z_]+", category):
        raise GanlabError(f"lsun: bad category '{category}'; give one of {', '.join(LSUN_CATEGORIES)}")
    folder_name = f"{category}_{split}_lmdb"
    root = need_root("lsun", root, f"{folder_name}/")
    if download:
        raise GanlabError("lsun cannot be downloaded by ganlab; fetch it with LSUN's download.py "
                          "(github.com/fyu/lsun), unzip it, and give --data-root DIR")
    if not (root / folder_name / "data.mdb").is_file():
        found = ", ".join(sorted(p.name for p in root.glob("*_lmdb")))
        raise GanlabError(f"lsun: expected {folder_name}/data.mdb in {root} (found: {found or 'no *_lmdb folders'}; "
                          f"give --data-root DIR, pick the category with lsun:CATEGORY)")
    return _LmdbImages(root / folder_name)


def _open_celeba(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("celeba", variant)
    expected = "celeba/img_align_celeba/*.jpg and celeba/list_eval_partition.txt"
    root = need_root("celeba", root, expected)
    if download and not (root / "celeba" / "img_align_celeba").is_dir():
        from torchvision.datasets import CelebA

        _download("celeba", root, lambda: CelebA(str(root), split="all", target_type=[], download=True))
    # The official layout lives in root/celeba/; accept root itself being that folder.
    base = next((b for b in (root / "celeba", root) if (b / "img_align_celeba").is_dir()), root / "celeba")
    images, partition = base / "img_align_celeba", base / "list_eval_partition.txt"
    if not images.is_dir() or not partition.is_file():
        raise missing("celeba", expected, root)
    names = read_celeba_partition(partition, split)
    absent = sorted(set(names) - set(os.listdir(images)))
    if absent:
        raise GanlabError(f"celeba: {len(absent)} images listed in {partition.name} are missing from {images} "
                          f"(e.g. {absent[0]}); unpack img_align_celeba.zip there")
    return FileImages([images / n for n in names])


def builtin_sources() -> list[DatasetSource]:
    """The datasets ganlab ships, in the order ``ganlab datasets`` lists them."""
    return [
        DatasetSource("digits", "scikit-learn's 1,797 8x8 handwritten digits (embedded, no download)",
                      ("train", "test", "all"), 10, "nothing (bundled with scikit-learn)", _open_digits, channels=1),
        DatasetSource("mnist", "MNIST handwritten digits, 28x28 grey (60,000 train / 10,000 test)", ("train", "test"),
                      10, "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]", _open_mnist, channels=1),
        DatasetSource("svhn", "Street View House Numbers, 32x32 colour digits (format 2, cropped)",
                      ("train", "test", "extra"), 10, "train_32x32.mat / test_32x32.mat / extra_32x32.mat", _open_svhn),
        DatasetSource("cifar10", "CIFAR-10, 32x32 colour images in 10 classes", ("train", "test"), 10,
                      "train/<class>/*.jpg + test/<class>/*.jpg, or cifar-10-batches-py/", _open_cifar10),
        DatasetSource("lsun", "LSUN scene category as lmdb (lsun:CATEGORY, default bedroom)", ("train", "val"),
                      None, "<category>_train_lmdb/ / <category>_val_lmdb/", _open_lsun, heldout="val"),
        DatasetSource("celeba", "CelebA aligned faces, 178x218 (no class labels)", ("train", "valid", "test", "all"),
                      None, "celeba/img_align_celeba/*.jpg + celeba/list_eval_partition.txt", _open_celeba),
        DatasetSource("folder", "your images: <root>/{train,test}/<class>/*.jpg, <root>/<class>/*.jpg, or *.jpg",
                      ("train", "test", "all", "*"), None, "<split>/<class>/*.jpg, <class>/*.jpg or *.jpg",
                      open_folder, inspect=folder_layout, detect_channels=folder_channels),
    ]
