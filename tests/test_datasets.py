"""Tests for ganlab.data.datasets: every built-in source on real or tiny official-format files."""
from __future__ import annotations

import gzip
import io
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
from PIL import Image

import ganlab
import ganlab.api as api
import ganlab.data.builtin_datasets as readers
import ganlab.data.datasets as ds
from ganlab.errors import GanlabError
from ganlab.plugin import core_plugin, hookspecs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_JPG = SHARED / "cifar10-jpg"
MNIST_TEST = SHARED / "mnist-test"
needs_cifar = pytest.mark.skipif(not CIFAR_JPG.is_dir(), reason="shared CIFAR-10 JPEG tree absent")
needs_mnist = pytest.mark.skipif(not MNIST_TEST.is_dir(), reason="shared MNIST test files absent")


@pytest.fixture(autouse=True)
def builtin_only(monkeypatch):
    """Look names up in the built-ins, so these tests do not depend on other plugins in the environment."""
    monkeypatch.setattr(api, "dataset_source", lambda name: _builtin(name.partition(":")[0]))


def _builtin(name):
    sources = {s.name: s for s in readers.builtin_sources()}
    if name not in sources:
        raise GanlabError(f"unknown dataset '{name}'; known: {', '.join(sorted(sources))}")
    return sources[name]


def _assert_one_line_error(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, (part, message)


# ----------------------------------------------------------------------------- tiny official-format files

@pytest.fixture
def svhn_root(tmp_path):
    """test_32x32.mat with 5 images, labels 1..4 and 10 (= digit 0), in SVHN's X [32,32,3,N] layout."""
    import scipy.io

    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [4]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": y})
    return tmp_path


MNIST_COUNTS = {"train": 14, "t10k": 10}  # images per generated file (prefix as in the official names)


def mnist_image(prefix: str, index: int) -> np.ndarray:
    """28 x 28 uint8, different for every file and index, never all black."""
    offset = 0 if prefix == "train" else 101
    return ((np.arange(28 * 28).reshape(28, 28) * (index + 3) + 13 * index + offset) % 256).astype(np.uint8)


def mnist_labels(prefix: str) -> np.ndarray:
    return (np.arange(MNIST_COUNTS[prefix]) * 7 + (3 if prefix == "train" else 0)) % 10


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file as LeCun's: 0x0000, type 0x08 (unsigned bytes), ndim, big-endian dims, the data."""
    return b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_mnist(folder: Path, *, gz: bool) -> None:
    """train-* and t10k-* images-idx3-ubyte / labels-idx1-ubyte, gzipped (as shipped) or raw, into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in MNIST_COUNTS.items():
        images = np.stack([mnist_image(prefix, i) for i in range(n)])
        for name, array in ((f"{prefix}-images-idx3-ubyte", images),
                            (f"{prefix}-labels-idx1-ubyte", mnist_labels(prefix).astype(np.uint8))):
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(idx_bytes(array))
            else:
                (folder / name).write_bytes(idx_bytes(array))


@pytest.fixture
def mnist_root(tmp_path):
    """Tiny MNIST files in the official idx format, gzipped as shipped, in torchvision's root/MNIST/raw/ layout."""
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    return tmp_path


@pytest.fixture
def shared_mnist_root(tmp_path):
    """The shared MNIST test files, as shipped (.gz), in torchvision's root/MNIST/raw/ layout."""
    if not MNIST_TEST.is_dir():
        pytest.skip("shared MNIST test files absent")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in MNIST_TEST.glob("*.gz"):
        (raw / gz.name).symlink_to(gz)
    return tmp_path


LSUN_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


@pytest.fixture
def lsun_root(tmp_path):
    """bedroom_train_lmdb (3 JPEG, non-square), bedroom_val_lmdb (1 PNG), church_outdoor_train_lmdb (2 PNG)."""
    import lmdb

    def write(name, colours, fmt, size):
        env = lmdb.open(str(tmp_path / name), map_size=1 << 24)
        with env.begin(write=True) as txn:
            for i, colour in enumerate(colours):
                buf = io.BytesIO()
                Image.new("RGB", size, colour).save(buf, format=fmt)
                txn.put(f"{i:040x}".encode(), buf.getvalue())
        env.close()

    write("bedroom_train_lmdb", LSUN_COLOURS, "JPEG", (40, 30))
    write("bedroom_val_lmdb", LSUN_COLOURS[:1], "PNG", (30, 40))
    write("church_outdoor_train_lmdb", LSUN_COLOURS[1:], "PNG", (20, 20))
    return tmp_path


CELEBA_PARTITION = ["000001.jpg 0", "000002.jpg 0", "000003.jpg 0", "000004.jpg 1", "000005.jpg 2", "000006.jpg 2"]


def _grey(i: int) -> int:
    return 20 + 40 * i


@pytest.fixture
def celeba_root(tmp_path):
    """Six uniform grey 18x22 'faces' (image i has grey level 20 + 40 i) and the partition file."""
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (18, 22), (_grey(i),) * 3).save(folder / f"{i + 1:06d}.jpg", quality=95)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(CELEBA_PARTITION) + "\n")
    return tmp_path


