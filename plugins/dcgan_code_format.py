"""The parameter files of the paper's Theano code (github.com/Newmu/dcgan_code), read without running them.

A model is a list of numpy arrays written with ``joblib.dump`` as ``<epoch>_discrim_params.jl``: by joblib before
0.10 as a pickle of ``NDArrayWrapper`` records naming companion files ``<name>.jl_01.npy``, ... beside it; by later
joblib as one file, each array's bytes inline after a ``NumpyArrayWrapper`` record, optionally zlib-compressed.
``np.savez(path, *params)`` files are read with ``allow_pickle=False``.

joblib files are pickles, and unpickling runs whatever the file names: a restricted unpickler rebuilds numpy arrays
only (joblib's records become inert stand-ins) and refuses anything else before it is called, as well as object
arrays and companion files outside the model folder.
"""
import io
import math
import os
import pickle
import re
import zlib
from pathlib import Path

from ganlab import GanlabError

MAX_BYTES = 4 << 30  # refuse to decompress or read more than this for one parameter file
PARAM_FILE = re.compile(r"(?:(\d+)_)?(?:discrim|disc)_params\.(jl|npz|pkl)")


class _ArrayRecord:  # joblib's NumpyArrayWrapper: the array's bytes follow it in the stream
    pass


class _CompanionRecord:  # old joblib's NDArrayWrapper: names a .npy file beside the pickle
    pass


def _latin1(text, encoding="latin1", *_):
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and only for that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed to make bytes from latin-1 text")
    return text.encode("latin1")


def _allowed() -> dict[tuple[str, str], object]:
    """(module, name) -> what the unpickler may build; numpy's constructors refuse object dtypes from raw bytes."""
    import numpy as np

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    for module in ("joblib.numpy_pickle", "sklearn.externals.joblib.numpy_pickle"):
        allowed[(module, "NumpyArrayWrapper")] = _ArrayRecord
        allowed[(module, "NDArrayWrapper")] = _CompanionRecord
    return allowed


