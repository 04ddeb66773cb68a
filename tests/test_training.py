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
from ganlab.cli import cli
from ganlab.errors import GanlabError
from ganlab.model.checkpoint import read_checkpoint
from ganlab.model.training import Trainer


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
    mine = {out / "notes.txt": b"mine", out / "epoch_best.pt": (out / "last.pt").read_bytes(),
            out / "samples" / "epoch_final.png": b"mine"}  # named like the run's files, but not what it writes
    for path, data in mine.items():
        path.write_bytes(data)
    result = runner.invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                                 "--nz", "8", "--limit", "96", "--epochs", "1", "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch_0001.pt", "epoch_best.pt", "last.pt"]  # epoch 2 went
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # one run's one step, not two runs' seven
    assert {path: path.read_bytes() for path in mine} == mine  # files that are not the run's stay


def test_a_folder_of_another_tool_is_not_taken_for_a_run(tmp_path):
    """A log.jsonl beside a checkpoint named like ganlab's but not as ganlab names them: someone else's folder,
    which --overwrite must not touch."""
    out = tmp_path / "theirs"
    out.mkdir()
    mine = {out / "log.jsonl": b'{"loss": 1}\n', out / "epoch_best.pt": b"weights"}
    for path, data in mine.items():
        path.write_bytes(data)
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf",
                                      "8", "--limit", "96", "--epochs", "1", "--out", str(out), "--overwrite"])
    assert result.exit_code == 1 and "is not a ganlab run folder" in result.output, result.output
    assert {path: path.read_bytes() for path in out.iterdir()} == mine


def test_quiet_training_prints_the_result_without_progress_bars(tmp_path):
    flags = ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "8",
             "--limit", "96", "--epochs", "1"]
    loud = CliRunner().invoke(cli, [*flags, "--out", str(tmp_path / "loud")])
    quiet = CliRunner().invoke(cli, [*flags, "--out", str(tmp_path / "quiet"), "-q"])
    assert loud.exit_code == quiet.exit_code == 0, loud.output + quiet.output
    assert "epoch 1/1" in loud.output and "epoch 1/1" not in quiet.output and "%|" not in quiet.output
    assert quiet.output.strip() == f"trained 1 epochs; last checkpoint: {tmp_path / 'quiet' / 'last.pt'}"


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