@pytest.fixture
def folder_root(tmp_path):
    """train/{cat,dog}/ (2 + 1 images) and test/{cat,dog}/ (1 + 1), uniform colours by class."""
    colour = {"cat": (250, 0, 0), "dog": (0, 0, 250)}
    for split, counts in {"train": {"cat": 2, "dog": 1}, "test": {"cat": 1, "dog": 1}}.items():
        for cls, n in counts.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (24, 16), colour[cls]).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


@pytest.fixture
def flat_root(tmp_path):
    """Three images directly in the folder (a grey PNG, an RGB JPEG, a palette PNG), no class folders."""
    Image.new("L", (10, 12), 77).save(tmp_path / "a.png")
    Image.new("RGB", (12, 10), (10, 20, 30)).save(tmp_path / "b.jpg")
    Image.new("P", (8, 8), 3).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


# ----------------------------------------------------------------------------- every dataset: shapes and ranges

CASES = {  # name -> (fixture giving the root or None, split, number of items)
    "digits": (None, "test", 899),
    "mnist": ("mnist_root", "test", MNIST_COUNTS["t10k"]),
    "svhn": ("svhn_root", "test", 5),
    "cifar10": ("cifar_jpg_root", "test", 10 * 3),
    "lsun": ("lsun_root", "train", 3),
    "celeba": ("celeba_root", "all", 6),
    "folder": ("folder_root", "train", 3),
}


@pytest.fixture
def cifar_root():
    if not CIFAR_JPG.is_dir():
        pytest.skip("shared CIFAR-10 JPEG tree absent")
    return CIFAR_JPG


CIFAR_JPG_COUNTS = {"train": 2, "test": 3}  # images per class in the generated tree


@pytest.fixture
def cifar_jpg_root(tmp_path):
    """A tiny CIFAR-10 JPEG ImageFolder tree: {train,test}/<the 10 class names>/NNNN.jpg, 32 x 32 RGB noise."""
    rng = np.random.default_rng(3)
    for split, per_class in CIFAR_JPG_COUNTS.items():
        for cls in readers.CIFAR10_CLASSES:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i:04d}.jpg", quality=90)
    return tmp_path


def test_cases_cover_every_builtin():
    assert set(CASES) == {s.name for s in readers.builtin_sources()}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 64])
