"""The official dataset files, parsed and checked: MNIST idx, SVHN .mat, CIFAR-10 python batches, LSUN lmdb.

Each reader returns plain numpy arrays or raises a one-line ``GanlabError`` naming the file and what is
wrong with it (truncated, corrupt, wrong shape, labels out of range), never a raw exception.

CIFAR-10's python batches are pickles. ganlab never unpickles untrusted data with ``pickle.load``: a
restricted unpickler builds only what the official files hold (dicts, lists, strings, bytes, numbers
and uint8 numpy arrays, through ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype``; ``numpy._core.numeric._frombuffer`` and a latin-1-only ``_codecs.encode`` for the same
data pickled by Python 3) and refuses any other global, so a doctored file cannot run code.
"""
from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from ganlab.errors import GanlabError
from ganlab.pixel_formats import BadImageError, one_line, values_to_8bit

# ----------------------------------------------------------------------------- MNIST idx

_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
              0x0D: "floats", 0x0E: "doubles"}


def read_idx(path: Path, ndim: int, source: str = "mnist") -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions (MNIST's format), gzipped or not."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise GanlabError(f"{source}: {path} is a truncated or corrupt .gz file ({type(exc).__name__}: "
                          f"{one_line(exc)}); replace it with the original file") from None
    except OSError as exc:
        raise GanlabError(f"{source}: cannot read {path} ({exc.strerror or one_line(exc)})") from None
    replace = "replace it with the original file"
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise GanlabError(f"{source}: {path} is not an idx file (bad magic number {data[:4].hex() or 'none'}); "
                          f"{replace}")
    if data[2] != 0x08:
        raise GanlabError(f"{source}: {path} holds {_IDX_TYPES[data[2]]}, not unsigned bytes; {replace}")
    if data[3] != ndim:
        raise GanlabError(f"{source}: {path} has {data[3]} dimensions, expected {ndim}; {replace}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise GanlabError(f"{source}: {path} is truncated (its header is cut short); {replace}")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    size, expected = len(data) - header, math.prod(dims)
    if size < expected:
        raise GanlabError(f"{source}: {path} is truncated ({size} bytes for shape {dims}, which needs "
                          f"{expected}); {replace}")
    if size > expected:
        raise GanlabError(f"{source}: {path} has {size - expected} bytes after the data of shape {dims}; {replace}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# ----------------------------------------------------------------------------- SVHN .mat

def _svhn_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """SVHN's y (1..10, 10 = digit 0) as int64 digits 0..9; NaN, fractions or other values refused."""
    where = f"svhn: {path}"
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise GanlabError(f"{where} has y of dtype {y.dtype}; expected the digits 1..10")
    y = y.reshape(-1)
    if np.issubdtype(y.dtype, np.floating):
        if np.isnan(y).any():
            raise GanlabError(f"{where} has NaN labels in y (first at index {int(np.flatnonzero(np.isnan(y))[0])}); "
                              "replace it with the official file")
        if (np.isinf(y) | (y != np.floor(y))).any():
            raise GanlabError(f"{where} has non-integer labels in y; expected the digits 1..10")
    bad = np.flatnonzero((y < 1) | (y > 10))
    if bad.size:
        raise GanlabError(f"{where} has labels outside 1..10 in y ({bad.size} of them, first {y[bad[0]]:g} at "
                          f"index {int(bad[0])}); replace it with the official file")
    labels = y.astype(np.int64)
    labels[labels == 10] = 0  # SVHN stores the digit 0 as class 10
    return labels


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 digits N) from SVHN's format-2 ``*_32x32.mat``."""
    import scipy.io

    official = "replace it with the official file"
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # ValueError, MatReadError, NotImplementedError (v7.3), OSError, ...
        raise GanlabError(f"svhn: {path} is not a readable MATLAB .mat file ({type(exc).__name__}: "
                          f"{one_line(exc)}); {official}") from None
    absent = [k for k in ("X", "y") if k not in mat]
    if absent:
        found = ", ".join(sorted(k for k in mat if not k.startswith("__"))) or "none"
        raise GanlabError(f"svhn: {path} has no {' or '.join(absent)} (variables found: {found}); "
                          f"expected X [32, 32, 3, N] and y [N, 1]; {official}")
    images, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if images.ndim != 4 or images.shape[2] != 3:
        raise GanlabError(f"svhn: {path} has X {list(images.shape)}; expected X [32, 32, 3, N] (format 2, cropped)")
    if y.size != images.shape[3] or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise GanlabError(f"svhn: {path} has X for {images.shape[3]} images but y {list(y.shape)}; expected "
                          f"y [{images.shape[3]}, 1]; {official}")
    labels = _svhn_labels(y, path)
    try:
        images = values_to_8bit(images, f"{path} X")  # one value rule for the whole file
    except BadImageError as exc:
        raise GanlabError(f"svhn: {exc.reason}; replace it with the official file or convert X to uint8") from None
    # [H, W, C, N] -> [N, H, W, C], contiguous so each item is one cheap slice.
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels


# ----------------------------------------------------------------------------- CIFAR-10 python batches

class _Refused(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """How Python 3 pickles bytes at protocol 2 (``_codecs.encode(str, 'latin1')``), and nothing else."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


@lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever numpy calls its module
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        target = _allowed_globals().get((module, name))
        if target is None:
            raise _Refused(f"{module}.{name}")
        return target


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 labels N) from one CIFAR-10 python batch file."""
    official = "replace it with the official file (cifar-10-python.tar.gz)"
    try:
        with open(path, "rb") as f:
            batch = PlainDataUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise GanlabError(f"cifar10: {path} refused: would run code (the pickle calls {one_line(exc)}; the official "
                          f"batches hold plain data only); {official}") from None
    except OSError as exc:
        raise GanlabError(f"cifar10: cannot read {path} ({exc.strerror or one_line(exc)})") from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, KeyError, ... from a damaged stream
        raise GanlabError(f"cifar10: {path} is truncated or not a CIFAR-10 python batch ({type(exc).__name__}: "
                          f"{one_line(exc)}); {official}") from None
    if not isinstance(batch, dict):
        raise GanlabError(f"cifar10: {path} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict); {official}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise GanlabError(f"cifar10: {path} has 'data' {found}; expected uint8 [N, 3072]; {official}")
    if not isinstance(labels, (list, tuple)) or len(labels) != len(data):
        found = f"{len(labels)} labels" if isinstance(labels, (list, tuple)) else f"'labels' {type(labels).__name__}"
        raise GanlabError(f"cifar10: {path} has {found} for {len(data)} images; {official}")
    bad = [i for i, label in enumerate(labels) if type(label) is not int or not 0 <= label <= 9]
    if bad:
        raise GanlabError(f"cifar10: {path} has labels outside 0..9 ({len(bad)} of them, first {labels[bad[0]]!r} "
                          f"at index {bad[0]}); {official}")
    # rows are 1024 red, 1024 green, 1024 blue values of a 32 x 32 image
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- LSUN lmdb

def check_lmdb_file(path: Path) -> None:
    """Refuse a data.mdb that is not an lmdb file or is shorter than its own meta pages say.

    lmdb maps the file into memory and trusts it: reading a page past the end of a truncated file kills
    the process with SIGBUS, no exception. The two meta pages give the page size and the last page used.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2 * 65536)
        size = path.stat().st_size
    except OSError as exc:
        raise GanlabError(f"lsun: cannot read {path} ({exc.strerror or one_line(exc)})") from None
    redownload = "fetch and unzip it again"
    for order in ("<", ">"):
        if len(head) >= 152 and struct.unpack_from(f"{order}I", head, 16)[0] == 0xBEEFC0DE:
            break
    else:
        raise GanlabError(f"lsun: {path} is not an lmdb database (no lmdb header); {redownload}")
    page = struct.unpack_from(f"{order}I", head, 40)[0]
    metas = [struct.unpack_from(f"{order}QQ", head, base + 136) for base in (0, page) if base + 152 <= len(head)]
    if not 512 <= page <= 65536 or len(metas) < 2:
        raise GanlabError(f"lsun: {path} has a damaged lmdb header; {redownload}")
    last_page = max(metas, key=lambda meta: meta[1])[0]  # the meta page of the newest transaction
    if size < (last_page + 1) * page:
        raise GanlabError(f"lsun: {path} is truncated ({size:,} bytes; its header says {(last_page + 1) * page:,}); "
                          f"{redownload}")
