"""Shared fixtures: tiny, fast training runs on the embedded digits; a feature cache kept out of $HOME."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# --- the feature cache: never the user's ---------------------------------------------------------
# Components cache D features under $GANLAB_CACHE (else ~/.cache/ganlab). A function-scoped fixture
# cannot cover module- and session-scoped fixtures (they run first), so the whole session points
# GANLAB_CACHE at a temporary folder from the start; subprocesses inherit it. Every write this
# process makes under the real cache folder is recorded by an audit hook and fails the session.
_SESSION = {"real_cache": None, "test_cache": None, "writes": []}
_WRITE_EVENTS = frozenset({"open", "os.mkdir", "os.rename", "os.remove", "os.truncate", "shutil.copyfile",
                           "shutil.rmtree"})


def _real_cache_dir() -> Path:
    """Where `ganlab report` would cache features for this user, without the tests' override."""
    return Path(os.environ.get("GANLAB_CACHE") or Path.home() / ".cache" / "ganlab").expanduser().resolve()


def _is_write(event, args) -> bool:
    if event != "open":
        return True
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
    if isinstance(mode, str):
        return bool(set(mode) & set("wax+"))
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def _audit(event, args):
    if event not in _WRITE_EVENTS or not args or not _is_write(event, args):
        return
    real = _SESSION["real_cache"]
    for target in args[:2] if event in ("os.rename", "shutil.copyfile") else args[:1]:
        if isinstance(target, (str, bytes, os.PathLike)):
            try:
                path = Path(os.fsdecode(target)).resolve()
            except (OSError, ValueError):
                continue
            if real is not None and (path == real or real in path.parents):
                _SESSION["writes"].append(f"{event} {path}")


def pytest_configure(config):
    if _SESSION["test_cache"] is not None:
        return
    _SESSION["real_cache"] = _real_cache_dir()
    _SESSION["test_cache"] = tempfile.mkdtemp(prefix="ganlab-test-cache-")
    os.environ["GANLAB_CACHE"] = _SESSION["test_cache"]
    sys.addaudithook(_audit)


def pytest_unconfigure(config):
    if _SESSION["test_cache"]:
        shutil.rmtree(_SESSION["test_cache"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _nothing_written_to_the_real_cache():
    """Fails the session (an error at its last teardown) if anything was written under the user's cache."""
    yield
    writes = _SESSION["writes"]
    assert not writes, f"the tests wrote into the user's cache {_SESSION['real_cache']}: {writes[:5]}"


def session_cache_state():
    """(the user's real cache folder, the session's test cache, writes into the real one so far), for tests."""
    return _SESSION["real_cache"], Path(_SESSION["test_cache"]), list(_SESSION["writes"])


# --- tiny runs -------------------------------------------------------------------------------------

def tiny_options(out, **changes):
    """A DCGAN small enough to train 2 epochs on 96 digits in about a second."""
    from ganlab.defaults import TrainOptions

    base = dict(dataset="digits", image_size=16, ngf=8, ndf=8, nz=8, epochs=2, batch_size=32, limit=96,
                out=str(out), device="cpu", seed=0)
    base.update(changes)
    return TrainOptions(**base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 2-epoch run folder (epoch_0001.pt, epoch_0002.pt, last.pt, samples/, log.jsonl)."""
    import ganlab

    out = tmp_path_factory.mktemp("tiny") / "run"
    ganlab.train(tiny_options(out), progress=False)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Components cache features; keep each test's cache private (the session-wide one covers fixtures).
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside a fresh temporary folder (default outputs such as reports/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the real command line ---------------------------------------------------------------------------
# progress on stderr (`ganlab report`'s status lines, tqdm bars, cache notes); everything else there must be the
# one error line
STATUS = re.compile(r"^(report for .*|  [a-z0-9-]+: (ok|skipped|FAILED|TIMED OUT) .*|report: file://.*|cache: .*"
                    r"|.*\d+/\d+ \[[^\]]*\]\s*)$")


def snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` (links not followed) and its bytes."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def run_cli(args, cwd, *, code=1, env=None, watch=None):
    """Run `python -m ganlab ARGS` in cwd; check the exit code, one stderr line, no traceback, and that every file
    under cwd (and under ``watch``, a folder elsewhere) is byte-identical afterwards; returns that line."""
    folders = [Path(cwd)] + ([Path(watch)] if watch else [])
    before = [snapshot(f) for f in folders]
    result = subprocess.run([sys.executable, "-m", "ganlab", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not STATUS.match(line)]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for folder, old in zip(folders, before):
        after = snapshot(folder)
        assert {p: after.get(p) for p in old} == old, "a file that existed before was changed or removed"
    return lines[0]


def picture_folder(root: Path, count: int = 40) -> Path:
    """``root/a`` and ``root/b``, each ``count / 2`` random 16x16 RGB PNGs: a small labelled folder dataset."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(count // 2):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def state_equal(a, b):
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def one_thread():
    """torch on one CPU thread for a test; a module: ``pytestmark = pytest.mark.usefixtures("one_thread")``.

    Small products on a shared 2-core machine run far faster on one thread than on two threads waiting on
    each other (an Inception forward: 0.3 s against 4.7 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