def test_shapes_dtypes_ranges(request, name, channels, size):
    fixture, split, count = CASES[name]
    root = request.getfixturevalue(fixture) if fixture else None
    dataset = api.open_split(name, split, data_root=root, image_size=size, channels=channels)
    assert len(dataset) == count
    source = api.dataset_source(name)
    for index in sorted({0, count - 1}):
        image, label = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (channels, size, size)
        assert isinstance(label, int)
        if source.num_classes is None:
            assert label == -1 or name == "folder"
        else:
            assert 0 <= label < source.num_classes
        assert int(image.max()) > 0  # something was decoded (no test image is all black)
    if size == 16 and channels == 3:  # spawned DataLoader workers receive the dataset pickled
        copy = pickle.loads(pickle.dumps(dataset))
        assert len(copy) == count and torch.equal(copy[0][0], dataset[0][0])


# ----------------------------------------------------------------------------- digits

def _digits_reference():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # x * 255 / 16 rounded half up, in integer arithmetic (independent of the module's float rounding)
    return (digits.images.astype(np.int64) * 255 + 8) // 16, digits.target


def test_digits_pixels_match_independent_computation():
    images, labels = api.load_split("digits", "all", image_size=8, channels=1, progress=False)
    expected, target = _digits_reference()
    assert images.shape == (1797, 1, 8, 8)
    assert torch.equal(images[:, 0].long(), torch.from_numpy(expected))
    assert torch.equal(labels, torch.from_numpy(target).long())
    assert int(images.max()) == 255 and int(images.min()) == 0


def test_digits_split_deterministic_stratified_disjoint():
    train = api.open_split("digits", "train", image_size=8, channels=1)
    test = api.open_split("digits", "test", image_size=8, channels=1)
    again = api.open_split("digits", "train", image_size=8, channels=1)
    tr, te = train.base.indices, test.base.indices
    assert len(tr) == 898 and len(te) == 899
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(1797))
    assert np.array_equal(tr, again.base.indices)
    expected, target = _digits_reference()
    assert set(target[tr]) == set(range(10)) == set(target[te])
    # stratified: per-class counts of the two halves differ by at most one
    assert np.abs(np.bincount(target[tr], minlength=10) - np.bincount(target[te], minlength=10)).max() <= 1
    image, label = test[5]  # items follow the indices into load_digits()
    assert label == target[te[5]] and torch.equal(image[0].long(), torch.from_numpy(expected[te[5]]))


