"""Fault injection: each bad input or fault, made here, thrown at the real command line.

Every case asserts the exit code, exactly one line on stderr with no traceback, and that every file that
existed before the command is byte-identical afterwards (nothing a user made is lost or changed).
"""
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import picture_folder, run_cli, snapshot

from ganlab.cli import cli
from ganlab.plugin import registry

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "8", "--limit", "96", "--batch-size", "32"]


def _cli(args, cwd, *, code=1):
    return run_cli(args, cwd, code=code)


@pytest.fixture
def work(tmp_path, tiny_run):
    """A folder holding a copy of a finished tiny run (run/) to throw faults at."""
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path


def _tiny_payload(tiny_run):
    return torch.load(tiny_run / "last.pt", weights_only=True)


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


FILES = {
    "random.pt": lambda run: os.urandom(4096),
    "empty.pt": lambda run: b"",
    "truncated.pt": lambda run: (run / "last.pt").read_bytes()[:3000],
    "hostile.pt": lambda run: pickle.dumps(_Hostile(), protocol=2),
    "notes.txt.pt": lambda run: b"just some text, not a checkpoint\n",
}
EXPECTED = {
    "random.pt": "is not a checkpoint",
    "empty.pt": "empty",
    "truncated.pt": "truncated or corrupt",
    "hostile.pt": "would run code",
    "notes.txt.pt": "is not a checkpoint",
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_bad_checkpoint_files(work, name):
    (work / name).write_bytes(FILES[name](work / "run"))
    line = _cli(["report", name, "--only", "latent-walk", "--out", "r"], work)
    assert line.startswith("Error: ") and EXPECTED[name] in line, line
    assert not (work / "pwned").exists() and not (work / "r").exists()


def test_state_dict_mismatch_names_the_tensors(work, tiny_run):
    payload = _tiny_payload(tiny_run)
    payload["config"]["ngf"] = 16
    torch.save(payload, work / "mismatch.pt")
    line = _cli(["report", "mismatch.pt", "--only", "latent-walk", "--out", "r"], work)
    assert "generator weights do not fit the model config" in line
    assert "main.0.weight" in line and "(file vs model)" in line


def test_resume_from_a_foreign_file_and_a_hostile_one(work):
    torch.save({"main.0.weight": torch.zeros(2)}, work / "state.pt")
    assert "only ganlab checkpoints can be resumed" in _cli(["train", "--resume", "state.pt", "--epochs", "3"], work)
    (work / "hostile.pt").write_bytes(pickle.dumps(_Hostile(), protocol=2))
    assert "would run code" in _cli(["train", "--resume", "hostile.pt", "--epochs", "3"], work)
    assert not (work / "pwned").exists()


@pytest.mark.parametrize("args, message, code", [
    (["--lr", "nan"], "lr a finite number", 1),
    (["--lr", "inf"], "lr a finite number", 1),
    (["--seed", "-1"], "'--seed': -1 is not in the range", 2),
    (["--seed", str(2**63)], "is not in the range", 2),
    (["--epochs", "0"], "'--epochs'", 2),
    (["--no-such-flag"], "No such option", 2),
])
def test_bad_training_values(work, args, message, code):
    line = _cli(["train", "--dataset", "digits", "--out", "new", *TINY, *args], work, code=code)
    assert message in line, line
    assert not (work / "new").exists()


def test_training_output_paths(work):
    (work / "afile").write_text("x")
    assert "part of that path is a file" in _cli(["train", "--dataset", "digits", "--out", "afile/run", *TINY], work)
    line = _cli(["train", "--dataset", "digits", "--out", "run", *TINY], work)
    assert "already holds a training run" in line and "--overwrite" in line


def test_sample_outputs(work):
    assert "unknown image extension '.xyz'" in _cli(["sample", "run", "--out", "grid.xyz"], work)
    (work / "afile").write_text("x")
    assert "part of that path is a file" in _cli(["sample", "run", "--out", "afile/grid.png"], work)
    result = subprocess.run([sys.executable, "-m", "ganlab", "sample", "run", "--out", "new/deeper/grid.png"],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 0 and (work / "new" / "deeper" / "grid.png").is_file(), result.stderr


def test_a_generator_that_outputs_nan_is_reported_broken(work, tiny_run):
    payload = _tiny_payload(tiny_run)
    payload["generator"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                            for k, v in payload["generator"].items()}
    torch.save(payload, work / "nan.pt")
    assert "the generator is broken" in _cli(["sample", "nan.pt", "--out", "g.png"], work)
    assert not (work / "g.png").exists()
    line = _cli(["report", "nan.pt", "--only", "latent-walk", "--out", "r", "--quiet"], work)
    assert "components failed: latent-walk" in line and "also: the generator is broken" in line
    assert "G&#39;s output is NaN or infinite" in (work / "r" / "index.html").read_text()  # the component says why
    report = json.loads((work / "r" / "metrics.json").read_text())
    assert any("NaN or infinite" in p for p in report["problems"])


def test_a_corrupt_epoch_file_does_not_lose_the_report(work):
    (work / "run" / "epoch_0001.pt").write_bytes(b"PK\x03\x04 torn")
    line = _cli(["report", "run", "--only", "latent-walk", "--out", "r", "--quiet"], work)
    assert "written with problems: across epochs: skipped epoch_0001.pt" in line and "archive is damaged" in line
    metrics = json.loads((work / "r" / "metrics.json").read_text())
    assert metrics["components"]["latent-walk"]["status"] == "ok"
    assert [e for e, _ in metrics["across_epochs"]["latent-walk.max_step_over_endpoint_change"]] == [2]
    assert "skipped epoch_0001.pt" in (work / "r" / "index.html").read_text()


def test_malformed_metadata_is_named_and_the_report_written(work, tiny_run):
    payload = _tiny_payload(tiny_run)
    payload.update(epoch="two", history="lost", options=["not", "a", "dict"], dataset={"name": "digits", "root": 7})
    torch.save(payload, work / "odd.pt")
    line = _cli(["report", "odd.pt", "--only", "latent-walk", "--out", "r", "--quiet"], work)
    assert "training history is a str" in line
    metrics = json.loads((work / "r" / "metrics.json").read_text())
    assert metrics["training"]["epoch"] is None and metrics["components"]["latent-walk"]["status"] == "ok"


def test_report_out_is_checked_before_anything_runs(work):
    (work / "afile").write_text("x")
    assert "'afile' is a file" in _cli(["report", "run", "--out", "afile"], work, code=2)
    assert "a file is in the way" in _cli(["report", "run", "--out", "afile/r"], work)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_a_report_keeps_the_previous_one(work, monkeypatch):
    registry.reset()
    runner = CliRunner()
    assert runner.invoke(cli, ["report", str(work / "run"), "--only", "latent-walk", "--out", str(work / "r"),
                               "--quiet"]).exit_code == 0
    before = snapshot(work / "r")
    import ganlab.report.render

    monkeypatch.setattr(ganlab.report.render._Assets, "image", lambda *a, **k: _disk_full())
    result = runner.invoke(cli, ["report", str(work / "run"), "--only", "latent-walk", "--out", str(work / "r"),
                                 "--quiet"])
    assert result.exit_code == 1 and result.stderr.strip().endswith("the disk is full"), result.output
    assert snapshot(work / "r") == before  # the old report, whole
    assert not [p for p in work.iterdir() if p.name.startswith(".r.")]  # no staging folder left behind


def test_disk_full_while_training_keeps_the_last_checkpoint(work, monkeypatch):
    shutil.copytree(work / "run", work / "cont")
    before = snapshot(work / "cont")
    import ganlab.model.checkpoint

    monkeypatch.setattr(ganlab.model.checkpoint.torch, "save", _disk_full)
    registry.reset()
    result = CliRunner().invoke(cli, ["train", "--resume", str(work / "cont" / "last.pt"), "--epochs", "3"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write the checkpoint" in result.output and "the disk is full" in result.output
    after = snapshot(work / "cont")
    assert all(after[p] == before[p] for p in before if p.suffix == ".pt")
    assert not [p for p in (work / "cont").iterdir() if p.name.endswith(".tmp")]


def test_unknown_names_in_disable_plugins_are_warned_about(work):
    env = {**os.environ, "GANLAB_DISABLE_PLUGINS": "no-such-plugin"}
    result = subprocess.run([sys.executable, "-m", "ganlab", "plugins"], cwd=work, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0
    assert result.stderr.strip() == ("ganlab: warning: GANLAB_DISABLE_PLUGINS names unknown plugins: no-such-plugin "
                                     "(see `ganlab plugins`)")


def test_truncated_zip_checkpoint_is_one_line(work):
    data = (work / "run" / "last.pt").read_bytes()
    assert zipfile.is_zipfile(work / "run" / "last.pt")
    (work / "cut.pt").write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _cli(["sample", "cut.pt", "--out", "g.png"], work)


def _mounted_tmpfs(mount: Path, options: str):
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs: room for about three tiny checkpoints. Skipped where mounting is not allowed."""
    yield from _mounted_tmpfs(tmp_path / "disk", "size=400k")


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs (even root cannot write there). Skipped where mounting is not allowed."""
    yield from _mounted_tmpfs(tmp_path / "ro", "ro,size=64k")


def test_read_only_output_folders(work, read_only_disk):
    assert "Read-only file system" in _cli(["report", "run", "--out", read_only_disk / "r"], work)
    line = _cli(["train", "--dataset", "digits", *TINY, "--out", read_only_disk / "run"], work)
    assert line.startswith("Error: cannot write the run into") and "Read-only file system" in line
    assert "Read-only file system" in _cli(["sample", "run", "--out", read_only_disk / "g.png"], work)


def test_a_real_full_disk_while_training(small_disk):
    """Training fills a real small disk: one line, exit 1, every checkpoint left behind is whole."""
    line = _cli(["train", "--dataset", "digits", *TINY, "--epochs", "50", "--out", small_disk / "run",
                 "--device", "cpu"], small_disk.parent)
    assert line.startswith("Error: cannot write") and line.endswith("the disk is full"), line
    checkpoints = sorted((small_disk / "run").glob("epoch_*.pt"))
    assert checkpoints and not list((small_disk / "run").glob(".*.tmp"))
    from ganlab.model.checkpoint import read_checkpoint

    for path in checkpoints + [small_disk / "run" / "last.pt"]:
        assert read_checkpoint(path)["format"] == "ganlab"  # loads: nothing half-written


def test_a_sample_grid_replaces_its_file_whole(work, small_disk):
    """`sample --out` swaps the new grid in: a full disk leaves the previous picture byte for byte, and a hard link
    the user made to it keeps its bytes when the grid is rewritten; its permissions stay."""
    grid, run = small_disk / "g.png", str(work / "run")
    sample = ["sample", run, "-n", "4", "--out", str(grid)]
    assert CliRunner().invoke(cli, sample).exit_code == 0
    before = grid.read_bytes()
    free = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(bytes(free.f_bavail * free.f_frsize - 8192))
    line = _cli(["sample", run, "-n", "4096", "--out", "g.png"], small_disk)
    assert line.endswith("the disk is full"), line
    assert grid.read_bytes() == before and sorted(p.name for p in small_disk.iterdir()) == ["filler", "g.png"]
    (small_disk / "filler").unlink()
    os.link(grid, small_disk / "kept.png")
    grid.chmod(0o640)
    (small_disk / "link.png").symlink_to("g.png")  # a link named as --out is written through
    assert CliRunner().invoke(cli, [*sample[:-1], str(small_disk / "link.png"), "--seed", "1"]).exit_code == 0
    assert (small_disk / "kept.png").read_bytes() == before != grid.read_bytes()
    assert (small_disk / "link.png").is_symlink() and grid.stat().st_mode & 0o777 == 0o640


def test_a_corrupt_image_names_the_file_and_can_be_skipped(work):
    pictures = work / "pictures" / "train"
    picture_folder(pictures)
    (pictures / "a" / "broken.png").write_bytes((pictures / "a" / "0.png").read_bytes()[:60])
    (pictures / "b" / "empty.jpg").write_bytes(b"")
    args = ["train", "--dataset", "folder", "--data-root", "pictures", *TINY, "--epochs", "1", "--out", "new"]
    line = _cli(args, work)
    assert "broken.png" in line and "--skip-bad-images" in line, line
    assert not list((work / "new").glob("*.pt"))
    result = subprocess.run([sys.executable, "-m", "ganlab", *args, "--skip-bad-images"], cwd=work,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable images of 42" in result.stderr
    from ganlab.model.checkpoint import read_checkpoint

    assert read_checkpoint(work / "new" / "last.pt")["dataset"]["size"] == 40


def test_a_truncated_mnist_gz_says_so(work):
    import gzip

    raw = work / "mnist"
    raw.mkdir()
    images = gzip.compress(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]) + bytes(2 * 28 * 28))
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(images[: len(images) // 2])
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 4])))
    line = _cli(["train", "--dataset", "mnist", "--split", "test", "--data-root", "mnist", *TINY, "--out", "new"], work)
    assert "t10k-images-idx3-ubyte.gz" in line and ("truncated" in line or "corrupt" in line), line


def test_sample_out_dir_writes_one_png_per_image(work, tiny_run):
    import numpy as np
    from PIL import Image

    result = subprocess.run([sys.executable, "-m", "ganlab", "sample", "run", "-n", "5", "--out-dir", "pngs"],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    files = sorted((work / "pngs").glob("*.png"))
    assert [f.name for f in files] == [f"sample_{i:06d}.png" for i in range(5)]
    import ganlab

    expected = ganlab.to_uint8(ganlab.load(tiny_run).sample(5, seed=0))[:, 0].numpy()
    assert np.array_equal(np.stack([np.asarray(Image.open(f)) for f in files]), expected)
    assert "already holds sample_*.png" in _cli(["sample", "run", "-n", "5", "--out-dir", "pngs"], work)
    assert "run already holds files; give an empty" in _cli(["sample", "run", "-n", "5", "--out-dir", "run"], work)


# ------------------------------------------------------------------------------- no confident wrong number

def _broken(tiny_run, path, part, value):
    payload = _tiny_payload(tiny_run)
    payload[part] = {k: v.float().fill_(value) if v.is_floating_point() else v for k, v in payload[part].items()}
    torch.save(payload, path)


def test_a_discriminator_with_nan_or_inf_weights_is_named(work, tiny_run):
    for value in (float("nan"), float("inf")):
        _broken(tiny_run, work / f"d{value}.pt", "discriminator", value)
        line = _cli(["report", f"d{value}.pt", "--only", "d-score,latent-walk", "--out", f"r{value}", "--quiet"],
                    work)
        assert "components failed: d-score" in line and "the discriminator is broken" in line, line
        section = json.loads((work / f"r{value}" / "metrics.json").read_text())["components"]["d-score"]
        assert section["status"] == "failed" and "NaN or infinite" in section["error"] and not section["metrics"]


def test_nan_losses_in_the_history_are_flagged_with_their_epochs(work, tiny_run):
    payload = _tiny_payload(tiny_run)
    payload["history"]["loss_D"][4] = float("nan")  # step 5: epoch 2 (3 steps an epoch)
    payload["history"]["loss_G"][0] = float("inf")
    torch.save(payload, work / "nan-loss.pt")
    line = _cli(["report", "nan-loss.pt", "--only", "latent-walk", "--out", "r", "--quiet"], work)
    problems = json.loads((work / "r" / "metrics.json").read_text())["problems"]
    assert "loss_D is NaN or infinite at 1 steps (epoch 2)" in " ".join(problems), problems
    assert "loss_G is NaN or infinite at 1 steps (epoch 1)" in " ".join(problems)
    assert "the report was written with problems" in line


def test_an_unsettled_generator_says_so_and_can_be_settled(work):
    """A pytorch/examples G saved before its BatchNorm running statistics settled: flat grey in eval mode."""
    from ganlab.model.networks import Generator, ModelConfig

    torch.manual_seed(0)
    state = Generator(ModelConfig(image_size=32, channels=3, ngf=16)).state_dict()
    state["main.9.weight"] *= 10  # a few hundred steps in: contrasted images with batch statistics
    torch.save(state, work / "netG_epoch_0.pth")
    line = _cli(["sample", "--generator", "netG_epoch_0.pth", "--out", "g.png"], work)
    assert "BatchNorm running statistics have not settled" in line and "--settle-batchnorm" in line
    assert not (work / "g.png").exists()
    report = _cli(["report", "netG_epoch_0.pth", "--only", "latent-walk", "--out", "r", "--quiet"], work)
    assert "have not settled" in report
    settled = subprocess.run([sys.executable, "-m", "ganlab", "sample", "--generator", "netG_epoch_0.pth",
                              "--settle-batchnorm", "--out", "g.png", "-n", "16"], cwd=work, capture_output=True)
    assert settled.returncode == 0, settled.stderr
    from PIL import Image

    assert np.asarray(Image.open(work / "g.png")).std() > 20  # not flat grey any more


@pytest.mark.parametrize("args, message", [
    (["--only", ",,,"], "--only ',,,' names no component"),
    (["--skip", " , "], "--skip ' , ' names no component"),
    (["--only", "latent-walk", "--skip", "latent-walk"], "nothing to run"),
    (["--only", "latent-walk", "--set", "svm-probe.draws=many"], "--set svm-probe.draws=many: expected an int"),
    (["--only", "latent-walk", "--set", "sample-quality.n=1"], "--set sample-quality.n=1: must be >= 4"),
    (["--only", "latent-walk", "--set", "svm-probe.C_grid=0.1,0"],  # C = 0 would score every row at chance
     "--set svm-probe.C_grid=0.1,0.0: each value must be >= 1e-12"),
    (["--only", "latent-walk", "--seed", str(10**23)], "'--seed': 100000000000000000000000 is not in the range"),
    (["--only", "latent-walk", "--set", "sample-quality.spaces=pixels,inception"],
     "no feature space named 'inception' (did you mean fid-inception or torchvision-inception?)"),
    (["--only", "latent-walk", "--set", "forget-concept.detector=haar-cat"],
     "--set forget-concept.detector=haar-cat: no detector named 'haar-cat' (did you mean haar-face?); available: "
     "haar-face"),
])
def test_report_values_that_would_be_ignored_or_misread(work, args, message):
    code = 2 if "--seed" in args else 1
    assert message in _cli(["report", "run", "--out", "new/r", *args], work, code=code)
    assert not (work / "new").exists()  # not even the folder made to hold the report


def test_usage_errors_name_the_right_help_and_conflicting_or_wild_values_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # should a refusal fail, what runs writes here
    from click.testing import CliRunner

    from ganlab.cli import cli

    result = CliRunner().invoke(cli, ["cache", "clear", "--bogus"], prog_name="ganlab")
    assert result.exit_code == 2 and "(see `ganlab cache clear --help`)" in result.output
    result = CliRunner().invoke(cli, ["run", "probe-digits", "--checkpoint", "x.pt", "--retrain"])
    assert result.exit_code == 1 and "give --checkpoint (report on that checkpoint) or --retrain" in result.output
    for args, words in ((["arithmetic", "x.pt", "--concept", "a=1", "--expr", "a", "--noise", "nan", "--out", "o"],
                         "--noise nan: give a finite number"),
                        (["dedup", "--dataset", "digits", "--max-rms", "nan", "--out", "o"], "--max-rms nan: give")):
        result = CliRunner().invoke(cli, args)  # NaN passes click's ranges
        assert result.exit_code == 1 and words in result.output, result.output
    for value, words in (("nan", "nan is not a number of seconds"), ("inf", "inf is not in the range")):
        result = CliRunner().invoke(cli, ["report", "run", "--component-timeout", value], prog_name="ganlab")
        assert result.exit_code == 2 and words in result.output, result.output


def test_any_seed_the_command_line_takes_trains(tmp_path):
    from conftest import tiny_options

    import ganlab

    for seed in (2**62, 2**63 - 1):  # the trainer's noise seed, seed * 1000 + rank, overflowed torch's range
        assert ganlab.train(tiny_options(tmp_path / str(seed), epochs=1, seed=seed), progress=False).is_file()


def test_sample_refuses_two_outputs_and_a_moved_dataset_is_named(work, tiny_run):
    line = _cli(["sample", "run", "--out", "g.png", "--out-dir", "many"], work)
    assert "give --out (one grid image) or --out-dir (one PNG per sample), not both" in line
    payload = _tiny_payload(tiny_run)
    payload["dataset"] = {"name": "folder", "split": "train", "root": str(work / "moved-away")}
    torch.save(payload, work / "moved.pt")
    line = _cli(["report", "moved.pt", "--only", "d-score", "--out", "r"], work)
    assert f"the data folder {work / 'moved-away'} does not exist" in line, line


def test_arithmetic_on_a_broken_generator_or_wild_numbers_is_one_line(work, tiny_run):
    _broken(tiny_run, work / "nan.pt", "generator", float("nan"))
    base = ["arithmetic", "--concept", "a=1,2,3", "--concept", "b=4,5,6", "--out", "arith"]
    assert "the generator is broken" in _cli([*base, "nan.pt", "--expr", "a - b"], work)
    assert "numbers overflow a float" in _cli([*base, "run", "--expr", "1e308*1e308*a"], work)
    assert "nested more than 100 parentheses" in _cli([*base, "run", "--expr", "(" * 500 + "a" + ")" * 500], work)
    assert not (work / "arith").exists()
