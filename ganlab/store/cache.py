"""The cache folder: results kept between runs ($GANLAB_CACHE, else ~/.cache/ganlab), every entry verified.

``ROOT/PART/KEY-DIGEST.EXT`` is one entry: KEY names what it was computed from (a hash of a JSON-able
identity), DIGEST is the first 16 hex digits of the SHA-256 of the file's own bytes, written with it in one
atomic rename; an entry whose bytes no longer hash to its name is removed and recomputed, with one line on
stderr (docs/faults.md). The root holds ganlab's marker and a ``CACHEDIR.TAG`` (so backup tools skip it); a tool
that keeps its own files (numba's) gets a marked sub-folder (``folder``). Plugins cache through this class
(``ctx.cache``). A cache that cannot be written only costs time: the result is computed all the same.
"""
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganlab.errors import GanlabError
from ganlab.store.atomic import atomic_path, remove_tree
from ganlab.store.claims import MARKER, absolute, folder_kind, mark
from ganlab.store.digest import file_sha256, text_key

ENTRY = re.compile(r"^(?P<key>[0-9a-f]{32})-(?P<digest>[0-9a-f]{16})\.(?P<ext>[a-z0-9]+)$")
PART = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
TAG = "CACHEDIR.TAG"
TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This folder is ganlab's cache (results kept between runs); `ganlab cache clear` empties it.\n")
# Parts every version before the marker made: a folder of part folders holding one of them is ganlab's cache.
LEGACY_PARTS = frozenset({"features", "numba"})
MEMMAP_BYTES = 1 << 30  # arrays above this are written straight into a memory-mapped file and returned mapped


def default_root() -> Path:
    return Path(os.environ.get("GANLAB_CACHE") or Path.home() / ".cache" / "ganlab")


def is_cache(root: Path) -> bool:
    """Whether ``root`` is a folder ganlab made as its cache (marked, or an unmarked one of older versions)."""
    if folder_kind(root) == "cache":
        return True
    try:
        names = set(os.listdir(root)) - {TAG}
    except OSError:
        return False
    # an older version's: only part folders (a plugin may have added its own), at least one of ganlab's
    parts = all(PART.match(n) and (root / n).is_dir() and not (root / n).is_symlink() for n in names)
    return bool(names & LEGACY_PARTS) and parts


