"""The parameter files of the paper's released Theano code (github.com/Newmu/dcgan_code), read without running them.

What the authors saved. Each model is a Python list of numpy float32 arrays written with ``joblib.dump``
(imported from ``sklearn.externals``) as ``<epoch>_discrim_params.jl`` and ``<epoch>_gen_params.jl`` in a
model folder, e.g. ``models/svhn_unsup_all_conv_dcgan_100z_gaussian_lr_0.0005_64mb/200_discrim_params.jl``.
The joblib of the time (before 0.10) writes a small pickle holding one ``NDArrayWrapper`` per array, each
naming a companion file ``<name>.jl_01.npy``, ``<name>.jl_02.npy``, ... (plain ``.npy``) beside it. joblib
0.10 and later write one file, the arrays' bytes inline after ``NumpyArrayWrapper`` records.

The discriminator's list, in order (Theano shapes: conv weights are out x in x k x k):

- ``w``: the input convolution, no BatchNorm (``ndf x channels x k x k``);
- then per further convolution ``w_i, g_i, b_i``: the weights and the BatchNorm gain and bias (``width``
  each); no convolution has a bias, and BatchNorm always has both gain and bias;
- ``wy``: the final dense layer on the flattened ``width x 4 x 4`` map, ``(width * 16) x 1``, no bias,
  followed by a sigmoid (ganlab keeps the logit).

The SVHN model: 5x5 kernels, stride 2, padding 2, 64-128-256 wide (ganlab ``image_size=32, kernel_size=5,
ndf=64``). The ImageNet-32 model: 3x3 kernels, padding 1, stride 1 and 2 alternating, 128-128-256-256-512-512
(ganlab's ``imagenet32`` preset). The convolutions are ``dnn_conv`` with cuDNN's default ``conv_mode='conv'``,
a true convolution, so the kernels are flipped for PyTorch's cross-correlation; ``wy`` is a dot product on
the C-order flattening and becomes a 4x4 convolution unflipped. BatchNorm statistics were not saved: the
authors recomputed them on the training images before use, and so does ``ganlab import dcgan-code``. Theano's
BatchNorm adds ``1e-8`` to the variance, PyTorch ``1e-5``.

The generator's list starts with a dense layer whose BatchNorm normalises each of its ``width x 4 x 4`` units
separately (``g`` and ``b`` have ``width * 16`` entries); ganlab's generator normalises per channel, so G is
not converted.

Safety: joblib files are pickles, and unpickling runs whatever the file names. They are read here with a
restricted unpickler that only rebuilds numpy arrays (``numpy.ndarray``, ``numpy.dtype``, numpy's
``_reconstruct`` and ``scalar``, and joblib's array records, which are replaced by inert stand-ins);
anything else is refused before it is called, and arrays of Python objects are refused. ``.npz`` files
(``np.savez(path, *params)``: keys ``arr_0``, ``arr_1``, ...) are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import re
import zlib
from pathlib import Path

from ganlab import GanlabError

MAX_BYTES = 4 << 30  # refuse to decompress or read more than this for one parameter file


class _ArrayRecord:
    """Inert stand-in for joblib's ``NumpyArrayWrapper``: its fields, then the bytes follow in the stream."""


class _CompanionRecord:
    """Inert stand-in for old joblib's ``NDArrayWrapper``: names a ``.npy`` file beside the pickle."""


def _latin1(text, encoding="latin1", *_):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and only for that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed to make bytes from latin-1 text")
    return text.encode("latin1")


def _frombuffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array constructor, for numeric dtypes only."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("only numeric arrays are read")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _safe_globals() -> dict[tuple[str, str], object]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = _frombuffer
    for module in ("joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"):
        allowed[(module, "NumpyArrayWrapper")] = _ArrayRecord
        allowed[(module, "NDArrayWrapper")] = _CompanionRecord
    return allowed


