"""Checkpoints: contents, atomic writes, hostile/corrupt files, the pytorch/examples format."""
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import ganlab
from ganlab.cli import cli
from ganlab.errors import GanlabError
from ganlab.model.checkpoint import read_checkpoint, save_checkpoint


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


def test_save_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """Durability: the bytes reach the disk before the rename, and the rename before save_checkpoint returns."""
    path = tmp_path / "ckpt.pt"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)  # which file or folder this descriptor is, and how much of it there is
        events.append(("fsync", (st.st_dev, st.st_ino), st.st_size))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", (os.stat(src).st_dev, os.stat(src).st_ino), None))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint({"value": torch.arange(1000.0)}, path)
    monkeypatch.undo()
    file_id = (path.stat().st_dev, path.stat().st_ino)
    folder_id = (tmp_path.stat().st_dev, tmp_path.stat().st_ino)
    assert [(kind, ident) for kind, ident, _ in events] == [("fsync", file_id), ("replace", file_id),
                                                            ("fsync", folder_id)]
    assert events[0][2] == path.stat().st_size  # the file was complete when it was synced
    assert torch.equal(read_checkpoint(path)["value"], torch.arange(1000.0))


# Each case runs in a forked child that saves checkpoint 1, then dies by SIGKILL (no clean-up can run) while
# saving checkpoint 2: after a chosen number of bytes of the new file (a write hook on the file object
# the atomic writer opens), or in its fsync (every byte written, not yet renamed). "complete" saves both.
KILLED_WRITER = """
import io, os, signal, sys, traceback
import torch
import ganlab.model.checkpoint as checkpoint
import ganlab.store.atomic as atomic

def old_then_new(folder, kill_at):
    path = os.path.join(folder, "last.pt")
    checkpoint.save_checkpoint({"i": 1, "w": torch.full((50_000,), 1.0)}, path)

    class Dies(io.FileIO):
        written = 0

        def write(self, data):
            data = bytes(data)
            if isinstance(kill_at, int) and Dies.written + len(data) > kill_at:
                super().write(data[:kill_at - Dies.written])
                os.kill(os.getpid(), signal.SIGKILL)
            Dies.written += len(data)
            return super().write(data)

    def opener(file, mode="r", *args, **kwargs):
        return Dies(file, mode.replace("b", "")) if "w" in mode else open(file, mode, *args, **kwargs)

    def dies(fd):
        os.kill(os.getpid(), signal.SIGKILL)

    atomic.open = opener  # the writing module's open(): only the checkpoint's own file gets the hook
    if kill_at == "fsync":
        atomic.os.fsync = dies
    checkpoint.save_checkpoint({"i": 2, "w": torch.full((50_000,), 2.0)}, path)
    with open(os.path.join(folder, "size"), "w") as f:
        f.write(str(Dies.written))

size = None
for spec in sys.argv[2:]:
    folder = os.path.join(sys.argv[1], spec)
    os.mkdir(folder)
    at = {"complete": None, "fsync": "fsync", "half": size and size // 2, "last": size and size - 1}.get(spec)
    at = int(spec) if spec.isdigit() else at
    pid = os.fork()
    if pid == 0:
        try:
            old_then_new(folder, at)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(3)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if spec == "complete":
        size = int(open(os.path.join(folder, "size")).read())
    print(spec, at, status, flush=True)
"""


