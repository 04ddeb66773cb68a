"""Atomic writes: a file or a folder on disk is the old one or the complete new one, never half-written: a
temporary file in the same folder, fsynced, one ``os.replace`` (atomic on POSIX), then the folder fsynced so that
the rename survives a power cut. A failure or an interruption removes the temporary file.
"""
import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ganlab.errors import GanlabError

_UMASK = os.umask(0)  # reading the umask means setting it: put it straight back
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give a new file; mkstemp's files are private (0600)
FOLDER_MODE = 0o777 & ~_UMASK  # what mkdir would give a new folder; mkdtemp's are private (0700)
OLD_TAG = "old-"  # marks the folder that holds the old output while the new one is swapped in
NAME_BYTES = 160  # of a name in a hidden temporary's: with its tag and random part it stays under 255 bytes


def hidden_prefix(name: str, tag: str = "") -> str:
    """``.NAME.TAG``, the start of a temporary's name beside ``NAME``. A longer name is cut, so that the temporary's
    fits the file system's 255-byte limit wherever ``NAME`` does, and ends in a digest of the whole: two names that
    share their first bytes never share temporaries."""
    raw = os.fsencode(name)
    if len(raw) > NAME_BYTES:  # cut at a character's edge
        name = raw[:NAME_BYTES - 9].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:8]
    return f".{name}.{tag}"


def os_error(what: str, path: Path | str, exc: OSError) -> GanlabError:
    """A one-line error for a failed write: says 'the disk is full' rather than an errno."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return GanlabError(f"cannot {what} {path}: part of that path is a file")
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return GanlabError(f"cannot {what} {path}: {reason}")


def fsync_folder(folder: Path | str) -> None:
    """Make a rename in ``folder`` durable (a no-op where the file system refuses: the rename is still atomic)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def mode_of(path: Path, folder: bool = False) -> int:
    """The permissions a replaced file (or folder) keeps; a new one gets what open() (or mkdir) would give it."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    return FOLDER_MODE if folder else FILE_MODE


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp", final: Callable[[Path], Path] | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (with any library), fsynced and renamed over ``path`` when the
    block ends, or over ``final(tmp)``, a name that depends on what was written (a cache entry's digest)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=hidden_prefix(path.name), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode_of(path))
        os.replace(tmp, final(tmp) if final else path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only once the block completes (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_atomically(path: Path | str, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` in one atomic step (text as UTF-8; a file name's undecodable bytes kept)."""
    with atomic_file(path, "wb") as handle:
        handle.write(data.encode(errors="surrogateescape") if isinstance(data, str) else data)
    return Path(path)


def link_atomically(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s bytes (a hard link, else a copy), swapped in with one rename."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def remove_tree(path: Path) -> None:
    """Remove a file, a link (never what it points to) or a folder and everything in it, links unfollowed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)  # rmtree unlinks links inside the tree; it never descends into them
    else:
        Path(path).unlink(missing_ok=True)


def swap_folder(staging: Path, out: Path) -> None:
    """Put the finished folder ``staging`` in place of ``out`` (which may not exist); the old one is removed only
    once the new one is in place, and put back if the swap fails."""
    old = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=hidden_prefix(out.name, OLD_TAG), dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(staging, out)
    except OSError:
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_folder(out.parent)
