"""Which folders ganlab may write into, and one writer per folder.

ganlab writes into a folder only when it is new, empty, or one ganlab made for the same purpose: each folder
it makes holds a small marker file (``.ganlab``: ``{"kind": "report"}`` and the version). Folders written by
versions before the marker are recognised by their contents (a report: ``index.html`` beside a
``metrics.json`` naming ganlab; a run: ``log.jsonl`` beside epoch checkpoints). Anything else that is not
empty is refused before any work, so a mistyped ``--out`` never replaces a dataset or a run.

One writer per folder: an OS file lock (``flock`` through filelock), held for as long as the command writes.
The lock files live in a folder of the user's own in the system's temporary folder, named by a hash of the
protected folder's absolute path, so nothing is added to the user's folders and a crash leaves no stale lock
(the OS drops the lock with the process). Locks are per machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.store.atomic import write_atomically

MARKER = ".ganlab"


def absolute(path: str | Path) -> Path:
    """``path`` as an absolute path with links resolved, fixed at the start of a command (a later ``chdir`` by
    a plugin cannot move where ganlab writes)."""
    return Path(path).expanduser().resolve()


def mark(folder: Path, kind: str, files: list[str] | None = None) -> None:
    """Write the marker that says ganlab made ``folder`` as a ``kind``; ``files``: every file it wrote there
    (relative paths), for a folder that is replaced whole (a later replacement refuses one that holds others)."""
    from ganlab import __version__

    content = {"kind": kind, "ganlab": __version__, **({"files": files} if files is not None else {})}
    write_atomically(folder / MARKER, json.dumps(content) + "\n")


def _marker(folder: Path) -> dict:
    try:
        content = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _marked(folder: Path) -> str | None:
    kind = _marker(folder).get("kind")
    return kind if isinstance(kind, str) else None


def files_in(folder: Path) -> list[str]:
    """Every file and link under ``folder`` but the marker, as sorted relative paths (links not followed)."""
    found = []
    for root, dirs, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names + [d for d in dirs
                  if os.path.islink(os.path.join(root, d))]]
    return sorted(f for f in found if f != MARKER)


def strangers(folder: Path) -> list[str]:
    """Files in a folder ganlab wrote whole that are not among the files it wrote there (someone else's)."""
    listed = _marker(folder).get("files")
    if not isinstance(listed, list):
        return []
    return sorted(set(files_in(folder)) - set(map(str, listed)))


def _legacy_report(folder: Path) -> bool:
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    versions = metrics.get("versions") if isinstance(metrics, dict) else None
    return (folder / "index.html").is_file() and isinstance(versions, dict) and "ganlab" in versions


def _legacy_run(folder: Path) -> bool:
    return (folder / "log.jsonl").is_file() and (any(folder.glob("epoch_*.pt")) or (folder / "last.pt").is_file())


def folder_kind(folder: Path) -> str | None:
    """What ganlab made ``folder`` as ("report", "run", ...), or None when it did not make it."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    kind = _marked(folder)
    if kind is None and _legacy_report(folder):
        kind = "report"
    if kind is None and _legacy_run(folder):
        kind = "run"
    if kind is None and (folder / "seeds.json").is_file() and (folder / "seeds.md").is_file():
        kind = "seed summary"
    return kind


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def check_outside(out: Path, sources: list[Path], flag: str = "--out") -> None:
    """Refuse an output folder that is, holds, or lies inside one of the input folders ``sources``."""
    for source in sources:
        source = absolute(source)
        if out == source or source in out.parents:
            raise GanlabError(f"{flag} {out} is inside the input {source}; ganlab never writes into its input: "
                              "give a folder outside it")
        if out in source.parents:
            raise GanlabError(f"{flag} {out} holds the input {source}; give an output folder outside it")


def check_output(out: Path, kind: str, *, sources: list[Path] = (), flag: str = "--out",
                 legacy: Callable[[Path], bool] | None = None) -> None:
    """Before any work: ``out`` (absolute) is new, empty or a ``kind`` folder of ganlab's, outside ``sources``.
    ``legacy(out)`` may recognise such a folder written before the marker existed."""
    if out.exists() and not out.is_dir():
        raise GanlabError(f"{flag} {out} is a file, not a folder; give a folder for the {kind}")
    check_outside(out, list(sources), flag)
    entries = _entries(out)
    if not entries:
        return
    found = folder_kind(out)
    if found == kind and strangers(out):
        raise GanlabError(f"{flag} {out} holds {strangers(out)[0]}, which ganlab did not write there; move it out "
                          f"(ganlab replaces the whole {kind} folder) or give another folder")
    if found == kind or (found is None and legacy is not None and legacy(out)):
        return
    what = f"a ganlab {found}" if found else f"{len(entries)} entries, e.g. {entries[0]}"
    raise GanlabError(f"{flag} {out} is not a ganlab {kind} folder (it holds {what}); ganlab only replaces "
                      f"folders it wrote: give a new or empty folder")


class FolderLock:
    """An exclusive OS lock on a folder for this process; ``acquire`` fails at once if another holds it."""

    def __init__(self, folder: Path, doing: str):
        from filelock import FileLock

        self.folder, self.doing = folder, doing
        name = hashlib.sha256(str(folder).encode()).hexdigest()[:32]
        self.lock = FileLock(str(_lock_dir() / f"{name}.lock"), timeout=0)

    def acquire(self) -> "FolderLock":
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            raise GanlabError(f"{self.folder} is in use: another ganlab process is {self.doing} there; wait for "
                              "it to finish, or use another folder") from None
        return self

    def release(self) -> None:
        if self.lock.is_locked:
            self.lock.release()


def _lock_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"ganlab-locks-{uid}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder
