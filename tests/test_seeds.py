"""ganlab run EXPERIMENT --seeds K: K GANs, one report each, and every metric as mean ± std over GAN seeds."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ganlab
from ganlab.cli import cli
from ganlab.plugin import registry
from ganlab.report import seed_runs


def _metrics(**components):
    return {"components": {name: {"metrics": metrics} for name, metrics in components.items()}}


def test_summary_matches_numpy_over_the_seeds_that_have_each_metric():
    found = {0: _metrics(**{"svm-probe": {"d.n10.accuracy": 0.80, "d.all.accuracy": 0.95, "d.feature_dim": 3584}}),
             1: _metrics(**{"svm-probe": {"d.n10.accuracy": 0.86, "d.all.accuracy": 0.97, "d.feature_dim": 3584},
                            "d-score": {"accuracy": 0.7, "note": "text", "flag": True, "bad": float("nan")}}),
             2: _metrics(**{"svm-probe": {"d.n10.accuracy": 0.83, "d.all.accuracy": 0.90, "d.feature_dim": 3584}})}
    summary = seed_runs.summarise(found)
    assert summary["seeds"] == [0, 1, 2]
    n10 = summary["components"]["svm-probe"]["d.n10.accuracy"]
    xs = np.array([0.80, 0.86, 0.83])
    assert n10["mean"] == pytest.approx(xs.mean()) and n10["std"] == pytest.approx(xs.std(ddof=1))
    assert (n10["min"], n10["max"], n10["n"]) == (0.80, 0.86, 3)
    assert summary["components"]["svm-probe"]["d.feature_dim"]["std"] == 0.0
    assert n10["values"] == [0.80, 0.86, 0.83]  # per seed, for tables that pair seeds
    # Only seed 1 has d-score; text, booleans and NaN are not numbers to average.
    assert summary["components"]["d-score"] == {"accuracy": {"mean": 0.7, "std": 0.0, "min": 0.7, "max": 0.7, "n": 1,
                                                             "values": [None, 0.7, None]}}
    table = ganlab.Table("a plugin's table", ["features", "accuracy %"], [["d", "83.00 ± 3.00"]])
    text = seed_runs.markdown(summary, "probe-x", [table])
    assert "## a plugin's table" in text and "| d | 83.00 ± 3.00 |" in text
    assert "| d-score | accuracy | 0.7 | 0 | 0.7 | 0.7 | 1 |" in text


def test_seed_folders_sit_beside_the_base():
    assert seed_runs.seed_folders("runs/probe-digits", [3, 4]) == {3: Path("runs/probe-digits-seed3"),
                                                                   4: Path("runs/probe-digits-seed4")}


@pytest.fixture
def seeded_experiment():
    import types

    exp = ganlab.Experiment("seeded", "two tiny GANs", components=("d-score",),
                            train={"dataset": "digits", "image_size": 16, "ngf": 8, "ndf": 8, "epochs": 1,
                                   "batch_size": 64, "limit": 256})
    module = types.ModuleType("seeded")
    module.ganlab_register_experiments = ganlab.hookimpl(lambda register: register(exp))
    registry.register_plugin(module, "seeded")
    try:
        yield exp
    finally:
        registry.reset()


def test_run_with_seeds_trains_each_gan_and_summarises_the_reports(seeded_experiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "seeded", "--seeds", "2", "--seed", "5", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    runs = [tmp_path / "runs" / f"seeded-seed{s}" for s in (5, 6)]
    reports = [tmp_path / "reports" / f"seeded-seed{s}" for s in (5, 6)]
    weights = [torch.load(run / "last.pt", weights_only=True) for run in runs]
    assert all(run.is_dir() for run in runs) and not (tmp_path / "runs" / "seeded").exists()
    # Different GAN seeds: different generators. The same report seed: the same label draws and samples' seed.
    g0, g1 = (w["generator"] for w in weights)
    assert any(not torch.equal(g0[k], g1[k]) for k in g0 if g0[k].is_floating_point())
    data = [json.loads((report / "metrics.json").read_text()) for report in reports]
    assert [d["seed"] for d in data] == [5, 5]
    summary = json.loads((tmp_path / "reports" / "seeded-seeds" / "seeds.json").read_text())
    assert summary["seeds"] == [5, 6] and summary["experiment"] == "seeded"
    for key, stats in summary["components"]["d-score"].items():
        xs = np.array([d["components"]["d-score"]["metrics"][key] for d in data], dtype=float)
        assert stats["mean"] == pytest.approx(xs.mean()) and stats["std"] == pytest.approx(xs.std(ddof=1)), key
    assert "summary over 2 GAN seeds" in result.output
    # Run again: both checkpoints are reused, nothing is retrained.
    again = CliRunner().invoke(cli, ["run", "seeded", "--seeds", "2", "--seed", "5", "--device", "cpu", "--quiet"])
    assert again.exit_code == 0 and again.output.count("using existing") == 2


def test_seeds_with_a_checkpoint_is_a_one_line_error(seeded_experiment, tmp_path):
    result = CliRunner().invoke(cli, ["run", "seeded", "--seeds", "2", "--checkpoint", str(tmp_path / "x.pt")])
    assert result.exit_code != 0 and "cannot be combined with --checkpoint" in result.output
    assert "Traceback" not in result.output


def test_folders_for_dot_and_trailing_slash_bases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert seed_runs.seed_folders(".", [0]) == {0: tmp_path.with_name(f"{tmp_path.name}-seed0")}
    assert seed_runs.summary_folder("reports/x/") == Path("reports/x-seeds")
    assert seed_runs.seed_folders("reports/x/", [1]) == {1: Path("reports/x-seed1")}


def test_probe_pairs_d_with_each_baseline_over_gan_seeds():
    """svm-probe's table over seeds: each seed's paired difference, their mean and scipy's 95% t-interval."""
    from scipy import stats

    from ganlab.api import seed_tables

    diffs = {"kmeans": [0.012, 0.020, 0.017], "random-d": [-0.01, 0.03, 0.002]}
    found = {seed: _metrics(**{"svm-probe": {f"d_minus_{n}.10pc.difference": v[i] for n, v in diffs.items()}})
             for i, seed in enumerate((0, 1, 2))}
    registry.reset()
    tables = [t for t in seed_tables(seed_runs.summarise(found)) if t.title.startswith("svm-probe over 3 GAN seeds")]
    assert len(tables) == 1
    rows = {row[0]: row for row in tables[0].rows}
    for name, label in (("kmeans", "K-means triangle (Coates & Ng 2011)"),
                        ("random-d", "same D architecture, random init")):
        xs = np.array(diffs[name]) * 100
        low, high = stats.t.interval(0.95, len(xs) - 1, loc=xs.mean(), scale=stats.sem(xs))
        assert rows[label][1:5] == ["10 per class", 3, f"{xs.mean():+.2f}", f"{low:+.2f} to {high:+.2f}"]
        assert rows[label][5] == ("D ahead" if low > 0 else "D behind" if high < 0 else "within noise")
    assert rows["K-means triangle (Coates & Ng 2011)"][5] == "D ahead"
    assert rows["same D architecture, random init"][5] == "within noise"