class _ArraysOnly(pickle._Unpickler):  # the pure-Python unpickler: its BUILD step can be extended
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2 pickles: numpy's raw bytes arrive as str
        self.path = path
        self.allowed = _safe_globals()

    def find_class(self, module, name):
        found = self.allowed.get((module, name))
        if found is None:
            raise GanlabError(f"refused to read {self.path}: it names {module}.{name}, which would run code when "
                              "unpickled; only numpy arrays are read from joblib files")
        return found

    def persistent_load(self, pid):
        raise GanlabError(f"refused to read {self.path}: it uses persistent ids; only numpy arrays are read")

    def _refuse_extension(self):
        raise GanlabError(f"refused to read {self.path}: it uses the copyreg extension registry; only numpy "
                          "arrays are read")

    def _build(self):
        import numpy as np

        target = self.stack[-2] if len(self.stack) > 1 else None
        if not isinstance(target, (_ArrayRecord, _CompanionRecord, np.ndarray, np.dtype)):
            raise GanlabError(f"refused to read {self.path}: it sets the state of a {type(target).__name__}; only "
                              "numpy arrays are read")
        pickle._Unpickler.load_build(self)
        top = self.stack[-1]
        if isinstance(top, _ArrayRecord):
            self.stack[-1] = self._inline_array(top)
        elif isinstance(top, _CompanionRecord):
            self.stack[-1] = self._companion_array(top)

    def _dtype(self, record):
        import numpy as np

        dtype = getattr(record, "dtype", None)
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biuf":
            raise GanlabError(f"refused to read {self.path}: an array has dtype {dtype!r}; only numeric arrays "
                              "are read")
        if getattr(record, "subclass", np.ndarray) not in (np.ndarray, np.memmap):
            raise GanlabError(f"refused to read {self.path}: an array is not a plain numpy array")
        return dtype

    def _inline_array(self, record):
        import numpy as np

        dtype = self._dtype(record)
        shape = getattr(record, "shape", None)
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise GanlabError(f"{self.path} is damaged: an array record has shape {shape!r}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize > MAX_BYTES:
            raise GanlabError(f"{self.path}: an array of shape {shape} is larger than ganlab reads")
        if getattr(record, "numpy_array_alignment_bytes", None) is not None:
            padding = self.read(1)
            if padding:
                self.read(padding[0])
        data = self.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise GanlabError(f"{self.path} is truncated: an array's data ends early")
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        if getattr(record, "order", "C") == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)

    def _companion_array(self, record):
        import numpy as np

        if getattr(record, "subclass", np.ndarray) not in (np.ndarray, np.memmap):
            raise GanlabError(f"refused to read {self.path}: an array is not a plain numpy array")
        name = getattr(record, "filename", None)
        if not isinstance(name, str) or not re.fullmatch(r"[\w\-][\w.\-]*\.npy", name):
            raise GanlabError(f"refused to read {self.path}: it points at {name!r}, not a .npy file beside it")
        companion = self.path.parent / name
        if not companion.is_file():
            raise GanlabError(f"{self.path} needs {name} beside it, which is missing; copy the whole model folder")
        try:
            array = np.load(companion, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise GanlabError(f"{companion} is not a readable .npy file ({(str(exc).splitlines() or [''])[0][:120]})"
                              ) from None
        if not isinstance(array, np.ndarray) or array.dtype.hasobject or array.dtype.kind not in "biuf":
            raise GanlabError(f"{companion} does not hold a numeric array")
        return array


_ArraysOnly.dispatch[pickle.BUILD[0]] = _ArraysOnly._build
for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    _ArraysOnly.dispatch[_opcode[0]] = _ArraysOnly._refuse_extension


def _decompressed(path: Path, head: bytes) -> io.BytesIO | None:
    """The stream of a compressed joblib file (zlib, gzip, bz2, xz, lzma), or None when it is not compressed."""
    opener = None
    if head.startswith(b"\x1f\x8b"):
        opener = gzip.open
    elif head.startswith(b"BZh"):
        opener = bz2.open
    elif head.startswith(b"\xfd7zXZ\x00") or head.startswith(b"]\x00\x00"):
        opener = lzma.open
    elif len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        stream = zlib.decompressobj()
        with open(path, "rb") as f:
            data = stream.decompress(f.read(), MAX_BYTES)
        return io.BytesIO(data)
    if opener is None:
        return None
    with opener(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise GanlabError(f"{path} decompresses to more than ganlab reads")
    return io.BytesIO(data)


def read_joblib_arrays(path: str | Path) -> list:
    """The list of numpy arrays in a joblib (or plain pickle) file, read with the restricted unpickler."""
    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(b"ZF"):
                raise GanlabError(f"{path} is an old compressed joblib file, which ganlab does not read; load it "
                                  "with joblib in trusted Python and save the list with np.savez")
            try:
                stream = _decompressed(path, head)
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise GanlabError(f"{path} is a damaged compressed file ({exc})") from None
            if stream is None:
                f.seek(0)
            result = _ArraysOnly(stream or f, path).load()
    except GanlabError:
        raise
    except OSError as exc:
        raise GanlabError(f"cannot read {path} ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise GanlabError(f"{path} is not a readable joblib file of numpy arrays ({first})") from None
    if not isinstance(result, (list, tuple)) or not all(isinstance(a, np.ndarray) for a in result):
        raise GanlabError(f"{path} does not hold a list of numpy arrays (it holds a {type(result).__name__})")
    return [np.asarray(a) for a in result]


def read_npz_arrays(path: str | Path) -> list:
    """The arrays of ``np.savez(path, *params)`` in order (keys ``arr_0``, ``arr_1``, ...); never unpickles."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            order = {int(k[4:]): k for k in keys if re.fullmatch(r"arr_\d+", k)}
            if len(order) != len(keys) or sorted(order) != list(range(len(keys))):
                raise GanlabError(f"{path} has keys {keys[:5]}; save the list as np.savez(path, *params), which "
                                  "names them arr_0, arr_1, ...")
            arrays = [data[order[i]] for i in range(len(keys))]
    except GanlabError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise GanlabError(f"{path} is not a readable .npz file ({first})") from None
    for a in arrays:
        if a.dtype.kind not in "biuf":
            raise GanlabError(f"{path} holds a non-numeric array (dtype {a.dtype})")
    return arrays


def read_params(path: str | Path) -> list:
    """A parameter list from a ``.jl``/``.pkl`` joblib file or an ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise GanlabError(f"parameter file not found: {path}")
    if path.stat().st_size == 0:
        raise GanlabError(f"{path} is empty (0 bytes)")
    if path.suffix == ".npz":
        return read_npz_arrays(path)
    return read_joblib_arrays(path)


_PARAM_FILE = re.compile(r"(?:(\d+)_)?(?:discrim|disc)_params\.(jl|npz|pkl)")


def find_discriminator_file(folder: str | Path, epoch: int | None = None) -> tuple[Path, int | None]:
    """``<epoch>_discrim_params.{jl,npz}`` in ``folder`` (the highest epoch unless ``epoch`` is given), or the file."""
    folder = Path(folder)
    if folder.is_file():
        found = _PARAM_FILE.fullmatch(folder.name)
        return folder, int(found.group(1)) if found and found.group(1) else None
    if not folder.is_dir():
        raise GanlabError(f"{folder} does not exist; give the authors' model folder (with *_discrim_params.jl)")
    candidates = []
    for name in sorted(os.listdir(folder)):
        found = _PARAM_FILE.fullmatch(name)
        if found:
            candidates.append((int(found.group(1)) if found.group(1) else -1, found.group(2) != "npz", name))
    if epoch is not None:
        candidates = [c for c in candidates if c[0] == epoch]
    if not candidates:
        which = f"epoch {epoch}'s " if epoch is not None else ""
        raise GanlabError(f"no {which}discriminator parameters in {folder}: expected a file named like "
                          "200_discrim_params.jl (joblib) or 200_discrim_params.npz")
    best = max(candidates)
    return folder / best[2], best[0] if best[0] >= 0 else None
