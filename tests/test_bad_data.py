"""Bad dataset input: every broken file gives a one-line GanlabError naming it and the problem, never a raw
exception, and nothing is silently wrong (clipped pixels, counted twice, looping walks, code run from a pickle).

Each test builds its own small bad files.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import ganlab.api as api
import ganlab.data.builtin_datasets as readers
import ganlab.data.datasets as ds
from ganlab.data.image_files import FileImages, ImageTree, image_files
from ganlab.data.pixel_formats import SKIP_HINT, BadImageError
from ganlab.errors import GanlabError


@pytest.fixture(autouse=True)
def builtin_only(monkeypatch):
    """Look names up in the built-ins, so these tests do not depend on other plugins in the environment."""
    sources = {s.name: s for s in readers.builtin_sources()}
    monkeypatch.setattr(api, "dataset_source", lambda name: sources[name.partition(":")[0]])


def _one_line(excinfo, *parts) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message, message
    for part in parts:
        assert str(part) in message, (part, message)
    return message


def _png(path, colour=(250, 0, 0), size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _jpeg_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _png_bytes(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- 1. image files

def _corrupt_png() -> bytes:
    data = bytearray(_png_bytes())
    idat = data.index(b"IDAT") + 4
    data[idat + 10:idat + 400] = bytes(390)  # zeroed compressed data: a valid header, an undecodable body
    return bytes(data)


BAD_FILES = {  # name -> (how to make it, words the message must hold)
    "truncated.jpg": (lambda p: p.write_bytes(_jpeg_bytes()[:600]), "truncated or corrupt image"),
    "truncated.png": (lambda p: p.write_bytes(_png_bytes()[:300]), "truncated or corrupt image"),
    "corrupt.png": (lambda p: p.write_bytes(_corrupt_png()), "truncated or corrupt image"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "text.png": (lambda p: p.write_text("this is not a picture\n" * 20), "not an image"),
    "dangling.jpg": (lambda p: p.symlink_to(p.parent / "gone.jpg"), "broken symlink"),
    "loop.jpg": (lambda p: p.symlink_to(p), "symlink loop"),
    "pipe.png": (lambda p: os.mkfifo(p), "not a regular file"),  # opening it would block for ever
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_image_file_is_one_line_error_with_path_and_hint(tmp_path, name):
    make, problem = BAD_FILES[name]
    root = tmp_path / "pics"
    _png(root / "train" / "cat" / "0.png")
    bad = root / "train" / "cat" / name
    make(bad)
    dataset = api.open_split("folder", "train", data_root=root, image_size=8)
    assert len(dataset) == 2  # the bad file is listed, not silently left out
    index = [os.path.basename(p) for p, _ in dataset.base.samples].index(name)
    with pytest.raises(BadImageError) as excinfo:
        dataset[index]
    _one_line(excinfo, f"{bad}: {problem}", SKIP_HINT)
    with pytest.raises(GanlabError) as excinfo:
        api.load_split("folder", "train", data_root=root, image_size=8, progress=False)
    _one_line(excinfo, f"{bad}: {problem}", SKIP_HINT)


@pytest.mark.parametrize("pixels, kind", [(24 * 24, "error"), (14 * 14, "warning")])
def test_decompression_bomb_error_and_warning_both_refused(tmp_path, monkeypatch, pixels, kind):
    side = int(pixels ** 0.5)
    path = _png(tmp_path / "big.png", size=(side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # error above 200 pixels, warning above 100
    with pytest.raises(BadImageError) as excinfo:
        FileImages([path])[0]
    _one_line(excinfo, path, f"image too large (decompression bomb guard, {pixels:,} pixels", SKIP_HINT)


class _OneSource:
    """A DatasetSource over the given files, so load_split's worker path (n > 2000) is cheap to reach."""

    @staticmethod
    def of(dataset) -> ds.DatasetSource:
        return ds.DatasetSource("files", "test files", ("train",), None, "files", lambda *args: dataset)