def test_kill_9_at_chosen_bytes_of_a_save_keeps_the_old_checkpoint(tmp_path):
    """Deterministic kill -9 mid-save: the previous checkpoint stays whole and nothing partial replaces it."""
    specs = ["complete", "0", "1", "64", "half", "last", "fsync"]
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), *specs], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert list(outcome) == specs, result.stdout + result.stderr[-2000:]
    size = int((tmp_path / "complete" / "size").read_text())
    assert outcome["complete"] == ["None", "0"] and size == (tmp_path / "complete" / "last.pt").stat().st_size
    assert read_checkpoint(tmp_path / "complete" / "last.pt")["i"] == 2 and size > 200_000
    assert [outcome[s][0] for s in ("half", "last")] == [str(size // 2), str(size - 1)]
    for spec in specs[1:]:
        assert outcome[spec][1] == str(-signal.SIGKILL), (spec, result.stderr[-2000:])
        folder = tmp_path / spec
        payload = read_checkpoint(folder / "last.pt")  # whole and loadable: the old one
        assert payload["i"] == 1 and torch.all(payload["w"] == 1.0), spec
        # a dead writer cannot remove its temp file; but it is hidden and never named like a checkpoint
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["last.pt"], spec
        assert all(p.name.endswith(".tmp") for p in folder.iterdir() if p.name.startswith("."))


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


def test_pytorch_examples_saved_from_a_data_parallel_model_load_the_same(examples_pair, tmp_path):
    g, d, folder = examples_pair
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    for name, model in (("netG_epoch_24.pth", g), ("netD_epoch_24.pth", d)):
        torch.save(torch.nn.DataParallel(model).state_dict(), wrapped / name)  # every key starts with module.
    plain, loaded = ganlab.load(folder / "netG_epoch_24.pth"), ganlab.load(wrapped / "netG_epoch_24.pth")
    assert loaded.config == plain.config and loaded.discriminator is not None
    z = torch.randn(4, 20, 1, 1)
    with torch.no_grad():
        assert torch.equal(loaded.generator(z), plain.generator(z))
        assert torch.equal(loaded.discriminator(g(z)), plain.discriminator(g(z)))


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
    from ganlab.plugin import registry

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


def _safetensors(path, tensors):
    """The safetensors layout (8-byte header length, JSON header, raw little-endian data), written by hand."""
    import json as _json
    import struct

    header, blobs, start = {}, [], 0
    for name, tensor in tensors.items():
        data = tensor.float().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [start, start + len(data)]}
        blobs.append(data)
        start += len(data)
    head = _json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def _read_safetensors(path):
    import json as _json
    import struct

    raw = Path(path).read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header, body = _json.loads(raw[8:8 + size]), raw[8 + size:]
    return {name: torch.frombuffer(bytearray(body[a:b]), dtype=torch.float32).reshape(info["shape"])
            for name, info in header.items() for a, b in [info["data_offsets"]]}


def test_torchscript_export_and_safetensors_files_reach_loader_plugins(tiny_run, tmp_path):
    """Formats torch.load cannot (or must not) read go to the plugins' ganlab_load_checkpoint first."""
    import ganlab.testing

    gan = ganlab.load(tiny_run / "last.pt")
    z = ganlab.sample_latent(gan.config, 2, torch.Generator().manual_seed(0))
    with warnings.catch_warnings():  # TorchScript is deprecated, yet such files are still around
        warnings.simplefilter("ignore")
        torch.jit.trace(gan.generator, z).save(tmp_path / "g.torchscript.pt")
    torch.export.save(torch.export.export(gan.generator, (z,)), tmp_path / "g.pt2")
    _safetensors(tmp_path / "g.safetensors", gan.generator.state_dict())
    readers = {".pt": lambda p: torch.jit.load(p).state_dict(), ".pt2": lambda p: torch.export.load(p).state_dict,
               ".safetensors": _read_safetensors}
    seen = []

    class Reader:
        @ganlab.hookimpl
        def ganlab_load_checkpoint(self, path, state):
            seen.append((Path(path).name, state))
            weights = readers[Path(path).suffix](path)
            return ganlab.LoadedGAN.from_state_dicts(gan.config, weights, None, path=path, meta={"format": "x"})

    with ganlab.testing.plugin(Reader(), "many-formats"):
        for name in ("g.torchscript.pt", "g.pt2", "g.safetensors"):
            loaded = ganlab.load(tmp_path / name)
            assert torch.equal(loaded.sample(3, seed=1), gan.sample(3, seed=1)), name
    assert seen == [("g.torchscript.pt", None), ("g.pt2", None), ("g.safetensors", None)]
