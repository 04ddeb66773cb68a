"""Shared fixtures: tiny, fast training runs on the embedded digits."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
    # Components cache features; keep each test's cache private and out of $HOME.
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside a fresh temporary folder (default outputs such as reports/ land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def state_equal(a, b):
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