def test_digits_upscaled_rgb_channels_are_equal():
    image, _ = api.open_split("digits", "all", image_size=32, channels=3)[0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_digits_has_no_variant():
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("digits:big")
    _assert_one_line_error(excinfo, "digits has no variants")


# ----------------------------------------------------------------------------- MNIST

@needs_mnist
def test_mnist_real_test_set(shared_mnist_root):
    mnist_root = shared_mnist_root
    dataset = api.open_split("mnist", "test", data_root=mnist_root, image_size=28, channels=1)
    assert len(dataset) == 10000
    image, label = dataset[0]
    assert label == 7  # the first MNIST test digit
    with gzip.open(MNIST_TEST / "t10k-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read(16 + 784)[16:], dtype=np.uint8).reshape(28, 28)
    assert torch.equal(image[0], torch.from_numpy(first.copy()))
    assert not any(p.suffix != ".gz" for p in (mnist_root / "MNIST" / "raw").iterdir())  # nothing extracted


@needs_mnist
def test_mnist_load_split_with_workers(shared_mnist_root):
    images, labels = api.load_split("mnist", "test", data_root=shared_mnist_root, image_size=16, channels=1,
                                    progress=False)
    assert images.shape == (10000, 1, 16, 16) and labels.dtype == torch.int64
    assert torch.equal(labels.bincount(), torch.tensor([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]))


@needs_mnist
def test_mnist_uncompressed_files_in_root_shared(tmp_path):
    for gz in MNIST_TEST.glob("*.gz"):
        with gzip.open(gz) as src, open(tmp_path / gz.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert api.open_split("mnist", "test", data_root=tmp_path)[0][1] == 7


@pytest.mark.parametrize("split, prefix", [("test", "t10k"), ("train", "train")])
def test_mnist_generated_gz_files_in_raw(mnist_root, split, prefix):
    """Every pixel and label of tiny official-format .gz files, read in place (nothing extracted)."""
    dataset = api.open_split("mnist", split, data_root=mnist_root, image_size=28, channels=1)
    assert len(dataset) == MNIST_COUNTS[prefix]
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert label == mnist_labels(prefix)[i] and isinstance(label, int)
        assert torch.equal(image[0], torch.from_numpy(mnist_image(prefix, i)))
    assert all(p.suffix == ".gz" for p in (mnist_root / "MNIST" / "raw").iterdir())  # nothing extracted


def test_mnist_generated_load_split_with_workers(mnist_root):
    images, labels = api.load_split("mnist", "train", data_root=mnist_root, image_size=16, channels=1, progress=False)
    assert images.shape == (MNIST_COUNTS["train"], 1, 16, 16) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == mnist_labels("train").tolist()
    expected = np.array(Image.fromarray(mnist_image("train", 5)).resize((16, 16), Image.BICUBIC))
    assert (images[5, 0].int() - torch.from_numpy(expected).int()).abs().max() <= 40  # resized, not another image
    assert (images[5, 0].int() - images[6, 0].int()).abs().max() > 40


def test_mnist_generated_raw_files_directly_in_root(tmp_path):
    write_mnist(tmp_path, gz=False)
    dataset = api.open_split("mnist", "test", data_root=tmp_path, image_size=28, channels=1)
    assert len(dataset) == MNIST_COUNTS["t10k"] and dataset[3][1] == mnist_labels("t10k")[3]
    assert torch.equal(dataset[3][0][0], torch.from_numpy(mnist_image("t10k", 3)))
    # torchvision's MNIST/raw/ wins over root when both hold the files
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(MNIST_COUNTS["t10k"], 9, np.uint8))))
    assert api.open_split("mnist", "test", data_root=tmp_path)[3][1] == 9


def test_mnist_train_missing_names_files_and_folder(tmp_path):
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("mnist", "train", data_root=tmp_path)
    # both places the files are read from
    _assert_one_line_error(excinfo, "train-images-idx3-ubyte", f"{tmp_path / 'MNIST' / 'raw'} or in {tmp_path} (",
                           "--data-root DIR", "--download")


def test_mnist_truncated_file(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") * 3 + b"\x00" * 7)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(GanlabError, match="truncated"):
        api.open_split("mnist", "test", data_root=tmp_path)


# ----------------------------------------------------------------------------- SVHN

def test_svhn_labels_and_pixels(svhn_root):
    import scipy.io

    X = scipy.io.loadmat(svhn_root / "test_32x32.mat")["X"]
    dataset = api.open_split("svhn", "test", data_root=svhn_root, image_size=32, channels=3)
    assert [dataset[i][1] for i in range(5)] == [0, 1, 2, 3, 4]  # 10 -> digit 0
    image, _ = dataset[3]
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(X[:, :, :, 3]))
    grey, _ = api.open_split("svhn", "test", data_root=svhn_root, image_size=32, channels=1)[3]
    assert torch.equal(grey[0], torch.from_numpy(np.array(Image.fromarray(X[:, :, :, 3]).convert("L"))))


def test_svhn_missing_file_message(tmp_path):
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "train", data_root=tmp_path)
    _assert_one_line_error(excinfo, "svhn: expected train_32x32.mat in", tmp_path, "--data-root DIR", "--download")


def test_svhn_requires_root():
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "test")
    _assert_one_line_error(excinfo, "--data-root is required for svhn")


def test_svhn_wrong_layout(tmp_path):
    import scipy.io

    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((5, 32, 32, 3), np.uint8), "y": np.ones((5, 1))})
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "test", data_root=tmp_path)
    _assert_one_line_error(excinfo, "expected X [32, 32, 3, N]")


# ----------------------------------------------------------------------------- CIFAR-10

