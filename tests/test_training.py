"""Training: determinism, resume, Ctrl-C, divergence, logs, sample grids, DDP on CPU."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

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


def test_ctrl_c_saves_at_a_step_boundary_and_resume_continues(tmp_path, monkeypatch):
    straight = train(tiny_options(tmp_path / "a", epochs=3), progress=False)
    real_step = Trainer.train_step
    calls = {"n": 0}

    def interrupted_step(self, real):
        calls["n"] += 1
        if calls["n"] == 5:  # second batch of epoch 2: a real SIGINT arrives in the middle of the step
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, real)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_options(tmp_path / "b", epochs=3), progress=False)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    saved = read_checkpoint(tmp_path / "b" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (1, 2, 5)  # the step finished first
    bn_steps = [v.item() for k, v in saved["discriminator"].items() if k.endswith("num_batches_tracked")]
    assert bn_steps and all(n == 3 * 5 for n in bn_steps)  # D runs on real, fake and (G step) fake per step
    resumed = train(tiny_options(tmp_path / "b", epochs=3, resume=str(tmp_path / "b" / "last.pt")), progress=False)
    g1, d1, p1 = _weights(straight)
    g2, d2, p2 = _weights(resumed)
    assert state_equal(g1, g2) and state_equal(d1, d2) and p1["history"] == p2["history"]
    lines = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert lines == list(range(1, 10))


def test_a_raw_keyboard_interrupt_mid_step_keeps_the_last_consistent_checkpoint(tmp_path, monkeypatch):
    real_step = Trainer.train_step
    calls = {"n": 0}

    def broken_step(self, real):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # not a signal: the step is half done, so nothing may be saved from it
        return real_step(self, real)

    monkeypatch.setattr(Trainer, "train_step", broken_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_options(tmp_path / "b", epochs=3), progress=False)
    saved = read_checkpoint(tmp_path / "b" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == (1, 0, 3)


def _train_args(out, epochs, *extra):
    return [sys.executable, "-m", "ganlab", "train", "--dataset", "digits", "--image-size", "16", "--ngf", "8",
            "--ndf", "8", "--nz", "8", "--limit", "640", "--batch-size", "16", "--epochs", str(epochs),
            "--device", "cpu", "--out", str(out), *[str(e) for e in extra]]


def _logged_steps(out):
    log = out / "log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_real_sigint_to_a_real_process_then_resume_equals_the_straight_run(tmp_path):
    """SIGINT a real `ganlab train` at several moments (mid-epoch, several times), resume each time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_args(straight, 2), check=True, capture_output=True, env=env, timeout=300)
    out = tmp_path / "stopped"
    stops = []
    for attempt, at_step in enumerate((7, 29, 52)):  # epoch 1 twice, then epoch 2 (40 steps per epoch)
        extra = ["--resume", out / "last.pt"] if attempt else []
        proc = subprocess.Popen(_train_args(out, 2, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        deadline = time.time() + 120
        while _logged_steps(out) < at_step and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err, err[-1500:]
        saved = read_checkpoint(out / "last.pt")
        stops.append(saved["step"])
        assert saved["step"] == _logged_steps(out)  # the checkpoint and the log agree
    assert stops == sorted(stops) and stops[0] >= 7
    subprocess.run(_train_args(out, 2, "--resume", out / "last.pt"), check=True, capture_output=True, env=env,
                   timeout=300)
    g1, d1, p1 = _weights(straight / "last.pt")
    g2, d2, p2 = _weights(out / "last.pt")
    assert state_equal(g1, g2) and state_equal(d1, d2) and p1["history"] == p2["history"] and p2["step"] == 80


def test_training_into_an_existing_run_is_refused_unless_asked(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                                 "--limit", "96", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 1 and "already holds a training run" in result.output
    assert "--resume" in result.output and "--overwrite" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                                 "--nz", "8", "--limit", "96", "--epochs", "1", "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch_0001.pt", "last.pt"]  # the old epoch 2 is gone
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # one run's one step, not two runs' seven
    assert (out / "notes.txt").read_text() == "mine"  # files that are not the run's stay


def test_resume_with_contradicting_model_flags_names_the_flag(tmp_path, tiny_run):
    with pytest.raises(GanlabError, match="--ngf 16 contradicts .* whose model has ngf 8; drop --ngf"):
        train(tiny_options(tmp_path / "x", epochs=3, ngf=16, resume=str(tiny_run / "last.pt")), progress=False)
    with pytest.raises(GanlabError, match="--preset dcgan64 contradicts"):
        train(tiny_options(tmp_path / "x", epochs=3, preset="dcgan64", image_size=None, ngf=None, ndf=None, nz=None,
                           resume=str(tiny_run / "last.pt")), progress=False)
    # the flags the checkpoint agrees with are fine, and the default run folder is the checkpoint's own
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    options = tiny_options(None, epochs=3, resume=str(copy / "last.pt")).updated(out=None)
    assert train(options, progress=False) == copy / "last.pt"


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
    calls["n"] = 4  # now the first step of a fresh run diverges: no checkpoint exists to point at
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                                      "--limit", "96", "--batch-size", "32", "--epochs", "3", "--out",
                                      str(tmp_path / "fresh")])
    assert result.exit_code == 1 and "no checkpoint was written yet" in result.output
    assert "last good checkpoint" not in result.output


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


def test_exclude_leaves_the_listed_images_out(tmp_path):
    from ganlab import load_split

    listed = tmp_path / "exclude.txt"
    listed.write_text("# duplicates\n3\n5\n\n700  # a comment\n")
    last = train(tiny_options(tmp_path / "run", epochs=1, limit=None, exclude=str(listed)), progress=False)
    assert read_checkpoint(last)["dataset"]["size"] == 898 - 3
    everything, _ = load_split("digits", "train", image_size=16, channels=1, progress=False)
    kept, _ = load_split("digits", "train", image_size=16, channels=1, progress=False, exclude={3, 5, 700})
    expected = torch.cat([everything[:3], everything[4:5], everything[6:700], everything[701:]])
    assert torch.equal(kept, expected)
    for text, message in [("3\nfive\n", "line 2: 'five' is not an image position"),
                          ("9000\n", "names image 9000, but digits/train has 898 images")]:
        listed.write_text(text)
        with pytest.raises(GanlabError, match=message):
            train(tiny_options(tmp_path / "again", epochs=1, exclude=str(listed)), progress=False)
