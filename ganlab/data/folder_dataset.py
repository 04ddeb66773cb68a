"""The ``folder`` dataset: a user's images, labelled by the index of their class sub-folder in sorted order (as
torchvision's ``ImageFolder``). Layouts, in the order they are recognised: ``ROOT/train/<class>/*`` (and
``ROOT/test/<class>/*`` with the same classes, held out); ``ROOT/<class>/*`` (``test`` a seeded, stratified 20% of
each class, ``train`` the rest, ``all`` everything); ``ROOT/*.jpg`` or ``ROOT/train/*.jpg`` (unlabelled)."""
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from ganlab.data.datasets import Layout, missing, need_root, no_variant
from ganlab.data.image_files import IMAGE_SUFFIXES, FileImages, ImageTree, class_folders, image_files
from ganlab.errors import GanlabError

FOLDER_TEST_FRACTION = 0.2  # held out from a folder of class folders that has no train/ and test/
FOLDER_SPLIT_SEED = 0
CHANNEL_SAMPLE = 32  # images, spread over the split, that tell a grey folder from a colour one


def folder_layout(root: Path | None, variant: str | None) -> Layout:
    """Labelled when the images sit in class sub-folders; held out when test/ exists, or split off by seed."""
    if root is None or not root.is_dir():
        return Layout(("train",), None, None)
    train, test = root / "train", root / "test"
    if not train.is_dir():  # class folders and no split folders: a seeded, stratified held-out split
        classes = tuple(class_folders(root))
        if "test" in classes:  # a test/ beside the classes it holds out would be trained on as one more class
            raise GanlabError(f"folder: {root} holds class folders beside a test/ folder but no train/ folder; move "
                              f"the training classes into {train}, or rename test/ if it is a class")
        return Layout(("train", "test", "all"), classes, "test") if classes else Layout(("train",), None, None)
    classes = class_folders(train)
    if not test.is_dir():
        return Layout(("train",), tuple(classes) or None, None)
    test_classes = class_folders(test)
    if classes and test_classes != classes:
        only_train, only_test = sorted(set(classes) - set(test_classes)), sorted(set(test_classes) - set(classes))
        raise GanlabError(f"folder: {train} and {test} have different class folders (only in train: "
                          f"{', '.join(only_train) or 'none'}; only in test: {', '.join(only_test) or 'none'}); "
                          "give both the same classes")
    return Layout(("train", "test"), tuple(classes) or None, "test")


def _held_out_split(dataset: Dataset, split: str) -> Dataset:
    """A seeded split of an ImageTree: ``test`` is FOLDER_TEST_FRACTION of each class, ``train`` the rest."""
    from sklearn.model_selection import train_test_split

    targets = np.asarray(dataset.targets)
    stratify = targets if np.bincount(targets).min() >= 2 else None  # a class of one image cannot be stratified
    try:
        train, test = train_test_split(np.arange(len(targets)), test_size=FOLDER_TEST_FRACTION,
                                       random_state=FOLDER_SPLIT_SEED, stratify=stratify)
    except ValueError:  # fewer images than a held-out share needs, or than one held out per class
        raise GanlabError(f"folder: {len(targets)} images in {len(dataset.classes)} class folders are too few to "
                          f"hold out {FOLDER_TEST_FRACTION:.0%} of each class; add images, or give train/ and test/ "
                          "sub-folders") from None
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
    if layout.classes and not (root / "train").is_dir() and split in layout.splits:  # an all/ folder is a class
        dataset = ImageTree(root)
        return dataset if split == "all" else _held_out_split(dataset, split)
    if (root / split).is_dir():
        folder = root / split
    elif split == "train":  # no split folders: the folder itself is the training set
        folder = root
    else:
        subs = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "none"
        raise GanlabError(f"folder: no '{split}' sub-folder in {root} (sub-folders: {subs}); "
                          f"without one, the folder itself is the 'train' split")
    if class_folders(folder):  # labels = index of the sorted class sub-folder
        return ImageTree(folder)
    files = image_files(folder)
    if not files:
        raise missing("folder", f"image files ({', '.join(IMAGE_SUFFIXES)}) or class sub-folders", folder,
                       downloadable=False)
    return FileImages(files)


def folder_channels(root: Path | None, split: str) -> int:
    """1 when the split's images are grey (a grey file mode, or equal red, green and blue), else 3: a model of
    grey pictures needs no colour channels. Unreadable images are left to the loader, which reports them."""
    try:
        dataset = open_folder(split, root, False, None)
    except GanlabError:
        return 3
    looked = 0
    for index in np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), CHANNEL_SAMPLE)).astype(int)):
        try:
            image = dataset[int(index)][0]
        except GanlabError:
            continue
        pixels = np.asarray(image)  # the loader gives 'L' or 'RGB'
        if image.mode != "L" and not (pixels.min(-1) == pixels.max(-1)).all():
            return 3
        looked += 1
    return 1 if looked else 3
