"""ganlab touches only what it wrote: real commands on real folders, and the files that were there are unchanged.

Every refusal is one line with a non-zero exit, checked with ``run_cli`` (which compares every file under the
working folder before and after). The processes here are real: two writers on one folder, SIGTERM and SIGINT
to a report, ``kill -9`` and the next report, a component that never returns.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import picture_folder, run_cli, snapshot

import ganlab
from ganlab.report import make_report

TINY = ["--image-size", "16", "--ngf", "8", "--ndf", "8", "--nz", "8", "--limit", "96", "--batch-size", "32"]
QUICK = ["--only", "latent-walk", "--quiet"]

# A real `ganlab` process with one extra component, ``slow``: it sleeps SLOW_SECONDS, ignores every interruption
# (SLOW_MODE=stubborn) or changes the working folder (SLOW_MODE=chdir).
RUNNER = '''
import os, sys, time, types
import ganlab
from ganlab.plugin import registry

class Slow(ganlab.Evaluator):
    name, description = "slow", "sleeps, or worse"

    def run(self, ctx):
        mode = os.environ.get("SLOW_MODE", "sleep")
        if mode == "stubborn":
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:
                    pass
        if mode == "chdir":
            os.chdir(os.environ["SLOW_CHDIR"])
        else:
            time.sleep(float(os.environ.get("SLOW_SECONDS", "600")))
        return ganlab.Result(metrics={"x": 1.0})

module = types.ModuleType("slow_plugin")
module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(Slow()))
registry.register_plugin(module, "slow")
from ganlab.cli import main
sys.argv[0] = "ganlab"
main()
'''


@pytest.fixture
def work(tmp_path, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "run")
    (tmp_path / "runner.py").write_text(RUNNER)
    return tmp_path


def _runner(work, args, **env):
    return subprocess.Popen([sys.executable, str(work / "runner.py"), *map(str, args)], cwd=work, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def _wait_for(condition, seconds=120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


# ------------------------------------------------------------------------------------------ never delete

def test_report_out_refuses_every_folder_it_did_not_write(work):
    picture_folder(work / "pictures")
    (work / "notes").mkdir()
    (work / "notes" / "todo.txt").write_text("mine")
    for out, said in (("run", "inside the input"), ("notes", "is not a ganlab report folder"),
                      ("pictures", "is not a ganlab report folder"), (".", "holds the input")):
        line = run_cli(["report", "run", *QUICK, "--out", out], work)
        assert said in line, (out, line)
    line = run_cli(["report", "run", *QUICK, "--dataset", "folder", "--data-root", "pictures", "--out",
                    "pictures/r"], work)
    assert "inside the input" in line
    assert not list(work.glob(".*partial*")) and not (work / "pictures" / "r").exists()


def test_report_replaces_its_own_reports_old_and_new(work):
    old = work / "old"
    old.mkdir()
    (old / "index.html").write_text("<html>an earlier version's report</html>")
    (old / "metrics.json").write_text(json.dumps({"versions": {"ganlab": "0.0.9"}, "components": {}}))
    for _ in range(2):  # an unmarked report of an earlier version, then the marked one just written
        result = subprocess.run([sys.executable, "-m", "ganlab", "report", "run", *QUICK, "--out", "old"], cwd=work,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "an earlier version" not in (old / "index.html").read_text()
        assert json.loads((old / ".ganlab").read_text())["kind"] == "report"


def test_a_folder_that_only_looks_like_an_earlier_output_keeps_the_users_files(work):
    """Outputs from before the marker listed its files are recognised by their contents; one that holds anything
    else is refused, never replaced whole."""
    earlier = {"index.html": "<html></html>", "metrics.json": json.dumps({"versions": {"ganlab": "0.0.9"}})}
    for name, extra in (("old", {}), ("marked", {".ganlab": json.dumps({"kind": "report", "ganlab": "0.0.9"})})):
        for file, text in {**earlier, **extra, "thesis.tex": "mine"}.items():
            (work / name / file).parent.mkdir(parents=True, exist_ok=True)
            (work / name / file).write_text(text)
        line = run_cli(["report", "run", *QUICK, "--out", name], work)
        assert "holds thesis.tex, which ganlab did not write there" in line, line
    figures = work / "figures"
    figures.mkdir()
    shutil.copy(work / "run" / "samples" / "epoch_0001.png", figures / "arithmetic.png")
    (figures / "chapter3.tex").write_text("mine")
    line = run_cli(["arithmetic", "run/last.pt", "--concept", "a=1,2,3", "--concept", "b=4,5,6", "--expr", "a - b",
                    "--out", "figures"], work)
    assert "holds chapter3.tex, which ganlab did not write there" in line, line
    with ganlab.StagedFolder(work / "new", "thing", legacy=lambda f: (f / "a.png").is_file()) as folder:
        folder.write_text("a.txt", "a plugin that still gives a predicate")  # as before globs
        folder.commit()
    assert (work / "new" / "a.txt").is_file()


def test_a_report_keeps_its_folders_permissions_and_never_replaces_the_working_folder(work):
    private = work / "private"
    private.mkdir(mode=0o700)
    assert subprocess.run([sys.executable, "-m", "ganlab", "report", "run", *QUICK, "--out", "private"], cwd=work,
                          capture_output=True).returncode == 0
    assert (private / "index.html").is_file() and private.stat().st_mode & 0o777 == 0o700
    (work / "empty").mkdir()
    line = run_cli(["report", "../run", *QUICK, "--out", "."], work / "empty")
    assert "holds the working folder" in line and (work / "empty").is_dir()


def test_names_as_long_as_the_file_system_allows_and_names_that_are_not_utf8(work):
    long_grid, long_report = "g" * 251 + ".png", "p" * 250  # 255 bytes is the limit of a name
    result = subprocess.run([sys.executable, "-m", "ganlab", "sample", "run/last.pt", "-n", "4", "--out", long_grid],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 0 and (work / long_grid).read_bytes().startswith(b"\x89PNG"), result.stderr
    foreign = work / os.fsdecode(b"run-\xff")  # Linux names are bytes; this one is not UTF-8
    shutil.copytree(work / "run", foreign)
    for _ in range(2):  # the second replaces the first through the hidden old-report folder
        result = subprocess.run([sys.executable, "-m", "ganlab", "report", foreign.name, *QUICK, "--out",
                                 long_report], cwd=work, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert b"run-\xff" in (work / long_report / "index.html").read_bytes()  # the name as it is on disk
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []


def test_train_out_refuses_folders_that_are_not_runs_and_a_failed_start_leaves_nothing(work, monkeypatch):
    picture_folder(work / "pictures")
    home = work / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine")
    for out in ("pictures", str(home), "/"):
        line = run_cli(["train", "--dataset", "digits", *TINY, "--out", out], work)
        assert "is not a ganlab run folder" in line, line
    assert "inside the input" in run_cli(["train", "--dataset", "folder", "--data-root", "pictures", *TINY,
                                          "--out", "pictures/run"], work)
    assert not (work / "pictures" / "samples").exists()  # the class folder that used to break the dataset
    assert "missing" in run_cli(["train", "--dataset", "folder", "--data-root", "missing", *TINY, "--out",
                                 "new/deeper/run"], work)
    assert not (work / "new").exists()  # nothing made by a start that failed


def test_an_unmarked_run_of_an_earlier_version_can_be_resumed(work):
    (work / "run" / ".ganlab").unlink()
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", "--resume", "run/last.pt", "--epochs", "3"],
                            cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (work / "run" / "epoch_0003.pt").is_file() and (work / "run" / ".ganlab").is_file()


def test_commands_that_write_beside_their_input_refuse_an_output_inside_it(work):
    picture_folder(work / "photos")
    assert "inside the input" in run_cli(["faces", "photos", "photos/sub"], work)
    assert "inside the input" in run_cli(["faces", "photos", "photos"], work)
    assert "inside the input" in run_cli(["dedup", "--dataset", "folder", "--data-root", "photos", "--out",
                                          "photos/dedup"], work)
    (work / "theano").mkdir()
    (work / "theano" / "200_discrim_params.jl").write_bytes(b"x")
    assert "inside the input" in run_cli(["import", "dcgan-code", "theano", "--out", "theano/d.pt", "--dataset",
                                          "digits"], work)
    assert sorted(p.name for p in (work / "photos").iterdir()) == ["a", "b"]


# ------------------------------------------------------------------------------------------ one writer

def test_two_trainings_into_one_folder_the_second_fails_at_once(work):
    first = subprocess.Popen([sys.executable, "-m", "ganlab", "train", "--dataset", "digits", *TINY, "--epochs", "400",
                              "--out", "busy"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (work / "busy" / "log.jsonl").is_file())
        start = time.monotonic()
        (work / "job-tmp").mkdir()  # a batch system's per-job temporary folder: the lock is still the same
        second = subprocess.run([sys.executable, "-m", "ganlab", "train", "--dataset", "digits", *TINY, "--out",
                                 "busy", "--overwrite"], cwd=work, capture_output=True, text=True,
                                env={**os.environ, "TMPDIR": str(work / "job-tmp")})
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"{(work / 'busy').resolve()} is in use: another ganlab process is training there" in second.stderr
        assert time.monotonic() - start < 60
        first.send_signal(signal.SIGTERM)  # training stops at a step boundary and saves last.pt
        assert first.wait(60) == 143, first.stderr.read()
    finally:
        first.kill()
    saved = ganlab.load(work / "busy" / "last.pt")
    assert saved.meta["step"] > 0 and not list((work / "busy").glob(".*tmp"))


def test_two_reports_into_one_folder_the_second_fails_at_once(work):
    first = _runner(work, ["report", "run", "--only", "slow", "--out", "r", "--quiet"])
    try:
        # its staging marked: from then on it sleeps, so the files the second report must not touch stay still
        _wait_for(lambda: list(work.glob(".r.partial-*/.ganlab")))
        line = run_cli(["report", "run", *QUICK, "--out", "r"], work)
        assert "is in use: another ganlab process is writing a report there" in line
    finally:
        first.kill()
        first.wait()


# ------------------------------------------------------------------------------------------ no litter

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_report_leaves_the_old_report_and_no_litter(work, sig, code):
    assert subprocess.run([sys.executable, "-m", "ganlab", "report", "run", *QUICK, "--out", "r"], cwd=work,
                          capture_output=True).returncode == 0
    before = snapshot(work / "r")
    report = _runner(work, ["report", "run", "--only", "slow", "--out", "r", "--quiet"])
    _wait_for(lambda: list(work.glob(".r.partial-*")))
    time.sleep(1)
    report.send_signal(sig)
    assert report.wait(60) == code, report.stderr.read()
    assert not list(work.glob(".r.*")) and snapshot(work / "r") == before


def test_a_report_killed_outright_leaves_staging_that_the_next_report_removes(work):
    report = _runner(work, ["report", "run", "--only", "slow", "--out", "r", "--quiet"])
    _wait_for(lambda: list(work.glob(".r.partial-*")))
    report.kill()
    report.wait()
    assert list(work.glob(".r.partial-*"))  # kill -9 runs no clean-up
    result = subprocess.run([sys.executable, "-m", "ganlab", "report", "run", *QUICK, "--out", "r"], cwd=work,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not list(work.glob(".r.*")) and (work / "r" / "index.html").is_file()


def test_only_what_a_writer_left_is_cleared_not_what_carries_its_name(tmp_path):
    """A writer clears staging and old folders that a killed one left beside its output; a user's file or folder
    that merely has such a name stays, byte for byte."""
    import ganlab

    theirs = {tmp_path / ".r.partial-notes.txt": b"mine", tmp_path / ".r.old-photos" / "cat.png": b"cat"}
    for path, data in theirs.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    (tmp_path / ".r.partial-abc12345").mkdir()  # what mkdtemp made before the writer was killed
    with ganlab.StagedFolder(tmp_path / "r", "report") as folder:
        folder.write_text("index.html", "<p>new</p>")
        folder.commit()
    assert {path: path.read_bytes() for path in theirs} == theirs
    assert not (tmp_path / ".r.partial-abc12345").exists()
    assert (tmp_path / "r" / "index.html").read_text() == "<p>new</p>"


# ------------------------------------------------------------------------------------------ time limits

def test_a_component_that_never_returns_is_timed_out_and_the_report_written(work):
    start = time.monotonic()
    report = _runner(work, ["report", "run", "--only", "slow,latent-walk", "--component-timeout", "2", "--out", "r",
                            "--quiet"])
    out, err = report.communicate(timeout=120)
    assert report.returncode == 1 and "Traceback" not in err
    assert "slow: TIMED OUT (timed out after 2 s" in err and "problems: slow timed out after 2 s" in err
    metrics = json.loads((work / "r" / "metrics.json").read_text())
    assert metrics["components"]["slow"]["status"] == "timed out"
    assert metrics["components"]["latent-walk"]["status"] == "ok"
    assert any("slow timed out" in p for p in metrics["problems"])
    assert time.monotonic() - start < 100


def test_a_component_that_swallows_the_timeout_still_ends_the_command(work):
    report = _runner(work, ["report", "run", "--only", "slow", "--component-timeout", "1", "--out", "r", "--quiet"],
                     SLOW_MODE="stubborn")
    out, err = report.communicate(timeout=120)
    assert report.returncode == 1 and "did not stop within its time limit" in err
    assert not (work / "r").exists() and not list(work.glob(".r.*"))


def test_paths_are_fixed_before_any_component_runs(work):
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    report = _runner(work, ["report", "run", "--only", "slow", "--out", "r", "--quiet"], SLOW_MODE="chdir",
                     SLOW_CHDIR=str(elsewhere))
    out, err = report.communicate(timeout=120)
    assert report.returncode == 0, err
    assert (work / "r" / "index.html").is_file() and not list(elsewhere.iterdir())


# ------------------------------------------------------------------------------------------ resume

def test_a_resume_never_mixes_two_runs_in_one_folder(work):
    """Into another run's folder, or from an epoch its own folder holds later epochs of: refused, nothing changed;
    with --overwrite the other run, or the later epochs, are removed once training starts."""
    from conftest import tiny_options

    ganlab.train(tiny_options(work / "other", epochs=1, seed=1), progress=False)
    line = run_cli(["train", "--resume", "run/last.pt", "--out", "other", "--epochs", "3"], work)
    assert "other already holds another training run" in line, line
    line = run_cli(["train", "--resume", "run/epoch_0001.pt", "--epochs", "2"], work)
    assert "holds epochs after epoch 1 of epoch_0001.pt (e.g. epoch_0002.pt)" in line, line
    before = (work / "run" / "epoch_0002.pt").read_bytes()
    ganlab.train(tiny_options(work / "run", resume=str(work / "run" / "epoch_0001.pt"), epochs=2, overwrite=True),
                 progress=False)
    steps = [json.loads(line)["step"] for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and (work / "run" / "epoch_0002.pt").read_bytes() != before
    shutil.copytree(work / "run", work / "failed")  # the disk filled while epoch 2 was saved: its grid, no .pt
    (work / "failed" / "epoch_0002.pt").unlink()
    shutil.copy(work / "failed" / "epoch_0001.pt", work / "failed" / "last.pt")
    ganlab.train(tiny_options(work / "failed", resume=str(work / "failed" / "last.pt"), epochs=2), progress=False)
    assert (work / "failed" / "epoch_0002.pt").is_file()


def test_resume_checks_every_recorded_setting(work):
    # --batch-size 128 is the default: typed, it still contradicts the recorded 32
    for flag, value in (("--batch-size", "16"), ("--dataset", "mnist"), ("--lr", "0.001"), ("--limit", "50"),
                        ("--seed", "3"), ("--batch-size", "128")):
        line = run_cli(["train", "--resume", "run/last.pt", "--epochs", "3", flag, value], work)
        setting = flag[2:].replace("-", "_")
        assert f"{flag} {value} contradicts" in line and f"--allow-change {setting}" in line, line
    assert "not a recorded setting" in run_cli(["train", "--resume", "run/last.pt", "--epochs", "3",
                                                "--allow-change", "colour"], work)
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", "--resume", "run/last.pt", "--epochs", "3",
                             "--batch-size", "16", "--allow-change", "batch_size"], cwd=work, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    changed = [e for e in events if e.get("event") == "setting changed on resume"]
    assert [(e["setting"], e["from"], e["to"]) for e in changed] == [("batch_size", 32, 16)]
    options = ganlab.load(work / "run" / "last.pt").meta["options"]
    assert options["batch_size"] == 16 and options["limit"] == 96  # the rest as recorded, not the defaults
    assert "given" not in options  # which flags one command typed is not a setting of the run
    resume = ganlab.TrainOptions(resume=str(work / "run" / "last.pt"), epochs=4, batch_size=128)
    with pytest.raises(ganlab.GanlabError, match="--batch-size 128 contradicts"):
        ganlab.train(resume.updated(given=("batch_size",)), progress=False)
    with pytest.raises(ganlab.GanlabError, match="given must name TrainOptions settings"):
        resume.updated(given=("lrr",))


# ------------------------------------------------------------------------------------------ verified caches

def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flipped":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("x")


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "folder"])
def test_a_damaged_cache_entry_is_recomputed_to_the_same_numbers(work, tmp_path, monkeypatch, how):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    settings = {"probe-epochs.baselines": "pixels", "probe-epochs.train_limit": 200, "sample-quality.n": 60}

    def numbers(out):
        said = []
        data, _ = make_report(work / "run" / "last.pt", only=["sample-quality", "probe-epochs"], out=work / out,
                              device="cpu", progress=False, settings=settings, say=said.append)
        assert all(run.status == "ok" for run in data.components), [run.error for run in data.components]
        return {run.name: run.result.metrics for run in data.components}, [s for s in said if s.startswith("cache")]

    fresh, said = numbers("r1")
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".npy", ".json") and p.is_file()]
    assert not said and {p.suffix for p in entries} == {".npy", ".json"}
    for path in entries:
        _damage(path, how)
    again, said = numbers("r2")
    assert again == fresh
    assert len(said) == len(entries) and all("recomputing it" in line for line in said), said
    healed, said = numbers("r3")
    assert healed == fresh and not said


def test_the_cache_refuses_a_folder_that_is_not_its_own(work, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    line = run_cli(["report", "run", "--only", "sample-quality", "--out", "r"], work, env={"GANLAB_CACHE": str(mine)},
                   watch=mine)
    assert "is not ganlab's cache" in line and "GANLAB_CACHE" in line


def test_cache_entries_round_trip_and_an_unwritable_cache_only_costs_time(tmp_path):
    cache = ganlab.Cache(tmp_path / "cache")
    ident = {"row": "pixels", "grid": [0.1, 1.0]}
    assert cache.json("x", ident) is None
    cache.put_json("x", ident, {"accuracies": [0.5]})
    assert ganlab.Cache(tmp_path / "cache").json("x", ident) == {"accuracies": [0.5]}
    assert cache.json("x", {**ident, "grid": [0.1]}) is None
    assert not list((tmp_path / "cache" / "x").glob(".*"))  # no temporary file left
    said = []
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = ganlab.Cache(blocked / "cache", say=said.append)
    assert unwritable.array("x", "a", lambda: np.arange(3)).tolist() == [0, 1, 2]
    assert unwritable.json("x", "b", lambda: 7) == 7
    assert len(said) == 1 and "results are computed, not kept" in said[0]
    with pytest.raises(ganlab.GanlabError, match="is a file"):
        ganlab.Cache(blocked)
