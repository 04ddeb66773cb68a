"""Training: determinism, resume, Ctrl-C, divergence, logs, sample grids, DDP on CPU."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import state_equal, tiny_options
from PIL import Image

from ganlab import select_device, train
from ganlab.checkpoint import read_checkpoint
from ganlab.cli import cli
from ganlab.errors import GanlabError
from ganlab.training import Trainer


def _weights(path):
    payload = read_checkpoint(path)
    return payload["generator"], payload["discriminator"], payload


def test_two_epochs_plus_resume_equals_three_straight(tmp_path):
    straight = train(tiny_options(tmp_path / "a", epochs=3), progress=False)
    first = train(tiny_options(tmp_path / "b", epochs=2), progress=False)
    resumed = train(tiny_options(tmp_path / "b", epochs=3, resume=str(first)), progress=False)
    g1, d1, p1 = _weights(straight)
    g2, d2, p2 = _weights(resumed)
    assert state_equal(g1, g2) and state_equal(d1, d2)
    assert p1["history"]["loss_D"] == p2["history"]["loss_D"] and p2["step"] == 9
    other = train(tiny_options(tmp_path / "c", epochs=3, seed=1), progress=False)
    assert not state_equal(g1, _weights(other)[0])


def test_ctrl_c_saves_and_resume_continues_mid_epoch(tmp_path, monkeypatch):
    straight = train(tiny_options(tmp_path / "a", epochs=3), progress=False)
    real_step = Trainer.train_step
    calls = {"n": 0}

    def interrupted_step(self, real):
        calls["n"] += 1
        if calls["n"] == 5:  # second batch of epoch 2
            raise KeyboardInterrupt
        return real_step(self, real)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_options(tmp_path / "b", epochs=3), progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    saved = read_checkpoint(tmp_path / "b" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (1, 1, 4)
    resumed = train(tiny_options(tmp_path / "b", epochs=3, resume=str(tmp_path / "b" / "last.pt")), progress=False)
    assert state_equal(_weights(straight)[0], _weights(resumed)[0])


def test_divergence_stops_with_one_line_and_keeps_last_good(tmp_path, monkeypatch):
    real_step = Trainer.train_step
    calls = {"n": 0}

    def nan_step(self, real):
        calls["n"] += 1
        stats = real_step(self, real)
        return {**stats, "loss_G": float("nan")} if calls["n"] == 5 else stats

    monkeypatch.setattr(Trainer, "train_step", nan_step)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                                      "--limit", "96", "--batch-size", "32", "--epochs", "3", "--out", str(out)])
    assert result.exit_code == 1
    error_lines = [line for line in re.split(r"[\r\n]", result.output) if line.startswith("Error:")]
    assert len(error_lines) == 1 and "diverged at epoch 2, step 5" in error_lines[0]
    assert "Traceback" not in result.output
    assert read_checkpoint(out / "last.pt")["epoch"] == 1  # the last good one


def test_log_samples_and_checkpoints(tiny_run):
    lines = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and [r["step"] for r in lines] == list(range(1, 7))
    assert set(lines[0]) == {"epoch", "step", "loss_D", "loss_G", "D_x", "D_G_z"}
    assert all(0 <= r["D_x"] <= 1 and 0 <= r["D_G_z"] <= 1 for r in lines)
    history = read_checkpoint(tiny_run / "last.pt")["history"]
    assert [r["loss_D"] for r in lines] == pytest.approx(history["loss_D"])
    # loss_D is the BCE of real (target 1) plus fake (target 0): check one step by hand from D(x), D(G(z))
    # is impossible (those are means), but loss_D >= -log(mean D(x)) - log(1 - mean D(G(z))) by Jensen.
    for r in lines:
        assert r["loss_D"] >= -torch.log(torch.tensor(r["D_x"])) - torch.log(torch.tensor(1 - r["D_G_z"])) - 1e-5
    for epoch in (1, 2):
        grid = Image.open(tiny_run / "samples" / f"epoch_{epoch:04d}.png")
        assert grid.size == (8 * 16 + 9 * 2, 8 * 16 + 9 * 2)
        assert (tiny_run / f"epoch_{epoch:04d}.pt").is_file()
    assert os.path.samefile(tiny_run / "last.pt", tiny_run / "epoch_0002.pt")


def test_resume_past_the_end_and_bad_flags(tmp_path, tiny_run):
    with pytest.raises(GanlabError, match="already trained 2 epochs"):
        train(tiny_options(tmp_path / "x", epochs=2, resume=str(tiny_run / "last.pt")), progress=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--epochs", "0"])
    assert result.exit_code == 2 and "Invalid value for '--epochs'" in result.output
    result = runner.invoke(cli, ["train", "--no-such-flag"])
    assert result.exit_code == 2 and "No such option" in result.output
    result = runner.invoke(cli, ["train", "--dataset", "svhn", "--data-root", str(tmp_path / "nowhere"),
                                 "--epochs", "1"])
    assert result.exit_code == 1 and "svhn" in result.output and "Traceback" not in result.output


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(GanlabError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(GanlabError, match="unknown device"):
        select_device("tpu9")


def test_amp_bf16_trains_finite(tmp_path):
    last = train(tiny_options(tmp_path / "amp", epochs=1, amp=True), progress=False)
    history = read_checkpoint(last)["history"]
    assert all(torch.isfinite(torch.tensor(history["loss_G"])))


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun missing")
def test_ddp_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `torchrun -m ganlab` runs ganlab/__main__.py in each process, as `python -m ganlab` does
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "ganlab", "train",
                             "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "8",
                             "--limit", "96", "--batch-size", "32", "--epochs", "2", "--device", "cpu",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = read_checkpoint(out / "last.pt")
    # each rank sees 48 images per epoch in local batches of 16 -> 3 steps per epoch
    assert payload["step"] == 6 and payload["epoch"] == 2
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 6  # only rank 0 writes
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch_0001.pt", "epoch_0002.pt", "last.pt"]
