"""A report folder written all at once: built beside ``--out``, then swapped in.

A crash, a full disk or a read-only folder while the report is being written leaves the previous
report as it was: the new one lives in a hidden staging folder next to it until it is complete.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from ganlab.errors import GanlabError


def _os_error(what: str, path: Path, exc: OSError) -> GanlabError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return GanlabError(f"cannot {what} {path}: {reason}")


class ReportFolder:
    """``staging`` is where the renderer writes; ``commit()`` puts it in place of ``out``."""

    def __init__(self, out: Path):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise GanlabError(f"--out {self.out} is a file, not a folder; give a folder for the report")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        except FileExistsError:
            raise GanlabError(f"cannot create the report folder {self.out}: a file is in the way") from None
        except NotADirectoryError:
            raise GanlabError(f"cannot create the report folder {self.out}: part of its path is a file") from None
        except OSError as exc:
            raise _os_error("write the report into", self.out.parent, exc) from None
        self.committed = False

    def write_text(self, name: str, text: str) -> Path:
        path = self.staging / name
        try:
            path.write_text(text)
        except OSError as exc:
            raise _os_error("write", self.out / name, exc) from None
        return path

    def commit(self) -> Path:
        """Swap the finished report in; the previous one is removed only once the new one is in place."""
        old = None
        try:
            os.chmod(self.staging, 0o755)  # mkdtemp makes it private; a report is meant to be read
            if self.out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                os.replace(self.out, old / "report")
            os.replace(self.staging, self.out)
        except OSError as exc:
            if old is not None and (old / "report").exists() and not self.out.exists():
                os.replace(old / "report", self.out)  # put the previous report back
            raise _os_error("replace the report", self.out, exc) from None
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.out

    def discard(self) -> None:
        """Remove the staging folder if the report was not committed (an error or interruption)."""
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)