@needs_cifar
def test_cifar10_jpeg_tree(cifar_root):
    dataset = api.open_split("cifar10", "train", data_root=cifar_root, image_size=32, channels=3)
    assert len(dataset) == 50000
    assert dataset.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    image, label = dataset[0]
    assert label == 0
    expected = np.array(Image.open(cifar_root / "train/airplane/0000.jpg"))
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(expected))
    assert dataset[49999][1] == 9 and dataset[5000 * 3][1] == 3


@needs_cifar
def test_cifar10_limit_is_deterministic_and_roughly_balanced(cifar_root):
    a_images, a_labels = api.load_split("cifar10", "test", data_root=cifar_root, limit=300, progress=False)
    b_images, b_labels = api.load_split("cifar10", "test", data_root=cifar_root, limit=300, progress=False)
    assert a_images.shape == (300, 3, 32, 32)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    counts = a_labels.bincount(minlength=10)
    assert counts.min() >= 10 and counts.max() <= 60  # a random subset, not the first 300 (all airplanes)
    assert torch.equal(a_labels, a_labels.sort().values)  # returned in dataset order


def test_cifar10_generated_jpeg_tree(cifar_jpg_root):
    dataset = api.open_split("cifar10", "train", data_root=cifar_jpg_root, image_size=32, channels=3)
    per_class = CIFAR_JPG_COUNTS["train"]
    assert len(dataset) == 10 * per_class and dataset.classes == list(readers.CIFAR10_CLASSES)
    assert [dataset[i][1] for i in range(len(dataset))] == [i // per_class for i in range(10 * per_class)]
    for index, cls, name in ((0, "airplane", "0000.jpg"), (7, "cat", "0001.jpg"), (19, "truck", "0001.jpg")):
        expected = np.array(Image.open(cifar_jpg_root / "train" / cls / name).convert("RGB"))
        assert torch.equal(dataset[index][0].permute(1, 2, 0), torch.from_numpy(expected)), (index, cls)
    assert len(api.open_split("cifar10", "test", data_root=cifar_jpg_root)) == 10 * CIFAR_JPG_COUNTS["test"]


def test_cifar10_generated_limit_is_a_fixed_subset_in_dataset_order(cifar_jpg_root):
    full_images, full_labels = api.load_split("cifar10", "test", data_root=cifar_jpg_root, progress=False)
    a_images, a_labels = api.load_split("cifar10", "test", data_root=cifar_jpg_root, limit=12, progress=False)
    b_images, b_labels = api.load_split("cifar10", "test", data_root=cifar_jpg_root, limit=12, progress=False)
    assert a_images.shape == (12, 3, 32, 32) and torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    keep = np.sort(np.random.default_rng(0).permutation(len(full_labels))[:12])  # the documented subset
    assert torch.equal(a_images, full_images[keep]) and torch.equal(a_labels, full_labels[keep])
    assert not torch.equal(a_labels, full_labels[:12])  # a random subset, not the first 12


def _py2_str(data: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle wrote it (SHORT_BINSTRING / BINSTRING)."""
    return b"U" + bytes([len(data)]) + data if len(data) < 256 else b"T" + struct.pack("<i", len(data)) + data


def py2_cifar_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch file as the official cifar-10-python.tar.gz has them: Python 2 cPickle, protocol 2, a dict of
    str keys, ``data`` a uint8 [N, 3072] array through ``numpy.core.multiarray._reconstruct``, ``labels`` a list."""
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
             + b"(K\x01M" + struct.pack("<H", len(data)) + b"M\x00\x0c\x86cnumpy\ndtype\n" + _py2_str(b"u1")
             + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
             + _py2_str(data.tobytes()) + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(b"testing batch") + _py2_str(b"data") + array
            + _py2_str(b"labels") + label_list + b"u.")


def _cifar_image(index: int) -> np.ndarray:
    """32 x 32 x 3 uint8, different for every index and channel."""
    return ((np.arange(32 * 32 * 3).reshape(32, 32, 3) * (index + 1) + 7 * index) % 256).astype(np.uint8)


def py3_cifar_batch(data: np.ndarray, labels: list[int], protocol: int) -> bytes:
    """A batch as Python 3 pickles the same dict (what re-saved copies of the official files hold): bytes keys,
    ``b"data"`` uint8 [N, 3072], ``b"labels"`` a list."""
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": data,
             b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=protocol)