class _ArraysOnly(pickle._Unpickler):  # the pure-Python unpickler: its BUILD step can be extended
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2 pickles: numpy's raw bytes arrive as str
        self.path, self.allowed = path, _allowed()

    def refuse(self, why: str):
        raise GanlabError(f"refused to read {self.path}: {why}; only numpy arrays are read from joblib files")

    def find_class(self, module, name):
        found = self.allowed.get((module, name))
        return found if found is not None else self.refuse(f"it names {module}.{name}, which would run code")

    def persistent_load(self, pid):
        self.refuse("it uses persistent ids")

    def _refuse_extension(self):
        self.refuse("it uses the copyreg extension registry")

    def _build(self):
        import numpy as np

        target = self.stack[-2] if len(self.stack) > 1 else None
        if not isinstance(target, (_ArrayRecord, _CompanionRecord, np.ndarray, np.dtype)):
            self.refuse(f"it sets the state of a {type(target).__name__}")
        pickle._Unpickler.load_build(self)
        top = self.stack[-1]
        if isinstance(top, (_ArrayRecord, _CompanionRecord)):
            if getattr(top, "subclass", np.ndarray) not in (np.ndarray, np.memmap):
                self.refuse("an array is not a plain numpy array")
            self.stack[-1] = self._inline_array(top) if isinstance(top, _ArrayRecord) else self._companion_array(top)

    def _inline_array(self, record):
        import numpy as np

        dtype, shape = getattr(record, "dtype", None), getattr(record, "shape", None)
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
            self.refuse(f"an array has dtype {dtype!r}, not a numeric one")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise GanlabError(f"{self.path} is damaged: an array record has shape {shape!r}")
        size = math.prod(shape) * dtype.itemsize
        if size > MAX_BYTES:
            raise GanlabError(f"{self.path}: an array of shape {shape} is larger than ganlab reads")
        if getattr(record, "numpy_array_alignment_bytes", None) is not None:
            padding = self.read(1)
            if padding:
                self.read(padding[0])
        data = self.read(size)
        if len(data) != size:
            raise GanlabError(f"{self.path} is truncated: an array's data ends early")
        array = np.frombuffer(data, dtype=dtype).copy()
        return array.reshape(shape[::-1]).transpose() if getattr(record, "order", "C") == "F" else array.reshape(shape)

    def _companion_array(self, record):
        import numpy as np

        name = getattr(record, "filename", None)
        if not isinstance(name, str) or not re.fullmatch(r"[\w\-][\w.\-]*\.npy", name):
            self.refuse(f"it points at {name!r}, not a .npy file beside it")
        companion = self.path.parent / name
        if not companion.is_file():
            raise GanlabError(f"{self.path} needs {name} beside it, which is missing; copy the whole model folder")
        try:
            return np.load(companion, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise GanlabError(f"{companion} is not a readable .npy file ({first_line(exc)})") from None


_ArraysOnly.dispatch[pickle.BUILD[0]] = _ArraysOnly._build
for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    _ArraysOnly.dispatch[_opcode[0]] = _ArraysOnly._refuse_extension


def first_line(exc: BaseException, limit: int = 120) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def read_joblib_arrays(path: Path) -> list:
    import numpy as np

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(b"ZF"):
                raise GanlabError(f"{path} is an old compressed joblib file, which ganlab does not read; load it "
                                  "with joblib in trusted Python and save the list with np.savez")
            f.seek(0)
            stream = f
            if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:  # zlib: joblib's default
                try:
                    stream = io.BytesIO(zlib.decompressobj().decompress(f.read(), MAX_BYTES))
                except zlib.error as exc:
                    raise GanlabError(f"{path} is a damaged compressed file ({exc})") from None
            result = _ArraysOnly(stream, path).load()
    except OSError as exc:
        raise GanlabError(f"cannot read {path} ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError) as exc:
        raise GanlabError(f"{path} is not a readable joblib file of numpy arrays ({first_line(exc)})") from None
    if not isinstance(result, (list, tuple)) or not all(isinstance(a, np.ndarray) for a in result):
        raise GanlabError(f"{path} does not hold a list of numpy arrays (it holds a {type(result).__name__})")
    return list(result)


def read_npz_arrays(path: Path) -> list:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.files)
            if sorted(keys) != sorted(f"arr_{i}" for i in range(len(keys))):
                raise GanlabError(f"{path} has keys {keys[:5]}; save the list as np.savez(path, *params), which "
                                  "names them arr_0, arr_1, ...")
            return [data[f"arr_{i}"] for i in range(len(keys))]
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise GanlabError(f"{path} is not a readable .npz file ({first_line(exc)})") from None


def read_params(path: str | Path) -> list:
    path = Path(path)
    if not path.is_file():
        raise GanlabError(f"parameter file not found: {path}")
    if path.stat().st_size == 0:
        raise GanlabError(f"{path} is empty (0 bytes)")
    return read_npz_arrays(path) if path.suffix == ".npz" else read_joblib_arrays(path)


def find_discriminator_file(folder: str | Path, epoch: int | None = None) -> tuple[Path, int | None]:
    """``<epoch>_discrim_params.{jl,npz}`` in ``folder`` (the highest epoch unless ``epoch`` is given), or the file."""
    folder = Path(folder)
    if folder.is_file():
        found = PARAM_FILE.fullmatch(folder.name)
        return folder, int(found.group(1)) if found and found.group(1) else None
    if not folder.is_dir():
        raise GanlabError(f"{folder} does not exist; give the authors' model folder (with *_discrim_params.jl)")
    candidates = [(int(m.group(1) or -1), m.group(2) != "npz", name) for name in sorted(os.listdir(folder))
                  if (m := PARAM_FILE.fullmatch(name))]
    candidates = [c for c in candidates if epoch is None or c[0] == epoch]
    if not candidates:
        which = f"epoch {epoch}'s " if epoch is not None else ""
        raise GanlabError(f"no {which}discriminator parameters in {folder}: expected a file named like "
                          "200_discrim_params.jl (joblib) or 200_discrim_params.npz")
    best = max(candidates)
    return folder / best[2], best[0] if best[0] >= 0 else None