class Cache:
    """Verified entries under ``root``; ``say`` gets the lines about damaged or unwritable entries."""

    def __init__(self, root: str | Path | None = None, say: Callable[[str], None] | None = None, *,
                 enabled: bool = True):
        self.root = absolute(root if root is not None else default_root())
        self.say = say or (lambda line: print(line, file=sys.stderr))  # the stream current when it says
        self.enabled = enabled
        self._verified: dict[tuple[str, int, int], bool] = {}
        self._warned = False
        if not enabled:
            return
        if self.root.exists() and not self.root.is_dir():
            raise GanlabError(f"the cache folder {self.root} ($GANLAB_CACHE) is a file; point GANLAB_CACHE at a "
                              "new or empty folder")
        if self.root.is_dir() and os.listdir(self.root) and not is_cache(self.root):
            raise GanlabError(f"the cache folder {self.root} ($GANLAB_CACHE) is not ganlab's cache (it holds "
                              f"{sorted(os.listdir(self.root))[0]} ...); point GANLAB_CACHE at a new or empty folder")

    @classmethod
    def disabled(cls) -> "Cache":
        """A cache that keeps nothing: every result is computed (contexts made without a cache folder)."""
        return cls(tempfile.gettempdir(), enabled=False)

    def array(self, part: str, ident: Any, compute: Callable[[], Any], *, rows: int | None = None) -> Any:
        """The numpy array stored for ``ident`` (with ``rows`` rows, when given), else ``compute()``, stored.
        Arrays above 1 GiB come back memory-mapped, read-only."""
        import numpy as np

        key = text_key(ident)
        found = self._stored_array(part, key, rows)
        if found is None:
            found = np.asarray(compute())
            self.store(part, key, "npy", lambda tmp: np.save(tmp, found, allow_pickle=False))
        return found

    def filled_array(self, part: str, ident: Any, shape: tuple[int, ...], fill: Callable[[Any], None]) -> Any:
        """A float32 array of ``shape`` stored for ``ident``, else made by ``fill(out)``; when larger than 1 GiB
        ``out`` is the memory-mapped cache file itself, so the array never has to sit in memory."""
        import numpy as np

        def filled(out):
            fill(out)
            return out

        if int(np.prod(shape)) * 4 <= MEMMAP_BYTES:
            return self.array(part, ident, lambda: filled(np.empty(shape, dtype=np.float32)), rows=shape[0])
        key = text_key(ident)
        found = self._stored_array(part, key, shape[0])
        if found is not None:
            return found
        stored = self.store(part, key, "npy", lambda tmp: filled(np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.float32, shape=tuple(shape))).flush())
        if stored is None:  # no cache to map it from: made in memory
            return filled(np.empty(shape, dtype=np.float32))
        return np.load(stored, mmap_mode="r", allow_pickle=False)

    def _stored_array(self, part: str, key: str, rows: int | None) -> Any:
        import numpy as np

        path = self.find(part, key, "npy")
        if path is None:
            return None
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if rows is None or array.shape[0] == rows:
                return array if array.nbytes > MEMMAP_BYTES else np.array(array)
        except (ValueError, OSError):
            pass
        self._damaged(path, "it does not hold the array it is named for")
        return None

    def json(self, part: str, ident: Any, compute: Callable[[], Any] | None = None) -> Any:
        """The JSON value stored for ``ident``; else ``compute()``, stored (None without ``compute``)."""
        key = text_key(ident)
        path = self.find(part, key, "json")
        if path is not None:
            try:
                entry = json.loads(path.read_text())
                if entry["ident"] == json.loads(json.dumps(ident, default=str)):
                    return entry["value"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
            self._damaged(path, "it does not hold the value it is named for")
        if compute is None:
            return None
        value = compute()
        self.put_json(part, ident, value)
        return value

    def put_json(self, part: str, ident: Any, value: Any) -> None:
        """Store a JSON-ready ``value`` for ``ident``."""
        text = json.dumps({"ident": ident, "value": value}, default=str)
        self.store(part, text_key(ident), "json", lambda tmp: tmp.write_text(text))

    def file(self, part: str, ident: Any, ext: str, make: Callable[[Path], None], read: Callable[[Path], Any]) -> Any:
        """``read(path)`` of the file stored for ``ident``; else ``make(path)`` writes one, which is stored and
        read. A stored file that ``read`` rejects with an exception is treated as damaged."""
        key = text_key(ident)
        path = self.find(part, key, ext)
        if path is not None:
            try:
                return read(path)
            except Exception as exc:  # a reader's own check failed: the entry cannot be used
                self._damaged(path, f"it could not be read ({type(exc).__name__})")
        stored = self.store(part, key, ext, make)
        if stored is not None:
            return read(stored)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / f"entry.{ext}"
            make(target)
            return read(target)

    def folder(self, part: str) -> Path | None:
        """A marked sub-folder for a tool that manages its own files there (e.g. numba); None if unwritable."""
        folder = self._part(part)
        return folder if self._ready() and self._made(folder, "cache-folder") else None

    def find(self, part: str, key: str, ext: str) -> Path | None:
        """The verified entry for ``key``, or None; damaged candidates are removed (with a line each)."""
        folder = self._part(part)
        if not self.enabled or not folder.is_dir():
            return None
        for path in sorted(folder.glob(f"{key}-*.{ext}")):
            problem = self._problem(path)
            if problem is None:
                return path
            self._damaged(path, problem)
        return None

    def store(self, part: str, key: str, ext: str, write: Callable[[Path], None]) -> Path | None:
        """Run ``write(tmp)`` on a temporary file and keep it as the entry ``key``; None if the cache cannot be
        written (the caller still has its result)."""
        folder = self._part(part)
        target = folder / key

        def named(tmp: Path) -> Path:
            nonlocal target
            target = folder / f"{key}-{file_sha256(tmp)[:16]}.{ext}"
            if target.is_dir():
                remove_tree(target)
            return target

        if not self._ready():
            return None
        try:
            folder.mkdir(exist_ok=True)
            with atomic_path(folder / key, f".tmp.{ext}", named) as tmp:
                write(tmp)
        except OSError as exc:
            self._unwritable(exc)
            return None
        for other in folder.glob(f"{key}-*.{ext}"):
            if other != target and other.is_file() and not other.is_symlink():
                with contextlib.suppress(OSError):
                    other.unlink()  # an older version of the same entry
        self._verified[self._stat_key(target)] = True
        return target

    def _problem(self, path: Path) -> str | None:
        """Why the entry at ``path`` cannot be trusted, or None when its bytes match its name."""
        match = ENTRY.match(path.name)
        if match is None:
            return "its name is not an entry's"
        if path.is_symlink() or not path.is_file():
            return "it is not a plain file"
        stat_key = self._stat_key(path)
        if stat_key not in self._verified:
            try:
                if path.stat().st_size == 0:
                    return "it is empty (0 bytes)"
                if file_sha256(path)[:16] != match["digest"]:
                    return "its bytes do not match its digest (damaged or truncated)"
            except OSError as exc:
                return f"it cannot be read ({exc.strerror or exc})"
            self._verified[stat_key] = True
        return None

    @staticmethod
    def _stat_key(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return str(path), stat.st_size, stat.st_mtime_ns

    def _damaged(self, path: Path, problem: str) -> None:
        self.say(f"cache: {path.relative_to(self.root)} is not used: {problem}; recomputing it")
        with contextlib.suppress(OSError):
            remove_tree(path)

    def _unwritable(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            self.say(f"cache: cannot write into {self.root} ({exc.strerror or exc}); results are computed, not kept")

    def _part(self, part: str) -> Path:
        if not PART.match(part):
            raise ValueError(f"cache part {part!r}: use lowercase letters, digits and dashes")
        return self.root / part

    def _ready(self) -> bool:
        """Create and mark the root on first write; False (and one line) when it cannot be written."""
        return self.enabled and self._made(self.root, "cache")

    def _made(self, folder: Path, kind: str) -> bool:
        """``folder`` made and marked as ``kind`` (the root with its CACHEDIR.TAG); False when it cannot be."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / MARKER).is_file():
                mark(folder, kind)
            if folder == self.root and not (folder / TAG).is_file():
                (folder / TAG).write_text(TAG_TEXT)
        except OSError as exc:
            self._unwritable(exc)
            return False
        return True