@pytest.fixture(params=["python2", "python3-protocol2", "python3-protocol5"])
def cifar_batches_root(tmp_path, request):
    """cifar-10-batches-py/ with data_batch_1..5 (2 images each, labels 0..9) and test_batch (3 images), written
    as the official archive's Python 2 cPickle, or as Python 3 pickles of the same dict."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        indices = [3 * b, 3 * b + 1, 3 * b + 2] if name == "test_batch" else [2 * b, 2 * b + 1]
        rows = np.stack([_cifar_image(i).transpose(2, 0, 1).reshape(-1) for i in indices])  # R plane, G, B
        labels = [i % 10 for i in indices]
        if request.param == "python2":
            (folder / name).write_bytes(py2_cifar_batch(rows, labels))
        else:
            (folder / name).write_bytes(py3_cifar_batch(rows, labels, int(request.param[-1])))
    return tmp_path


def test_cifar10_python_batches(cifar_batches_root):
    """The official python version, read by ganlab's own restricted unpickler (no md5, no pickle.load)."""
    train = api.open_split("cifar10", "train", data_root=cifar_batches_root, image_size=32, channels=3)
    assert len(train) == 10 and train.classes == list(readers.CIFAR10_CLASSES)
    assert [train[i][1] for i in range(10)] == list(range(10))
    for i in (0, 9):
        assert torch.equal(train[i][0].permute(1, 2, 0), torch.from_numpy(_cifar_image(i)))
    images, labels = api.load_split("cifar10", "test", data_root=cifar_batches_root, progress=False)
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [5, 6, 7]
    assert torch.equal(images[2].permute(1, 2, 0), torch.from_numpy(_cifar_image(17)))
    (cifar_batches_root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("cifar10", "train", data_root=cifar_batches_root)
    _assert_one_line_error(excinfo, "missing data_batch_4", cifar_batches_root, "--data-root DIR")


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("cifar10", "test", data_root=tmp_path)
    _assert_one_line_error(excinfo, "cifar-10-batches-py", tmp_path, "--data-root DIR")


def test_cifar10_tree_with_wrong_classes(folder_root):
    with pytest.raises(GanlabError, match="expected airplane, automobile"):
        api.open_split("cifar10", "train", data_root=folder_root)


# ----------------------------------------------------------------------------- LSUN

def test_lsun_tiny_lmdb(lsun_root, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    dataset = api.open_split("lsun", "train", data_root=lsun_root, image_size=16, channels=3)
    assert len(dataset) == 3
    for i, colour in enumerate(LSUN_COLOURS):
        image, label = dataset[i]
        assert label == -1
        assert (image.float().mean(dim=(1, 2)) - torch.tensor(colour)).abs().max() < 4  # JPEG of a flat colour
    church = api.open_split("lsun:church_outdoor", "train", data_root=lsun_root, image_size=8, channels=1)
    assert len(church) == 2
    assert len(api.open_split("lsun", "val", data_root=lsun_root)) == 1
    assert list(cwd.iterdir()) == [] and not list(lsun_root.glob("_cache_*"))  # no key cache written anywhere
    copy = pickle.loads(pickle.dumps(dataset))  # what a spawned DataLoader worker receives
    assert torch.equal(copy[2][0], dataset[2][0])


def _assert_no_inherited_lmdb(worker_id):
    # LMDB forbids using a handle across fork(): each worker must start with none and open its own.
    if list(readers._LMDB_ENVS):
        raise AssertionError(f"worker {worker_id} inherited open lmdb environments")


def test_lsun_in_forked_workers_after_parent_read(lsun_root):
    # lmdb refuses to reopen files a parent process had open; workers must still read them.
    dataset = api.open_split("lsun", "train", data_root=lsun_root, image_size=8)
    first = dataset[0][0]  # the parent now holds the environment open
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork",
                                         worker_init_fn=_assert_no_inherited_lmdb)
    batches = list(loader)
    assert len(batches) == 3 and torch.equal(batches[0][0][0], first)
    assert torch.equal(dataset[1][0], batches[1][0][0])  # and the parent can read again


def test_lsun_missing_category(lsun_root):
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("lsun:tower", "train", data_root=lsun_root)
    _assert_one_line_error(excinfo, "tower_train_lmdb/data.mdb", lsun_root, "bedroom_train_lmdb", "--data-root DIR")


def test_lsun_without_lmdb_package(lsun_root, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lmdb", None)  # makes `import lmdb` fail
    with pytest.raises(GanlabError, match="pip install lmdb"):
        api.open_split("lsun", "train", data_root=lsun_root)


def test_lsun_bad_category_name(lsun_root):
    with pytest.raises(GanlabError, match="bad category"):
        api.open_split("lsun:../x", "train", data_root=lsun_root)


# ----------------------------------------------------------------------------- CelebA

def test_celeba_partition(celeba_root):
    def greys(split):
        dataset = api.open_split("celeba", split, data_root=celeba_root, image_size=8, channels=1)
        assert all(dataset[i][1] == -1 for i in range(len(dataset)))
        return [round(dataset[i][0].float().mean().item()) for i in range(len(dataset))]

    def close(measured, indices):
        return len(measured) == len(indices) and all(abs(m - _grey(i)) <= 3 for m, i in zip(measured, indices))

    assert close(greys("train"), [0, 1, 2])
    assert close(greys("valid"), [3])
    assert close(greys("test"), [4, 5])
    assert close(greys("all"), range(6))


def test_celeba_missing_partition_and_images(celeba_root, tmp_path):
    (celeba_root / "celeba" / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("celeba", "test", data_root=celeba_root)
    _assert_one_line_error(excinfo, "1 images listed", "000005.jpg")
    (celeba_root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("celeba", "train", data_root=celeba_root)
    _assert_one_line_error(excinfo, "list_eval_partition.txt", celeba_root, "--data-root DIR")


# ----------------------------------------------------------------------------- folder

def test_folder_with_class_subfolders(folder_root):
    train = api.open_split("folder", "train", data_root=folder_root, image_size=8)
    assert train.classes == ["cat", "dog"]
    assert [train[i][1] for i in range(3)] == [0, 0, 1]
    assert train[0][0][:, 4, 4].tolist() == [250, 0, 0] and train[2][0][:, 4, 4].tolist() == [0, 0, 250]
    assert [api.open_split("folder", "test", data_root=folder_root)[i][1] for i in range(2)] == [0, 1]


def test_folder_flat(flat_root):
    dataset = api.open_split("folder", "train", data_root=flat_root, image_size=4, channels=3)
    assert len(dataset) == 3  # notes.txt skipped
    assert [dataset[i][1] for i in range(3)] == [-1, -1, -1]
    assert dataset[0][0][:, 0, 0].tolist() == [77, 77, 77]  # grey PNG replicated to RGB
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("folder", "test", data_root=flat_root)
    _assert_one_line_error(excinfo, "no 'test' sub-folder", flat_root)


def test_folder_empty(tmp_path):
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("folder", "train", data_root=tmp_path)
    _assert_one_line_error(excinfo, "image files", tmp_path)


# ----------------------------------------------------------------------------- lookup, options, helpers

def test_unknown_dataset_and_split():
    with pytest.raises(GanlabError) as excinfo:
        api.dataset_source("imagenet")
    _assert_one_line_error(excinfo, "unknown dataset 'imagenet'", "celeba, cifar10, digits, folder, lsun, mnist, svhn")
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("digits", "valid")
    _assert_one_line_error(excinfo, "unknown split 'valid'", "train, test, all")
    assert api.dataset_source("lsun:church_outdoor").name == "lsun"


def test_bad_channels_and_size():
    with pytest.raises(GanlabError, match="channels"):
        api.open_split("digits", channels=2)
    with pytest.raises(GanlabError, match="image size"):
        api.open_split("digits", image_size=0)


def test_nothing_downloaded_without_download(tmp_path):
    for name in ("mnist", "svhn", "cifar10", "celeba"):
        with pytest.raises(GanlabError):
            api.open_split(name, "test", data_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_split_limit_is_a_fixed_subset():
    full_images, full_labels = api.load_split("digits", "all", image_size=8, channels=1, progress=False)
    a_images, a_labels = api.load_split("digits", "all", image_size=8, channels=1, limit=100, progress=False)
    b_images, b_labels = api.load_split("digits", "all", image_size=8, channels=1, limit=100, progress=False)
    small_images, _ = api.load_split("digits", "all", image_size=8, channels=1, limit=40, progress=False)
    assert a_images.shape == (100, 1, 8, 8) and torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    keep = np.sort(np.random.default_rng(0).permutation(1797)[:100])
    assert torch.equal(a_images, full_images[keep]) and torch.equal(a_labels, full_labels[keep])
    rows = {tuple(x.flatten().tolist()) for x in a_images}
    assert all(tuple(x.flatten().tolist()) in rows for x in small_images)  # smaller limit = subset
    assert len(set(a_labels.tolist())) == 10
    assert api.load_split("digits", "all", limit=5000, progress=False)[0].shape[0] == 1797
    with pytest.raises(GanlabError, match="limit"):
        api.load_split("digits", limit=0)


def test_to_unit_range_endpoints():
    out = ganlab.to_unit_range(torch.tensor([0, 255, 128], dtype=torch.uint8))
    assert out.dtype == torch.float32
    assert out[0].item() == -1.0 and out[1].item() == 1.0 and abs(out[2].item() - 0.00392) < 1e-4
    with pytest.raises(TypeError):
        ganlab.to_unit_range(torch.zeros(3))


def test_hookimpl_registers_every_builtin():
    pm = pluggy.PluginManager("ganlab")
    pm.add_hookspecs(hookspecs)
    pm.register(core_plugin)
    registered = []
    pm.hook.ganlab_register_datasets(register=registered.append)
    assert [s.name for s in registered] == ["digits", "mnist", "svhn", "cifar10", "lsun", "celeba", "folder"]
    assert all(isinstance(s, ds.DatasetSource) and "\n" not in s.description for s in registered)


def test_registry_knows_builtins(monkeypatch):
    monkeypatch.undo()  # use the real lookup through ganlab.plugin.registry
    from ganlab.plugin.registry import get_registry

    datasets = get_registry(reload=True).datasets
    assert {"digits", "cifar10", "folder"} <= set(datasets)
    assert api.dataset_source("digits") is datasets["digits"]


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(url, root, filename, md5):
        raise OSError("<urlopen error [Errno -2] Name or service not known>\nsecond line")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "test", data_root=tmp_path, download=True)
    _assert_one_line_error(excinfo, "svhn: download into", tmp_path, "Name or service not known> second line")


def test_public_split_functions_name_the_data_folder_as_the_cli_does(tmp_path):
    import inspect

    for function in (ganlab.open_split, ganlab.load_split):
        params = inspect.signature(function).parameters
        assert "data_root" in params and "root" not in params, function.__name__
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values())  # nothing passed through unchecked
    with pytest.raises(TypeError):
        ganlab.load_split("digits", "test", root=tmp_path)
