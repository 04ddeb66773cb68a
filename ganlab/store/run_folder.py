"""A training run's folder: one writer, never mixing two runs, never written unless it is ganlab's, and
stopping cleanly on Ctrl-C or SIGTERM (docs/faults.md). Nothing is written until training starts (``begin``), so
a start that fails (a missing dataset, a bad flag) leaves no trace; the run ``--overwrite`` replaces goes only then.
"""
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.store.atomic import os_error, write_atomically
from ganlab.store.claims import absolute, check_output, epoch_files, lock_folder, mark

LAST = "last.pt"
LOG = "log.jsonl"
SAMPLES = "samples"


def run_files(out: Path) -> list[Path]:
    """The files of a ganlab run in ``out`` (checkpoints, log, sample grids); other files are not ours."""
    return ([path for _, path in epoch_files(out)] + [out / name for name in (LAST, LOG) if (out / name).exists()]
            + [path for _, path in epoch_files(out / SAMPLES, "png")])


class RunFolder:
    """Claims ``out`` for a training run: checked and locked at once, written from ``begin()`` on."""

    def __init__(self, out: str | Path, *, resume: str | Path | None, resumed_epoch: int = 0, overwrite: bool,
                 sources: list[Path] = ()):
        self.out = absolute(out)
        check_output(self.out, "run", sources=list(sources))
        self.replace = self._replaced(resume, resumed_epoch, overwrite)
        # fail in a second, not after the data is decoded, where the run could not be written: probe the nearest
        # existing folder with a file that is removed at once (a file in its place fails as NotADirectoryError)
        folder = next(path for path in (self.out, *self.out.parents) if path.exists())
        try:
            with open(folder / f".ganlab-write-test-{os.getpid()}", "wb") as probe:
                os.unlink(probe.name)
        except OSError as exc:
            raise os_error("write the run into", self.out, exc) from None
        self.lock = lock_folder(self.out, "training")

    def _replaced(self, resume: str | Path | None, resumed_epoch: int, overwrite: bool) -> list[Path]:
        """The run files ``--overwrite`` removes once training starts; without it, why the folder is refused: it
        holds a run that this training would mix with its own."""
        existing = run_files(self.out)
        own = resume is not None and absolute(resume).parent == self.out
        if existing and not own:
            if not overwrite:
                raise GanlabError(f"{self.out} already holds {'another' if resume else 'a'} training run "
                                  f"({len(existing)} files, e.g. {existing[0].name}); continue it with --resume "
                                  f"{self.out / LAST}, train into a new --out, or give --overwrite to replace it")
            return existing
        # an epoch checkpoint past the resumed one: a continuation that was abandoned (a grid alone is what a
        # save that failed at the end of the epoch leaves, and training writes it again)
        later = [path for epoch, path in epoch_files(self.out) if own and epoch > resumed_epoch]
        if later and not overwrite:
            raise GanlabError(f"{self.out} holds epochs after epoch {resumed_epoch} of {Path(resume).name} (e.g. "
                              f"{later[0].name}), which this training would sit beside; resume into a new --out, "
                              "or give --overwrite to remove them")
        grids = [path for epoch, path in epoch_files(self.out / SAMPLES, "png") if epoch > resumed_epoch]
        return later + grids if later else []

    def begin(self) -> None:
        """Create the folder (or remove the run files ``--overwrite`` replaces) and mark it: training starts."""
        try:
            for path in self.replace:
                path.unlink()
            (self.out / SAMPLES).mkdir(parents=True, exist_ok=True)
            mark(self.out, "run")
        except OSError as exc:
            raise os_error("write the run into", self.out, exc) from None

    def release(self) -> None:
        self.lock.release()


def log_event(out: Path, event: dict) -> None:
    """Append one line to the run's log (e.g. a setting changed on resume)."""
    with open(out / LOG, "a") as log:
        log.write(json.dumps(event) + "\n")


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
    write_atomically(log, "".join(line + "\n" for line in kept))


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[list]:
    """While inside, Ctrl-C (SIGINT) and SIGTERM only set a flag (``flag[0]``, the signal's number) for the
    loop to check between steps.

    A step interrupted half-way would leave BatchNorm counters and optimiser state a step ahead of the
    recorded step, so the checkpoint saved on the signal would not resume exactly. A second signal aborts at
    once (no save; the epoch checkpoints stay as they are). Outside the main thread nothing changes.
    """
    flag: list = [None]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}

    def on_signal(signum, frame):
        if flag[0] is not None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            raise KeyboardInterrupt
        flag[0] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
