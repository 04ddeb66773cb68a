"""A training run's folder: what belongs to a run, never mixing two runs, and stopping cleanly on Ctrl-C.

A run folder holds ``epoch_NNNN.pt``, ``last.pt``, ``samples/epoch_NNNN.png`` and ``log.jsonl``. Training
into a folder that already holds a run needs ``--resume`` (continue it) or ``--overwrite`` (replace it);
otherwise it is refused, so two runs never end up plotted as one.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ganlab.errors import GanlabError

LAST = "last.pt"
LOG = "log.jsonl"
SAMPLES = "samples"


def run_files(out: Path) -> list[Path]:
    """The files of a ganlab run in ``out`` (checkpoints, log, sample grids); other files are not ours."""
    if not out.is_dir():
        return []
    found = sorted(out.glob("epoch_*.pt")) + [out / name for name in (LAST, LOG) if (out / name).exists()]
    if (out / SAMPLES).is_dir():
        found += sorted((out / SAMPLES).glob("epoch_*.png"))
    return found


def prepare(out: Path, *, resuming: bool, overwrite: bool) -> None:
    """Create ``out``, refusing to mix runs: an existing run needs ``resuming`` or ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise GanlabError(f"--out {out} is a file; give a folder for the run")
    existing = run_files(out)
    if existing and not resuming:
        if not overwrite:
            raise GanlabError(f"{out} already holds a training run ({len(existing)} files, e.g. {existing[0].name}); "
                              f"continue it with --resume {out / LAST}, train into a new --out, or give --overwrite "
                              "to replace it")
        for path in existing:
            path.unlink()
    try:
        (out / SAMPLES).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise os_error("write the run into", out, exc) from None


def os_error(what: str, path: Path, exc: OSError) -> GanlabError:
    """A one-line error for a failed write: says 'the disk is full' rather than an errno."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return GanlabError(f"cannot {what} {path}: part of that path is a file")
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return GanlabError(f"cannot {what} {path}: {reason}")


def trim_log(log: Path, step: int) -> None:
    """Keep only the log lines up to ``step`` (resuming from an earlier checkpoint drops the later ones)."""
    if not log.is_file():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a crash
    tmp = log.with_name(f".{log.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, log)


def link_atomically(source: Path, target: Path) -> None:
    """Point ``target`` at ``source``'s bytes (hard link, else copy) and swap it in with one rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


@contextmanager
def stop_at_step_boundary() -> Iterator[list[bool]]:
    """While inside, Ctrl-C (SIGINT) only sets a flag (``flag[0]``) for the loop to check between steps.

    A step interrupted half-way would leave BatchNorm counters and optimiser state a step ahead of the
    recorded step, so the checkpoint saved on Ctrl-C would not resume exactly. A second Ctrl-C aborts at
    once (no save; the epoch checkpoints stay as they are). Outside the main thread nothing changes.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_sigint(signum, frame):
        if flag[0]:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
