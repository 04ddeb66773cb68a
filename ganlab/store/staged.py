"""An output folder written all at once: built in a hidden folder beside it, then swapped in whole.

A crash, a full disk, Ctrl-C or SIGTERM while it is written leaves the previous one as it was (docs/faults.md);
a staging folder left by ``kill -9`` is removed by the next writer there, which holds the folder's lock.
"""
import contextlib
import glob
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.store.atomic import OLD_TAG, hidden_prefix, mode_of, os_error, remove_tree, swap_folder, write_atomically
from ganlab.store.claims import absolute, check_output, files_in, folder_kind, lock_folder, mark

TAGS = ("partial-", OLD_TAG)  # a staging folder; the old output while the new one is swapped in


def _left_by_a_writer(path: Path) -> bool:
    """Whether ``path``, named like a staging or old folder, is one: a real folder, empty (made, then killed) or
    marked by ganlab, or holding only folders ganlab made (the output a swap was replacing). Anything else that
    happens to carry the name is the user's and stays."""
    if not path.is_dir() or path.is_symlink():
        return False
    return folder_kind(path) is not None or all(folder_kind(entry) is not None for entry in path.iterdir())


class StagedFolder:
    """``staging`` is where the writer puts files; ``commit()`` puts it in place of ``out`` (checked and locked
    first: see ``check_output``). Leaving the ``with`` block without ``commit()`` removes the staging folder."""

    def __init__(self, out: str | Path, kind: str, *, sources: list[Path] = (), flag: str = "--out",
                 legacy: Sequence[str] | Callable[[Path], bool] = ()):
        self.out, self.kind = absolute(out), kind
        check_output(self.out, kind, sources=list(sources), flag=flag, legacy=legacy)
        here = absolute(".")
        if self.out == here or self.out in here.parents:  # swapped whole, it would leave the shell nowhere
            raise GanlabError(f"{flag} {self.out} holds the working folder; give a folder beside or inside it")
        self.lock = lock_folder(self.out, f"writing a {kind}")
        self.committed = False
        # the folders made to hold it, removed again if nothing is written (a report refused before any work)
        self.made = [path for path in self.out.parents if not path.exists()]
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            for tag in TAGS:  # left by a killed process (we hold the lock: none is live)
                for path in self.out.parent.glob(glob.escape(hidden_prefix(self.out.name, tag)) + "*"):
                    if _left_by_a_writer(path):
                        remove_tree(path)
            self.staging = Path(tempfile.mkdtemp(prefix=hidden_prefix(self.out.name, TAGS[0]), dir=self.out.parent))
            mark(self.staging, kind)
        except OSError as exc:
            self.lock.release()
            if isinstance(exc, FileExistsError):
                raise GanlabError(f"cannot create {self.out}: a file is in the way") from None
            raise os_error(f"write the {kind} into", self.out.parent, exc) from None

    def write_text(self, name: str, text: str) -> Path:
        try:
            return write_atomically(self.staging / name, text)
        except OSError as exc:
            raise os_error("write", self.out / name, exc) from None

    def commit(self) -> Path:
        """Swap the finished folder in; the previous one is removed only once the new one is in place."""
        try:
            mark(self.staging, self.kind, files=files_in(self.staging))
            os.chmod(self.staging, mode_of(self.out, folder=True))  # mkdtemp's is private: the folder's own
            swap_folder(self.staging, self.out)
        except OSError as exc:
            raise os_error(f"replace the {self.kind}", self.out, exc) from None
        self.committed = True
        self.lock.release()
        return self.out

    def discard(self) -> None:
        """Remove the staging folder unless committed, and let go of the lock."""
        if not self.committed:
            remove_tree(self.staging)
            for path in self.made:  # deepest first; one that now holds something stays
                with contextlib.suppress(OSError):
                    path.rmdir()
        self.lock.release()

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