@pytest.mark.parametrize("flag, dtype", [("--amp", torch.bfloat16), (None, torch.float32)])
def test_amp_flag_runs_the_convolutions_under_autocast(tmp_path, monkeypatch, flag, dtype):
    """`ganlab train --amp` on CPU: every conv of G and D computes in bfloat16 (float32 without the flag), and
    the bf16 run trains to finite losses."""
    seen, stepping = {"G": [], "D": []}, [False]
    real_step = Trainer.train_step

    def hook(name):
        def record(module, inputs, output):  # returns None: the output is left as it is
            if stepping[0]:
                seen[name].append(output.dtype)
        return record

    def spied_step(self, real):
        if not getattr(self, "_spied", False):
            self._spied = True
            for name, model in (("G", self.G), ("D", self.D)):
                for layer in model.modules():
                    if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                        layer.register_forward_hook(hook(name))
        stepping[0] = True
        try:
            return real_step(self, real)
        finally:
            stepping[0] = False

    monkeypatch.setattr(Trainer, "train_step", spied_step)
    args = ["train", "--dataset", "digits", "--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "8", "--limit",
            "64", "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, args + ([flag] if flag else []))
    assert result.exit_code == 0, result.output
    # 2 steps; per step G runs once and D three times (real, fake, G's step), 3 conv layers each at 16x16
    assert len(seen["G"]) == 2 * 3 and len(seen["D"]) == 2 * 3 * 3
    assert set(seen["G"]) == set(seen["D"]) == {dtype}
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["options"]["amp"] is (flag is not None)
    assert all(torch.isfinite(torch.tensor(payload["history"][key])).all() for key in ("loss_D", "loss_G"))


# Each rank runs `ganlab train` (the CLI, in-process) with Trainer._batches and Trainer.fit wrapped: every
# epoch's batches and the rank's final weights are written under RECORD for the test to compare.
DDP_RANK = """
import json, os, sys
import torch
from ganlab.model.training import Trainer

record = sys.argv[1]
real_batches, real_fit = Trainer._batches, Trainer.fit

def batches(self, epoch):
    out = real_batches(self, epoch)
    with open(os.path.join(record, f"rank{self.rank}-epoch{epoch}.json"), "w") as f:
        json.dump({"world": self.world, "batches": [b.tolist() for b in out]}, f)
    return out

def fit(self):
    last = real_fit(self)
    torch.save({"G": self.G.state_dict(), "D": self.D.state_dict(), "G_params": dict(self.G.named_parameters()),
                "D_params": dict(self.D.named_parameters())}, os.path.join(record, f"rank{self.rank}-final.pt"))
    return last

Trainer._batches, Trainer.fit = batches, fit
from ganlab.cli import cli
cli(sys.argv[2:], prog_name="ganlab")
"""


def test_ddp_two_processes_on_cpu(tmp_path):
    """torchrun, 2 CPU processes: disjoint shards that cover the data, reshuffled each epoch, identical weights."""
    out, record = tmp_path / "ddp", tmp_path / "record"
    record.mkdir()
    script = tmp_path / "rank.py"
    script.write_text(DDP_RANK)
    (tmp_path / "tmp").mkdir()  # torchrun leaves a torchelastic_* folder in the temporary directory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    # python -m torch.distributed.run is torchrun; each process runs the script, which runs the ganlab CLI
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(record), "train", "--dataset", "digits", "--image-size", "16",
                             "--ngf", "8", "--ndf", "8", "--nz", "8", "--limit", "96", "--batch-size", "32",
                             "--epochs", "2", "--device", "cpu", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = read_checkpoint(out / "last.pt")
    # each rank sees 48 images per epoch in local batches of 16 -> 3 steps per epoch
    assert payload["step"] == 6 and payload["epoch"] == 2
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 6  # only rank 0 writes
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch_0001.pt", "epoch_0002.pt", "last.pt"]

    seen = {}
    for rank in (0, 1):
        for epoch in (0, 1):
            recorded = json.loads((record / f"rank{rank}-epoch{epoch}.json").read_text())
            assert recorded["world"] == 2 and [len(b) for b in recorded["batches"]] == [16, 16, 16]
            seen[rank, epoch] = [i for batch in recorded["batches"] for i in batch]
    for epoch in (0, 1):
        first, second = seen[0, epoch], seen[1, epoch]
        assert not set(first) & set(second), f"epoch {epoch}: both ranks trained on the same images"
        assert sorted(first + second) == list(range(96))  # together, every image once
    for rank in (0, 1):
        assert seen[rank, 0] != seen[rank, 1], f"rank {rank} saw the same order in both epochs (set_epoch?)"
    assert set(seen[0, 0]) != set(seen[0, 1])  # reshuffled across ranks too, not only within a shard
    final = [torch.load(record / f"rank{rank}-final.pt", weights_only=True) for rank in (0, 1)]
    for model in ("G_params", "D_params"):
        assert state_equal(final[0][model], final[1][model]), f"{model}: the ranks' weights differ"
    # and rank 0's weights are the ones it saved
    assert state_equal(final[0]["G"], payload["generator"]) and state_equal(final[0]["D"], payload["discriminator"])


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
                          ("\u00b2\n", "line 1: '\u00b2' is not an image position"),
                          ("9000\n", "names image 9000, but digits/train has 898 images")]:
        listed.write_text(text)
        with pytest.raises(GanlabError, match=message):
            train(tiny_options(tmp_path / "again", epochs=1, exclude=str(listed)), progress=False)
