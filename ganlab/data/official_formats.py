"""The official dataset files (MNIST, SVHN, CIFAR-10, LSUN, CelebA), parsed and checked: each reader returns plain
data or raises a one-line ``GanlabError`` naming the file, what is wrong with it and what to do."""
import codecs
import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from ganlab.data.pixel_formats import BadImageError, error_text, one_line, values_to_8bit
from ganlab.errors import GanlabError, a

OFFICIAL = "replace it with the official file"
_FIXES = {"cifar10": f"{OFFICIAL} (cifar-10-python.tar.gz)", "lsun": "fetch and unzip it again"}
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "16-bit integers", 0x0C: "32-bit integers",
              0x0D: "floats", 0x0E: "doubles"}


def _damaged(source: str, path: Path, problem: str) -> GanlabError:
    return GanlabError(f"{source}: {path} {problem}; {_FIXES.get(source, OFFICIAL)}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions (MNIST's format), gzipped or not."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _damaged("mnist", path, f"is a truncated or corrupt .gz file ({error_text(exc)})") from None
    except OSError as exc:
        raise GanlabError(f"mnist: cannot read {path} ({one_line(exc)})") from None
    header = 4 + 4 * ndim
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        problem = f"is not an idx file (bad magic number {data[:4].hex() or 'none'})"
    elif data[2] != 0x08:
        problem = f"holds {_IDX_TYPES[data[2]]}, not unsigned bytes"
    elif data[3] != ndim:
        problem = f"has {data[3]} dimensions, expected {ndim}"
    elif len(data) < header:
        problem = "is truncated (its header is cut short)"
    else:
        dims = np.frombuffer(data, ">u4", count=ndim, offset=4).tolist()
        size, expected = len(data) - header, math.prod(dims)
        if 0 in dims[1:]:
            problem = f"holds items of shape {dims[1:]}, which have no pixels"
        elif size == expected:
            return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
        else:
            problem = (f"is truncated ({size} bytes for shape {dims}, which needs {expected})" if size < expected
                       else f"has {size - expected} bytes after the data of shape {dims}")
    raise _damaged("mnist", path, problem)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 digits N) from SVHN's format-2 ``*_32x32.mat`` (y 1..10, 10 = 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # ValueError, MatReadError, NotImplementedError (v7.3), OSError, ...
        raise _damaged("svhn", path, f"is not a readable MATLAB .mat file ({error_text(exc)})") from None
    absent = [k for k in ("X", "y") if k not in mat]
    if absent:
        found = ", ".join(sorted(k for k in mat if not k.startswith("__"))) or "none"
        raise _damaged("svhn", path, f"has no {' or '.join(absent)} (variables found: {found}); "
                                     "expected X [32, 32, 3, N] and y [N, 1]")
    images, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if (images.ndim != 4 or images.shape[2] != 3 or 0 in images.shape[:2] or y.size != images.shape[3] or y.ndim > 2
            or y.squeeze().ndim > 1):
        raise _damaged("svhn", path, f"has X {list(images.shape)} and y {list(y.shape)}; expected X [32, 32, 3, N] "
                                     "and y [N, 1] (format 2, cropped)")
    y = y.reshape(-1)
    # NaN, fractions and out-of-range values alike; text or booleans are no digits at all
    bad = np.flatnonzero(~np.isin(y, np.arange(1, 11))) if y.dtype.kind in "iuf" else np.arange(y.size)
    if bad.size:
        raise _damaged("svhn", path, f"has labels in y that are not the digits 1..10 ({bad.size} of them, first "
                                     f"{y[bad[0]]} at index {bad[0]})")
    try:
        images = values_to_8bit(images, f"{path} X")  # one value rule for the whole file
    except BadImageError as exc:
        raise GanlabError(f"svhn: {exc.reason}; {OFFICIAL} or convert X to uint8") from None
    # [H, W, C, N] -> [N, H, W, C], contiguous so each item is one cheap slice.
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), y.astype(np.int64) % 10


