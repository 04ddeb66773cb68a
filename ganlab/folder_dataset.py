"""The ``folder`` dataset: a user's own images, labelled by their class sub-folders.

Layouts, in the order they are recognised:
- ``ROOT/train/<class>/*`` (and ``ROOT/test/<class>/*``): labelled, ``test`` held out. Both must have the
  same class folders.
- ``ROOT/<class>/*``: labelled; ``test`` is a seeded, stratified 20% of each class, ``train`` the rest and
  ``all`` everything.
- ``ROOT/*.jpg`` (or ``ROOT/train/*.jpg``): unlabelled, no held-out split.
Labels are the index of the class folder in sorted order (as torchvision's ``ImageFolder``; the walk is
ganlab's own ``ImageTree``: symlinked folders followed without looping, each real file counted once, hidden
names ignored).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from ganlab.datasets import Layout
from ganlab.errors import GanlabError
from ganlab.image_files import (
    IMAGE_SUFFIXES,
    FileImages,
    class_folders,
    image_files,
    image_folder,
    missing,
    need_root,
    no_variant,
)

FOLDER_TEST_FRACTION = 0.2  # held out from a folder of class folders that has no train/ and test/
FOLDER_SPLIT_SEED = 0


def _class_dirs(folder: Path) -> list[str]:
    return class_folders(folder)


def folder_layout(root: Path | None, variant: str | None) -> Layout:
    """Labelled when the images sit in class sub-folders; held out when test/ exists, or split off by seed."""
    if root is None or not root.is_dir():
        return Layout(("train",), None, None)
    train, test = root / "train", root / "test"
    if train.is_dir():
        train_classes = _class_dirs(train)
        test_classes = _class_dirs(test) if test.is_dir() else None
        if train_classes and test_classes is not None and test_classes != train_classes:
            only_train = sorted(set(train_classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(train_classes))
            raise GanlabError(f"folder: {train} and {test} have different class folders (only in train: "
                              f"{', '.join(only_train) or 'none'}; only in test: {', '.join(only_test) or 'none'}); "
                              "give both the same classes")
        splits = tuple(["train"] + (["test"] if test.is_dir() else []))
        return Layout(splits, tuple(train_classes) or None, "test" if test.is_dir() else None)
    classes = _class_dirs(root)
    if classes:  # class folders and no split folders: a seeded, stratified held-out split
        return Layout(("train", "test", "all"), tuple(classes), "test")
    return Layout(("train",), None, None)


def _held_out_split(dataset: Dataset, split: str) -> Dataset:
    """A seeded split of an ImageTree: ``test`` is FOLDER_TEST_FRACTION of each class, ``train`` the rest."""
    from sklearn.model_selection import train_test_split

    targets = np.asarray(dataset.targets)
    counts = np.bincount(targets)
    stratify = targets if counts[counts > 0].min() >= 2 else None  # a class of one image cannot be stratified
    train, test = train_test_split(np.arange(len(targets)), test_size=FOLDER_TEST_FRACTION,
                                   random_state=FOLDER_SPLIT_SEED, stratify=stratify)
    subset = Subset(dataset, np.sort(train if split == "train" else test).tolist())
    subset.classes = dataset.classes
    return subset


def open_folder(split: str, root: Path | None, download: bool, variant: str | None) -> Dataset:
    no_variant("folder", variant)
    root = need_root("folder", root, "train/ and test/ sub-folders, or the images themselves")
    if download:
        raise GanlabError("folder cannot be downloaded; give --data-root DIR with your images")
    if not root.is_dir():
        raise missing("folder", "a folder of images", root, downloadable=False)
    layout = folder_layout(root, variant)
    if (root / split).is_dir():
        folder = root / split
    elif layout.classes and not (root / "train").is_dir() and split in layout.splits:
        dataset = image_folder("folder", root)
        return dataset if split == "all" else _held_out_split(dataset, split)
    elif split == "train":  # no split folders: the folder itself is the training set
        folder = root
    else:
        subs = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
        raise GanlabError(f"folder: no '{split}' sub-folder in {root} (sub-folders: {subs}); "
                          f"without one, the folder itself is the 'train' split")
    if _class_dirs(folder):  # labels = index of the sorted class sub-folder
        return image_folder("folder", folder)
    files = image_files(folder)
    if not files:
        raise missing("folder", f"image files ({', '.join(IMAGE_SUFFIXES)}) or class sub-folders", folder,
                       downloadable=False)
    return FileImages(files)
