"""Checkpoints: contents, atomic writes, hostile/corrupt files, the pytorch/examples format."""
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import ganlab
from ganlab.checkpoint import read_checkpoint, save_checkpoint
from ganlab.cli import cli
from ganlab.errors import GanlabError


def test_checkpoint_holds_everything(tiny_run):
    payload = read_checkpoint(tiny_run / "last.pt")
    for key in ("format_version", "ganlab_version", "config", "generator", "discriminator", "optimizer_g",
                "optimizer_d", "epoch", "step", "rng", "dataset", "options", "history"):
        assert key in payload, key
    assert payload["epoch"] == 2 and payload["step"] == 2 * 3  # 96 images / batch 32
    assert payload["dataset"] == {"name": "digits", "split": "train", "size": 96, "root": None}
    assert len(payload["history"]["loss_D"]) == 6 and payload["history"]["epoch_end_steps"] == [3, 6]
    assert payload["config"]["ngf"] == 8 and payload["config"]["channels"] == 1


def test_public_load_and_sample(tiny_run):
    gan = ganlab.load(tiny_run / "last.pt")
    assert gan.config.image_size == 16 and gan.discriminator is not None
    a, b, c = gan.sample(5, seed=1), gan.sample(5, seed=1), gan.sample(5, seed=2)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # a run folder stands for its last.pt
    assert torch.equal(ganlab.load(tiny_run).sample(2, seed=3), gan.sample(2, seed=3))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "ganlab", "x": _Payload(str(marker))}, hostile)
    with pytest.raises(GanlabError, match="refused"):
        ganlab.load(hostile)
    assert not marker.exists()
    legacy = tmp_path / "legacy.pt"  # a plain (non-zip) pickle stream
    legacy.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(GanlabError):
        ganlab.load(legacy)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "missing"])
def test_broken_files_give_one_line_errors(tiny_run, tmp_path, damage):
    path = tmp_path / "broken.pt"
    good = (tiny_run / "last.pt").read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "random":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    with pytest.raises(GanlabError) as info:
        ganlab.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(cli, ["sample", str(path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"value": torch.tensor([1.0])}, path)

    def exploding_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError):
        save_checkpoint({"value": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["value"], torch.tensor([1.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


WRITER = """
import sys, torch
from ganlab.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({"i": i, "w": torch.full((4_000_000,), float(i))}, sys.argv[1])
    print(i, flush=True)
"""


def test_kill_9_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):  # wait for two complete saves, so the kill lands mid-write of a later one
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    payload = read_checkpoint(path)
    assert payload["i"] >= 2 and torch.all(payload["w"] == payload["i"])


# --- pytorch/examples DCGAN checkpoints (netG_epoch_N.pth / netD_epoch_N.pth) ------------------------

class ExamplesG(nn.Module):
    """The pytorch/examples dcgan generator, written out layer by layer."""

    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class ExamplesD(nn.Module):
    def __init__(self, ndf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def _randomise(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen) * 0.1
                tensor.copy_((noise + 1).abs() if "running_var" in name else noise)


@pytest.fixture
def examples_pair(tmp_path):
    g, d = ExamplesG(nz=20, ngf=8, nc=3), ExamplesD(ndf=6, nc=3)
    _randomise(g, 0)
    _randomise(d, 1)
    torch.save(g.state_dict(), tmp_path / "netG_epoch_24.pth")
    torch.save(d.state_dict(), tmp_path / "netD_epoch_24.pth")
    return g.eval(), d.eval(), tmp_path


def test_pytorch_examples_pair_loads_and_matches(examples_pair):
    g, d, folder = examples_pair
    gan = ganlab.load(folder / "netG_epoch_24.pth")  # finds netD_epoch_24.pth beside it
    cfg = gan.config
    assert (cfg.image_size, cfg.channels, cfg.nz, cfg.ngf, cfg.ndf, cfg.kernel_size) == (64, 3, 20, 8, 6, 4)
    z = torch.randn(4, 20, 1, 1)
    with torch.no_grad():
        images = g(z)
        assert torch.allclose(gan.generator(z), images, atol=1e-6)
        # the examples' D ends in a Sigmoid; ganlab's D returns the logit that feeds it
        assert torch.allclose(torch.sigmoid(gan.discriminator(images)), d(images), atol=1e-6)


def test_pytorch_examples_files_are_read_once(examples_pair, monkeypatch):
    _, _, folder = examples_pair
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(os.path.basename(f)) or real_load(f, *a, **k))
    ganlab.load(folder / "netG_epoch_24.pth")
    assert sorted(reads) == ["netD_epoch_24.pth", "netG_epoch_24.pth"]


def test_a_file_not_written_by_torch_is_never_unpickled(tmp_path, monkeypatch):
    junk = tmp_path / "weights.npz"
    junk.write_bytes(b"\x93NUMPY random bytes")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(GanlabError, match="is not a checkpoint .not a file written by torch.save. and no plugin"):
        ganlab.load(junk)


def test_pytorch_examples_via_cli(examples_pair, tmp_path):
    _, _, folder = examples_pair
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["sample", "--generator", str(folder / "netG_epoch_24.pth"),
                                      "--discriminator", str(folder / "netD_epoch_24.pth"), "-n", "16", "--nrow", "4",
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2)  # make_grid's 2-pixel padding
    # a discriminator alone is explained, not misread
    with pytest.raises(GanlabError, match="discriminator"):
        ganlab.load(folder / "netD_epoch_24.pth")


def test_cli_sample_from_ganlab_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "s.png"
    result = CliRunner().invoke(cli, ["sample", str(tiny_run / "last.pt"), "-n", "8", "--nrow", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * 16 + 9 * 2, 16 + 2 * 2)


def test_report_accepts_a_pytorch_examples_pair(examples_pair, tmp_path):
    from ganlab import registry

    _, _, folder = examples_pair
    registry.reset()
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(folder / "netG_epoch_24.pth"), "--dataset", "digits",
                                      "--only", "d-score,latent-walk", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    import json

    components = json.loads((out / "metrics.json").read_text())["components"]
    assert components["d-score"]["status"] == "ok"  # the discriminator was found beside the generator
    assert components["d-score"]["metrics"]["images"] == 899
    assert components["latent-walk"]["status"] == "ok"