class _Refused(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """How Python 3 pickles bytes at protocol 2 (``_codecs.encode(str, 'latin1')``), and nothing else."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


_ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
for _core in ("numpy.core", "numpy._core"):  # whatever numpy calls its module, in the file or in this numpy
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = np.zeros(1).__reduce__()[0]
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles what CIFAR-10's batches hold, so a doctored file cannot run code: the only globals found are numpy's
    array builders and a latin-1-only ``_codecs.encode``; any other is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        target = _ALLOWED.get((module, name))
        if target is None:
            raise _Refused(f"{module}.{name}")
        return target


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 32 x 32 x 3, int64 labels N) from one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as f:
            batch = PlainDataUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise _damaged("cifar10", path, f"refused: would run code (the pickle calls {one_line(exc)}; the official "
                                        "batches hold plain data only)") from None
    except OSError as exc:
        raise GanlabError(f"cifar10: cannot read {path} ({one_line(exc)})") from None
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, KeyError, ... from a damaged stream
        raise _damaged("cifar10", path, f"is truncated or not a CIFAR-10 python batch ({error_text(exc)})") from None
    if not isinstance(batch, dict):
        raise _damaged("cifar10", path, f"holds {a(type(batch).__name__)}, not a CIFAR-10 batch (a dict)")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _damaged("cifar10", path, f"has 'data' {found}; expected uint8 [N, 3072]")
    if not isinstance(labels, (list, tuple)) or len(labels) != len(data):
        found = f"{len(labels)} labels" if isinstance(labels, (list, tuple)) else f"'labels' {type(labels).__name__}"
        raise _damaged("cifar10", path, f"has {found} for {len(data)} images")
    bad = [i for i, label in enumerate(labels) if type(label) is not int or not 0 <= label <= 9]
    if bad:
        raise _damaged("cifar10", path, f"has labels outside 0..9 ({len(bad)} of them, first {labels[bad[0]]!r} "
                                        f"at index {bad[0]})")
    # rows are 1024 red, 1024 green, 1024 blue values of a 32 x 32 image
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.asarray(labels, dtype=np.int64)


def open_lmdb(path: Path):
    """A read-only lmdb environment of ``path`` (a data.mdb), refused when shorter than its meta pages say: lmdb maps
    the file and trusts it, and reading past the end of a truncated file kills the process with SIGBUS."""
    import lmdb

    try:
        size = path.stat().st_size
        env = lmdb.open(str(path.parent), readonly=True, lock=False, readahead=False, meminit=False)
    except OSError as exc:
        raise GanlabError(f"lsun: cannot read {path} ({one_line(exc)})") from None
    except lmdb.Error as exc:
        raise _damaged("lsun", path, f"is not an lmdb database ({error_text(exc)})") from None
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if size < needed:
        env.close()
        raise _damaged("lsun", path, f"is truncated ({size:,} bytes; its header says {needed:,})")
    return env


def read_celeba_partition(path: Path, split: str) -> list[str]:
    """The image names ``list_eval_partition.txt`` assigns to ``split`` (every name for ``all``), in file order."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GanlabError(f"celeba: cannot read {path} as text ({one_line(exc)}); {OFFICIAL}") from None
    parts: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            problem = f"is '{one_line(line)[:80]}'; expected 'NNNNNN.jpg 0|1|2'"
        elif fields[1] not in ("0", "1", "2"):
            problem = f"has partition code '{fields[1][:20]}'; expected 0 (train), 1 (valid) or 2 (test)"
        elif "/" in fields[0] or "\\" in fields[0] or fields[0].startswith("."):
            problem = f"names '{fields[0][:80]}'; expected a file name in img_align_celeba/, such as 000001.jpg"
        elif fields[0] in parts:
            problem = f"lists {fields[0]} a second time; {OFFICIAL}"
        else:
            parts[fields[0]] = ("train", "valid", "test")[int(fields[1])]
            continue
        raise GanlabError(f"celeba: line {number} of {path} {problem}")
    names = [name for name, part in parts.items() if split in ("all", part)]
    if not names:
        raise GanlabError(f"celeba: {path} lists no images for the '{split}' split; {OFFICIAL}")
    return names
