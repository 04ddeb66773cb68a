"""Which folders ganlab may write into, and one writer per folder (docs/faults.md).

A folder is written only when it is new, empty, or one ganlab made for the same purpose: it holds a marker
(``.ganlab``: ``{"kind": "report"}`` and the version), or for folders from before the marker, ``LEGACY`` contents.

One writer per folder: an OS file lock (``flock`` through filelock), held for as long as the command writes. The
lock files live in a folder of the user's own in /tmp (whatever $TMPDIR says), named by a hash of the folder's
absolute path, so nothing is added to the user's folders and a crash leaves no stale lock (the OS drops the lock
with the process). Locks are per machine.
"""
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

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


def _json_dict(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def files_in(folder: Path) -> list[str]:
    """Every file and link under ``folder`` but the marker, as sorted relative paths (links not followed)."""
    found = (os.path.relpath(os.path.join(root, n), folder) for root, dirs, names in os.walk(folder)
             for n in names + [d for d in dirs if os.path.islink(os.path.join(root, d))])
    return sorted(f for f in found if f != MARKER)


def strangers(folder: Path, patterns: Sequence[str] = ()) -> list[str]:
    """Files in a folder ganlab wrote whole that it did not write there (someone else's): those its marker does
    not list, or, in a folder from before the marker listed them, those that no glob of ``patterns`` matches (a
    kind with none, a run folder, is written file by file and keeps what else it holds)."""
    listed = _json_dict(folder / MARKER).get("files")
    if isinstance(listed, list):
        return sorted(set(files_in(folder)) - set(map(str, listed)))
    return [name for name in files_in(folder) if patterns and not any(fnmatchcase(name, p) for p in patterns)]


def _legacy_report(folder: Path) -> bool:
    versions = _json_dict(folder / "metrics.json").get("versions")
    return (folder / "index.html").is_file() and isinstance(versions, dict) and "ganlab" in versions


def epoch_name(epoch: int, ext: str = "pt") -> str:
    """The name the trainer gives an epoch's checkpoint (``pt``) or sample grid (``png``): epoch_0007.pt."""
    return f"epoch_{epoch:04d}.{ext}"


def epoch_files(folder: str | Path, ext: str = "pt") -> list[tuple[int, Path]]:
    """(epoch, path) of the files in ``folder`` named as the trainer names them, by epoch. Those that only look
    alike (epoch_best.pt, epoch_7.pt, epoch_00007.pt, a superscript digit, a folder) are not a run's: nothing
    reads or removes them as one."""
    found = []
    for path in Path(folder).glob(f"epoch_*.{ext}"):  # nothing in a missing folder
        number = path.name[len("epoch_"):-len(ext) - 1]
        if number.isascii() and number.isdigit() and path.name == epoch_name(int(number), ext) and path.is_file():
            found.append((int(number), path))
    return sorted(found)


LEGACY = {  # how a folder of each kind written before the marker existed is recognised
    "report": _legacy_report,
    "run": lambda f: (f / "log.jsonl").is_file() and (bool(epoch_files(f)) or (f / "last.pt").is_file()),
    "seed summary": lambda f: (f / "seeds.json").is_file() and (f / "seeds.md").is_file(),
}
LEGACY_FILES = {  # all that such a folder that is replaced whole may hold: anything else is the user's
    "report": ("index.html", "metrics.json", "assets/*"),
    "seed summary": ("seeds.json", "seeds.md"),
}


def folder_kind(folder: Path) -> str | None:
    """What ganlab made ``folder`` as ("report", "run", ...), or None when it did not make it."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    kind = _json_dict(folder / MARKER).get("kind")
    if isinstance(kind, str):
        return kind
    return next((kind for kind, made in LEGACY.items() if made(folder)), None)


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
                 legacy: Sequence[str] | Callable[[Path], bool] = ()) -> None:
    """Before any work: ``out`` (absolute) is new, empty or a ``kind`` folder of ganlab's, outside ``sources``.
    ``legacy``: globs of all that such a folder written before the marker existed holds (the first names a file
    it always has): one is recognised by them, and one holding anything else is refused. A predicate, as plugins
    gave before, still recognises one, but cannot tell its files from the user's: give globs."""
    if callable(legacy):
        recognised, legacy = legacy(out) if out.is_dir() else False, ()
    else:
        recognised = bool(legacy) and (out / legacy[0]).is_file()
    if out.exists() and not out.is_dir():
        raise GanlabError(f"{flag} {out} is a file, not a folder; give a folder for the {kind}")
    check_outside(out, list(sources), flag)
    try:
        entries = sorted(os.listdir(out))
    except OSError:
        entries = []  # a new folder (or an unreadable one: writing into it fails, saying why)
    found = folder_kind(out) if entries else kind  # an empty folder holds nothing to lose
    if found is None and recognised:
        found = kind
    patterns = tuple(legacy) or LEGACY_FILES.get(kind, ())
    if found == kind and (others := strangers(out, patterns)):
        raise GanlabError(f"{flag} {out} holds {others[0]}, which ganlab did not write there; move it out "
                          f"(ganlab replaces the whole {kind} folder) or give another folder")
    if found == kind:
        return
    what = f"a ganlab {found}" if found else f"{len(entries)} entries, e.g. {entries[0]}"
    raise GanlabError(f"{flag} {out} is not a ganlab {kind} folder (it holds {what}); ganlab writes only into a "
                      f"new or empty folder or a {kind} folder it made")


def lock_folder(folder: Path, doing: str) -> Any:
    """An exclusive OS lock on ``folder`` for this process (a held ``filelock.FileLock``: ``release()`` it);
    fails at once if another process holds it."""
    from filelock import FileLock, Timeout

    # one place for every process of the user: not $TMPDIR, which a batch system sets per job
    shared = Path("/tmp") if os.access("/tmp", os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    locks = shared / f"ganlab-locks-{os.getuid() if hasattr(os, 'getuid') else 0}"
    locks.mkdir(mode=0o700, exist_ok=True)
    lock = FileLock(str(locks / f"{hashlib.sha256(os.fsencode(folder)).hexdigest()[:32]}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise GanlabError(f"{folder} is in use: another ganlab process is {doing} there; wait for it to finish, "
                          "or use another folder") from None
    return lock