def test_bad_image_in_dataloader_workers_is_a_plain_one_line_error(tmp_path):
    good, bad = _png(tmp_path / "good.png"), tmp_path / "bad.jpg"
    bad.write_bytes(_jpeg_bytes()[:500])
    paths = [good] * 2100
    paths[1500] = bad
    source = _OneSource.of(FileImages(paths))
    with pytest.raises(GanlabError) as excinfo:  # 2100 > 2000 images: decoded in worker processes
        ds.load_split(source, image_size=8, progress=False)
    message = _one_line(excinfo, bad, "truncated or corrupt image", SKIP_HINT)
    assert "worker" not in message and type(excinfo.value) is BadImageError
    assert str(pickle.loads(pickle.dumps(excinfo.value))) == message  # as a worker would send it

    report = {}
    images, labels = ds.load_split(source, image_size=8, progress=False, skip_bad=True, report=report)
    assert images.shape == (2099, 3, 8, 8) and labels.shape == (2099,)
    assert report["skipped"] == 1 and report["total"] == 2100 and report["first"].startswith(f"{bad}: truncated")


class _FailsAt(torch.utils.data.Dataset):
    def __len__(self):
        return 2001

    def __getitem__(self, index):
        if index == 2000:
            raise GanlabError("item 2000: something the user can fix")
        return np.zeros((4, 4), np.uint8), 0


def test_other_ganlab_error_in_workers_stays_one_line_and_is_not_skipped():
    with pytest.raises(GanlabError) as excinfo:
        ds.load_split(_OneSource.of(_FailsAt()), image_size=4, channels=1, progress=False, skip_bad=True)
    assert str(excinfo.value) == "item 2000: something the user can fix"


# ----------------------------------------------------------------------------- 2. skipping

def test_skip_bad_drops_images_keeps_labels_aligned_and_reports(tmp_path, capsys):
    root = tmp_path / "pics"
    _png(root / "cat" / "0.png", (250, 0, 0))
    (root / "cat" / "1.jpg").write_bytes(_jpeg_bytes()[:500])
    _png(root / "cat" / "2.png", (200, 0, 0))
    (root / "dog").mkdir()
    (root / "dog" / "0.png").write_bytes(b"")
    _png(root / "dog" / "1.png", (0, 0, 250))
    report = {}
    images, labels = ds.load_split(api.dataset_source("folder"), "all", root=root, image_size=8, progress=False,
                                   skip_bad=True, report=report)
    assert labels.tolist() == [0, 0, 1]
    assert [images[i][:, 0, 0].tolist() for i in range(3)] == [[250, 0, 0], [200, 0, 0], [0, 0, 250]]
    assert report["skipped"] == 2 and report["total"] == 5
    assert report["positions"] == [0, 2, 4] and report["unreadable"] == [1, 3]  # in the whole split
    assert report["first"].startswith(f"{root / 'cat' / '1.jpg'}: truncated or corrupt image (")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"skipped 2 unreadable images of 5 in folder/all (first: {report['first']})"]
    clean = {}
    ds.load_split(api.dataset_source("folder"), root=root / "cat", image_size=8, progress=False, report=clean,
                  limit=1)
    assert clean == {"skipped": 0, "total": 1, "first": None, "positions": [2], "unreadable": []}


def test_skip_bad_with_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_text("no")
    with pytest.raises(GanlabError) as excinfo:
        api.load_split("folder", data_root=tmp_path, image_size=8, progress=False, skip_bad=True)
    _one_line(excinfo, "all 2 images in folder/train are unreadable", tmp_path / "a.png")


# ----------------------------------------------------------------------------- 3. folder walks

def test_symlink_loops_end_and_each_file_counts_once(tmp_path):
    root = tmp_path / "pics"
    _png(root / "cat" / "a.png")
    _png(root / "cat" / "sub" / "b.png")
    (root / "cat" / "sub" / "loop").symlink_to(root / "cat")  # a loop inside a class
    (root / "cat" / "up").symlink_to(root)  # a link back to the root
    _png(root / "dog" / "c.png", (0, 0, 250))
    (root / "dog" / "same.png").symlink_to(root / "dog" / "c.png")  # two names, one file
    (root / "dog" / "cats").symlink_to(root / "cat")  # a folder reached twice
    (root / "dog" / "._c.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork: hidden, ignored
    outside = _png(tmp_path / "elsewhere" / "d.png")
    (root / "dog" / "more").symlink_to(outside.parent)  # a symlinked folder outside the tree is followed
    tree = ImageTree(root)
    files = [os.path.relpath(p, root) for p, _ in tree.samples]
    assert tree.classes == ["cat", "dog"]
    assert files == ["cat/a.png", "cat/sub/b.png", "dog/c.png", "dog/more/d.png"]
    assert tree.targets == [0, 0, 1, 1]
    assert len(api.open_split("folder", "all", data_root=root, image_size=8)) == 4


def test_a_link_into_another_class_does_not_take_its_images(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    (tmp_path / "cat" / "friends").symlink_to(tmp_path / "dog")
    tree = ImageTree(tmp_path)
    assert [(os.path.relpath(p, tmp_path), label) for p, label in tree.samples] == [("cat/a.png", 0), ("dog/b.png", 1)]


def test_flat_folder_counts_linked_files_once_and_keeps_broken_links(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "c.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / ".hidden.png").write_bytes(b"")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "c.png"]


def test_class_folder_with_only_duplicates_is_an_error(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    (tmp_path / "kitten").symlink_to(tmp_path / "cat")
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("folder", "all", data_root=tmp_path)
    _one_line(excinfo, "kitten has no", tmp_path)


# ----------------------------------------------------------------------------- 4. pixel formats

def _grey_through_split(tmp_path, image: Image.Image, suffix=".png", channels=1) -> np.ndarray:
    folder = tmp_path / "one"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    image.save(folder / f"x{suffix}")
    tensor, _ = api.open_split("folder", data_root=folder, image_size=image.size[0], channels=channels)[0]
    return tensor.numpy()


def _u16(values, mode="I;16"):
    array = np.array(values, dtype=np.uint16)
    if mode == "I;16B":
        return Image.frombytes("I;16B", array.shape[::-1], array.astype(">u2").tobytes())
    return Image.fromarray(array)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    image = _u16([[0, 32768], [65535, 257]])
    assert Image.open(io.BytesIO(_save(image, "PNG"))).mode == "I;16"
    assert _grey_through_split(tmp_path, image)[0].tolist() == [[0, 128], [255, 1]]


@pytest.mark.parametrize("maxval, dark", [(65535, [[0, 100], [200, 240]]), (1023, [[0, 1], [2, 3]])])
def test_a_dark_16bit_pgm_is_scaled_by_its_maxval_not_read_as_8bit(tmp_path, maxval, dark):
    """Pillow reads a PGM deeper than 8 bits as 'I' on a 0..65535 scale; a dark one holds no value over 255 there."""
    for folder, pixels in (("dark", dark), ("bright", [[0, 100], [200, maxval]])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.pgm").write_bytes(b"P5\n2 2\n%d\n" % maxval + np.array(pixels, ">u2").tobytes())
        image, _ = api.open_split("folder", data_root=tmp_path / folder, image_size=2, channels=1)[0]
        expected = np.array(pixels) / maxval * 255
        assert np.abs(image[0].numpy() - expected).max() <= 0.51, folder


def test_16bit_rgb_png_keeps_the_high_byte(tmp_path):
    """Pillow opens 16-bit colour PNGs as 8-bit RGB itself, taking the high byte: scaled, not clipped."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + np.array([0, 32768, 65535, 65535, 40000, 1000], ">u2").tobytes()  # filter 0, two RGB pixels
    header = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)  # 2 x 2, 16 bits, colour type 2 (RGB)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * 2)) + chunk(b"IEND", b"")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "x.png").write_bytes(png)
    image, _ = api.open_split("folder", data_root=tmp_path / "one", image_size=2, channels=3)[0]
    assert image[:, 0, 0].tolist() == [0, 128, 255] and image[:, 0, 1].tolist() == [255, 156, 3]


def _save(image, fmt) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_16bit_big_endian_tiff(tmp_path):
    image = _u16([[0, 32768], [65535, 1000]], "I;16B")
    assert Image.open(io.BytesIO(_save(image, "TIFF"))).mode == "I;16B"
    assert _grey_through_split(tmp_path, image, ".tif")[0].tolist() == [[0, 128], [255, 4]]


@pytest.mark.parametrize("values, expected", [([[0, 100], [255, 7]], [[0, 100], [255, 7]]),  # 8-bit data, kept
                                              ([[0, 32768], [65535, 256]], [[0, 128], [255, 1]])])  # 16-bit
def test_32bit_integer_mode_I(tmp_path, values, expected):
    image = Image.fromarray(np.array(values, dtype=np.int32))
    assert image.mode == "I"
    assert _grey_through_split(tmp_path, image, ".tif")[0].tolist() == expected


@pytest.mark.parametrize("values, found", [([[0, -5], [3, 4]], "-5..4"), ([[0, 70000], [3, 4]], "0..70000")])
def test_mode_I_out_of_range_is_refused(tmp_path, values, found):
    with pytest.raises(BadImageError) as excinfo:
        _grey_through_split(tmp_path, Image.fromarray(np.array(values, dtype=np.int32)), ".tif")
    _one_line(excinfo, tmp_path / "one" / "x.tif", f"pixels range {found}")


@pytest.mark.parametrize("values, expected", [([[0.0, 0.5], [1.0, 0.25]], [[0, 128], [255, 64]]),
                                              ([[0.0, 2.5], [254.4, 255.0]], [[0, 3], [254, 255]])])
def test_float_tiff_in_unit_or_byte_range(tmp_path, values, expected):
    image = Image.fromarray(np.array(values, dtype=np.float32))
    assert image.mode == "F"
    assert _grey_through_split(tmp_path, image, ".tiff")[0].tolist() == expected  # 0.5 -> 128: round half up


@pytest.mark.parametrize("value, found", [(-0.5, "-0.5..1"), (300.0, "0..300"), (np.nan, "NaN"),
                                          (np.inf, "infinite")])
def test_float_tiff_out_of_range_is_refused(tmp_path, value, found):
    image = Image.fromarray(np.array([[0.0, value], [1.0, 0.5]], dtype=np.float32))
    with pytest.raises(BadImageError) as excinfo:
        _grey_through_split(tmp_path, image, ".tif")
    _one_line(excinfo, tmp_path / "one" / "x.tif", found, SKIP_HINT)


def test_palette_with_transparency_alpha_cmyk_and_1bit(tmp_path):
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 1), 0)
    palette.info["transparency"] = 1  # colour 1 transparent: its colour is kept all the same
    assert _grey_through_split(tmp_path, palette, channels=3)[:, 0, 0].tolist() == [10, 20, 30]
    rgba = Image.new("RGBA", (2, 2), (40, 50, 60, 0))  # fully transparent: colour channels as stored
    assert _grey_through_split(tmp_path, rgba, channels=3)[:, 0, 0].tolist() == [40, 50, 60]
    la = Image.new("LA", (2, 2), (90, 10))
    assert _grey_through_split(tmp_path, la)[0, 0, 0] == 90
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink: white
    assert _grey_through_split(tmp_path, cmyk, ".jpg", channels=3)[:, 0, 0].tolist() == [255, 255, 255]
    one_bit = Image.fromarray(np.array([[True, False], [False, True]]))
    assert one_bit.mode == "1"
    assert _grey_through_split(tmp_path, one_bit)[0].tolist() == [[255, 0], [0, 255]]


def test_arrays_from_a_plugin_dataset_follow_the_same_rules():
    class Arrays(torch.utils.data.Dataset):
        items = [np.array([[0.0, 0.5], [1.0, 1.0]]), np.array([[0, 300], [0, 0]], np.int16)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, index):
            return self.items[index], 0

    split = ds.open_split(_OneSource.of(Arrays()), image_size=2, channels=1)
    assert split[0][0][0].tolist() == [[0, 128], [255, 255]]
    with pytest.raises(BadImageError) as excinfo:
        split[1]
    _one_line(excinfo, "files/train item 1", "int16 pixels range 0..300")


# ----------------------------------------------------------------------------- 5. official-format files: MNIST

def _idx(array: np.ndarray, type_code=0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist(tmp_path, images: bytes | None = None, labels: bytes | None = None, gz=False):
    good_images = _idx(np.full((3, 28, 28), 9, np.uint8))
    good_labels = _idx(np.array([7, 2, 1], np.uint8))
    for name, data in (("t10k-images-idx3-ubyte", images or good_images), ("t10k-labels-idx1-ubyte",
                                                                           labels or good_labels)):
        (tmp_path / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return tmp_path


def test_mnist_tiny_files_are_read(tmp_path):
    dataset = api.open_split("mnist", "test", data_root=_mnist(tmp_path, gz=True), image_size=28, channels=1)
    assert [dataset[i][1] for i in range(3)] == [7, 2, 1] and int(dataset[0][0].max()) == 9


MNIST_BAD = {  # case -> (images bytes, labels bytes, words)
    "bad magic": (b"\x12\x34\x56\x78" + bytes(100), None, "bad magic number 12345678"),
    "not ubyte": (_idx(np.zeros((3, 28, 28)), 0x0D), None, "holds floats, not unsigned bytes"),
    "wrong dims": (_idx(np.zeros(3 * 28 * 28)), None, "has 1 dimensions, expected 3"),
    "short header": (bytes([0, 0, 8, 3, 0, 0]), None, "header is cut short"),
    "truncated": (_idx(np.zeros((3, 28, 28)))[:-5], None, "is truncated (2347 bytes"),
    "trailing": (_idx(np.zeros((3, 28, 28))) + b"xx", None, "has 2 bytes after the data"),
    "count mismatch": (None, _idx(np.array([1, 2], np.uint8)), "holds 3 images but t10k-labels-idx1-ubyte 2"),
    "label 12": (None, _idx(np.array([1, 12, 3], np.uint8)), "labels above 9 (1 of them, first 12 at index 1)"),
    "no pixels": (_idx(np.zeros((3, 28, 0), np.uint8)), None, "holds items of shape [28, 0], which have no pixels"),
}


@pytest.mark.parametrize("case", sorted(MNIST_BAD))
def test_mnist_malformed_idx(tmp_path, case):
    images, labels, words = MNIST_BAD[case]
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("mnist", "test", data_root=_mnist(tmp_path, images, labels))
    _one_line(excinfo, "mnist:", tmp_path, words)


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "bad crc"])
def test_mnist_damaged_gz_says_so(tmp_path, damage):
    _mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "not gzip": b"plain text, not gzip" * 10,
                      "bad crc": data[:-8] + bytes(4) + data[-4:]}[damage])
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("mnist", "test", data_root=tmp_path)
    _one_line(excinfo, path, "is a truncated or corrupt .gz file")


# ----------------------------------------------------------------------------- SVHN

def _svhn(tmp_path, **variables):
    import scipy.io

    mat = {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [2], [10], [4]], np.uint8)}
    mat.update(variables)
    for key in [k for k, v in mat.items() if v is None]:
        del mat[key]
    scipy.io.savemat(tmp_path / "test_32x32.mat", mat)
    return tmp_path / "test_32x32.mat"


SVHN_BAD = {  # case -> (variables, words)
    "no X": ({"X": None}, "has no X (variables found: y)"),
    "no y": ({"y": None, "Z": np.zeros(2)}, "has no y (variables found: X, Z)"),
    "X 3-D": ({"X": np.zeros((32, 32, 4), np.uint8)}, "expected X [32, 32, 3, N]"),
    "y length": ({"y": np.ones((5, 1), np.uint8)}, "has X [32, 32, 3, 4] and y [5, 1]; expected X [32, 32, 3, N]"),
    "y matrix": ({"y": np.ones((2, 2), np.uint8)}, "and y [2, 2]; expected"),
    "label 0": ({"y": np.array([[1], [0], [3], [4]])}, "not the digits 1..10 (1 of them, first 0 at index 1)"),
    "label 11": ({"y": np.array([[11], [2], [3], [11]])}, "not the digits 1..10 (2 of them, first 11"),
    "NaN label": ({"y": np.array([[1.0], [np.nan], [3.0], [4.0]])}, "not the digits 1..10 (1 of them, first nan at"),
    "fraction": ({"y": np.array([[1.5], [2.0], [3.0], [4.0]])}, "not the digits 1..10 (1 of them, first 1.5 at"),
    "text y": ({"y": np.array(["a", "b", "c", "d"])}, "not the digits 1..10 (4 of them, first a at index 0)"),
    "X uint16": ({"X": np.full((32, 32, 3, 4), 300, np.uint16)}, "X: uint16 pixels range 300..300"),
    "X float": ({"X": np.full((32, 32, 3, 4), -1.0)}, "X: float pixels range -1..-1"),
    "X empty": ({"X": np.zeros((32, 0, 3, 4), np.uint8)}, "has X [32, 0, 3, 4] and y [4, 1]; expected X [32, 32"),
}


@pytest.mark.parametrize("case", sorted(SVHN_BAD))
def test_svhn_malformed_mat(tmp_path, case):
    variables, words = SVHN_BAD[case]
    path = _svhn(tmp_path, **variables)
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "test", data_root=tmp_path)
    _one_line(excinfo, "svhn:", path, words)


def test_svhn_not_a_mat_file(tmp_path):
    (tmp_path / "test_32x32.mat").write_bytes(b"<html>404 not found</html>" * 20)
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("svhn", "test", data_root=tmp_path)
    _one_line(excinfo, tmp_path / "test_32x32.mat", "is not a readable MATLAB .mat file")


@pytest.mark.parametrize("X, expected", [(np.full((32, 32, 3, 4), 0.5), 128), (np.full((32, 32, 3, 4), 200.0), 200),
                                         (np.full((32, 32, 3, 4), 77, np.int32), 77)])
def test_svhn_non_uint8_pixels_converted(tmp_path, X, expected):
    _svhn(tmp_path, X=X, y=np.array([[1.0], [2.0], [10.0], [4.0]]))
    dataset = api.open_split("svhn", "test", data_root=tmp_path, image_size=32)
    assert [dataset[i][1] for i in range(4)] == [1, 2, 0, 4]
    assert dataset[0][0].unique().tolist() == [expected]


# ----------------------------------------------------------------------------- CIFAR-10 python batches

def _cifar(tmp_path, test_batch: bytes) -> object:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    (folder / "test_batch").write_bytes(test_batch)
    return folder / "test_batch"


def _batch(data=None, labels=(1, 2), protocol=2, **extra) -> bytes:
    data = np.full((2, 3072), 60, np.uint8) if data is None else data
    return pickle.dumps({b"batch_label": b"test", b"data": data, b"labels": list(labels), **extra}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_pickled_by_python3_are_read(tmp_path, protocol):
    _cifar(tmp_path, _batch(protocol=protocol))
    images, labels = api.load_split("cifar10", "test", data_root=tmp_path, progress=False)
    assert labels.tolist() == [1, 2] and images.unique().tolist() == [60]


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker file


def test_cifar_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = _cifar(tmp_path, _batch(extra=_Hostile(marker)))
    assert b"open" in path.read_bytes() and not marker.exists()
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("cifar10", "test", data_root=tmp_path)
    _one_line(excinfo, path, "refused: would run code", "io.open")
    assert not marker.exists()


def test_cifar_refuses_codecs_beyond_latin1(tmp_path):
    payload = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x09\x00\x00\x00rot13_xyz\x86R."
    path = _cifar(tmp_path, payload)
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("cifar10", "test", data_root=tmp_path)
    _one_line(excinfo, path, "refused: would run code")


CIFAR_BAD = {  # case -> (file bytes, words)
    "truncated": (_batch()[:3000], "is truncated or not a CIFAR-10 python batch"),
    "not a pickle": (b"PK\x03\x04 a zip file, say" * 10, "is truncated or not a CIFAR-10 python batch"),
    "empty": (b"", "is truncated or not a CIFAR-10 python batch (EOFError"),
    "a list": (pickle.dumps([1, 2], protocol=2), "holds a list, not a CIFAR-10 batch"),
    "wrong shape": (_batch(np.zeros((2, 100), np.uint8)), "has 'data' uint8 [2, 100]; expected uint8 [N, 3072]"),
    "float data": (_batch(np.zeros((2, 3072))), "has 'data' float64 [2, 3072]"),
    "label count": (_batch(labels=(1,)), "has 1 labels for 2 images"),
    "label 10": (_batch(labels=(1, 10)), "labels outside 0..9 (1 of them, first 10 at index 1)"),
}


@pytest.mark.parametrize("case", sorted(CIFAR_BAD))
def test_cifar_malformed_batch(tmp_path, case):
    data, words = CIFAR_BAD[case]
    path = _cifar(tmp_path, data)
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("cifar10", "test", data_root=tmp_path)
    _one_line(excinfo, "cifar10:", path, words)


# ----------------------------------------------------------------------------- LSUN

def _lmdb(tmp_path, entries: dict[bytes, bytes]):
    import lmdb

    env = lmdb.open(str(tmp_path / "bedroom_train_lmdb"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()
    return tmp_path / "bedroom_train_lmdb"


def test_lsun_entry_that_is_not_an_image(tmp_path):
    folder = _lmdb(tmp_path, {b"a": _jpeg_bytes((8, 8)), b"b": b"<html>oops</html>", b"c": b""})
    dataset = api.open_split("lsun", "train", data_root=tmp_path, image_size=8)
    assert dataset[0][0].shape == (3, 8, 8)
    for index, words in ((1, "entry b: not an image"), (2, "entry c: empty (0 bytes)")):
        with pytest.raises(BadImageError) as excinfo:
            dataset[index]
        _one_line(excinfo, folder, words, SKIP_HINT)
    images, _ = api.load_split("lsun", "train", data_root=tmp_path, image_size=8, progress=False, skip_bad=True)
    assert len(images) == 1


@pytest.mark.parametrize("damage, words", [("garbage", "is not an lmdb database"), ("truncated", "is truncated"),
                                           ("empty", "is not an lmdb database"),
                                           ("pages overwritten", "cannot read the lmdb database")])
def test_lsun_corrupt_database(tmp_path, damage, words):
    rng = np.random.default_rng(0)
    folder = _lmdb(tmp_path, {f"{i:03d}".encode(): rng.bytes(3000) for i in range(40)})
    data = folder / "data.mdb"
    content = data.read_bytes()
    data.write_bytes({"garbage": rng.bytes(len(content)), "truncated": content[:len(content) // 2], "empty": b"",
                      "pages overwritten": content[:8192] + rng.bytes(len(content) - 8192)}[damage])
    with pytest.raises(GanlabError) as excinfo:  # the truncated file would kill the process with SIGBUS
        api.open_split("lsun", "train", data_root=tmp_path)
    _one_line(excinfo, "lsun:", data, words)


# ----------------------------------------------------------------------------- CelebA

CELEBA_BAD = {  # case -> (partition text or bytes, words)
    "three fields": ("000001.jpg 0\n000002.jpg 0 extra\n", "line 2 of", "'000002.jpg 0 extra'"),
    "unknown code": ("000001.jpg 0\n000002.jpg 3\n", "line 2 of", "partition code '3'"),
    "path": ("../000001.jpg 0\n", "line 1 of", "expected a file name in img_align_celeba/"),
    "duplicate": ("000001.jpg 0\n000001.jpg 2\n", "lists 000001.jpg a second time"),
    "not text": (b"\xff\xfe\x00\x01binary", "cannot read", "as text"),
    "no test images": ("000001.jpg 0\n", "lists no images for the 'test' split"),
}


@pytest.mark.parametrize("case", sorted(CELEBA_BAD))
def test_celeba_malformed_partition(tmp_path, case):
    text, *words = CELEBA_BAD[case]
    folder = tmp_path / "celeba"
    _png(folder / "img_align_celeba" / "000001.jpg")
    partition = folder / "list_eval_partition.txt"
    partition.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(GanlabError) as excinfo:
        api.open_split("celeba", "test", data_root=tmp_path)
    _one_line(excinfo, "celeba:", partition, *words)
