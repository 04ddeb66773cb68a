"""svm-probe keeps its baseline rows (pixels, random D, K-means, supervised CNN): they do not depend on the GAN."""
import json
import re

import numpy as np
import pytest
import torch

import ganlab
from ganlab.plugin import registry
from ganlab.report import make_report
from ganlab_plugins.probe import result_cache

SETTINGS = {"svm-probe.kmeans_k": "16", "svm-probe.supervised_steps": "10", "svm-probe.supervised_draws": "2",
            "svm-probe.draws": "2", "svm-probe.labels_per_class": "5,all", "svm-probe.umap": "false",
            "svm-probe.C_grid": "1e-3,1e-1"}
ROWS = {"d": "DCGAN discriminator (this checkpoint)", "pixels": "raw pixels",
        "random-d": "same D architecture, random init", "kmeans": "K-means triangle (Coates & Ng 2011)",
        "supervised": "supervised CNN, D's architecture"}


def _computed(result) -> set[str]:
    """The rows this report computed ("kmeans all", ...), read from its notes: a reused row says so."""
    found = set()
    for line in result.text:
        for short, label in ROWS.items():
            match = re.match(re.escape(label) + r", (\w+):", line)
            if match and not line.endswith("reused from the cache"):
                found.add(f"{short} {match.group(1)}")
    return found


EVERY_ROW = {f"{name} {mode}" for name in ROWS for mode in ("5pc", "all")}


@pytest.fixture
def counted():
    """A report's svm-probe result and the rows it computed rather than read from the cache."""

    def report(checkpoint, out, **changes):
        registry.reset()
        data, _ = make_report(checkpoint, only=["svm-probe"], out=out, device="cpu", progress=False,
                              settings={**SETTINGS, **changes})
        run = data.components[0]
        assert run.status == "ok", run.error
        return run.result, _computed(run.result)

    return report


def test_baseline_rows_are_computed_once_and_the_d_row_every_time(counted, tiny_run, tmp_path):
    first, work = counted(tiny_run / "last.pt", tmp_path / "a")
    assert work == EVERY_ROW
    assert len(list((tmp_path / "cache" / "svm-probe").glob("*.json"))) == 8  # 4 baselines x 2 label budgets
    again, work = counted(tiny_run / "last.pt", tmp_path / "b")
    # only D's two rows are fitted again; no baseline feature, no CNN
    assert work == {"d 5pc", "d all"}
    assert first.metrics.pop("baseline_rows_reused") == 0 and again.metrics.pop("baseline_rows_reused") == 8
    assert again.metrics == first.metrics
    without_times = [[row[:6] + row[7:] for row in result.tables[0].rows] for result in (first, again)]
    assert without_times[0] == without_times[1]
    # the baselines' own times are the first report's (said so in the text)
    assert [row[6] for row in again.tables[0].rows[1:5]] == [row[6] for row in first.tables[0].rows[1:5]]
    assert any("Baseline rows reused from the cache (pixels, random-d, kmeans, supervised)" in t for t in again.text)
    # another GAN of the same architecture (the run's first epoch): the same baselines, its own D rows
    other, work = counted(tiny_run / "epoch_0001.pt", tmp_path / "c")
    assert work == {"d 5pc", "d all"}
    for key, value in first.metrics.items():
        if key.startswith(("d.", "d_minus_")):
            continue
        assert other.metrics[key] == value, key
    assert other.metrics["d.all.accuracy"] != first.metrics["d.all.accuracy"]


def test_what_a_row_depends_on_recomputes_it(counted, tiny_run, tmp_path):
    counted(tiny_run / "last.pt", tmp_path / "a")
    # K-means' own setting: only the K-means rows
    _, work = counted(tiny_run / "last.pt", tmp_path / "b", **{"svm-probe.kmeans_k": "12"})
    assert work == {"d 5pc", "d all", "kmeans 5pc", "kmeans all"}
    # the CNN's settings: only the supervised rows
    _, work = counted(tiny_run / "last.pt", tmp_path / "c", **{"svm-probe.supervised_steps": "12"})
    assert work == {"d 5pc", "d all", "supervised 5pc", "supervised all"}
    # other images (fewer training images), another seed's draws, another C grid: every row
    for change in ({"svm-probe.train_limit": "300"}, {"svm-probe.draws": "3"}, {"svm-probe.C_grid": "1e-2,1e-1"}):
        _, work = counted(tiny_run / "last.pt", tmp_path / "d", **change)
        assert work >= EVERY_ROW - {"supervised 5pc", "supervised all"}, change
    # switched off: computed, whatever the cache holds
    _, work = counted(tiny_run / "last.pt", tmp_path / "e", **{"svm-probe.cache_baselines": "false"})
    assert work == EVERY_ROW


def test_another_architecture_shares_only_the_data_baselines(counted, tiny_run, tmp_path):
    from conftest import tiny_options

    wider = tmp_path / "wider"
    ganlab.train(tiny_options(wider, ndf=12, epochs=1), progress=False)
    counted(tiny_run / "last.pt", tmp_path / "a")
    _, work = counted(wider / "last.pt", tmp_path / "b")
    assert work == {"d 5pc", "d all", "random-d 5pc", "random-d all", "supervised 5pc", "supervised all"}


def test_damaged_cache_files_are_computed_again(counted, tiny_run, tmp_path):
    """Damaged bytes fail the cache's digest; a row stored whole but of the wrong shape fails svm-probe's own check."""
    first, _ = counted(tiny_run / "last.pt", tmp_path / "a")
    files = sorted((tmp_path / "cache" / "svm-probe").glob("*.json"))
    cache = ganlab.Cache(tmp_path / "cache")
    for i, f in enumerate(files):
        entry = json.loads(f.read_text())
        good = entry["value"]
        broken = {**good, "C_table": [[1]]} if "C_table" in good else {**good, "kept": ["x"]}
        if i % 4 == 0:
            f.write_text("{not json")
        else:
            wrong = ["a string, not a row", {"accuracies": [0.5]}, broken][i % 4 - 1]
            cache.put_json("svm-probe", entry["ident"], wrong)
    again, work = counted(tiny_run / "last.pt", tmp_path / "b")
    assert work == EVERY_ROW
    assert again.metrics == first.metrics and again.metrics["baseline_rows_reused"] == 0
    stored = [json.loads(f.read_text())["value"] for f in (tmp_path / "cache" / "svm-probe").glob("*.json")]
    assert len(stored) == len(files) and all(isinstance(v, dict) and "accuracies" in v for v in stored)


def test_content_digest_sees_every_byte_dtype_and_shape():
    a = np.arange(24, dtype=np.uint8).reshape(2, 12)
    same = ganlab.content_digest(a, torch.tensor([1, 2]))
    assert same == ganlab.content_digest(a.copy(), np.array([1, 2]))
    changed = a.copy()
    changed[1, 11] += 1
    digest = ganlab.content_digest
    others = {digest(changed, np.array([1, 2])), digest(a.reshape(3, 8), np.array([1, 2])),
              digest(a.astype(np.int8), np.array([1, 2])), digest(a, np.array([2, 1]))}
    assert same not in others and len(others) == 4


def test_every_input_of_a_row_is_in_its_identity():
    """Relabelled images, other images, another seed, grid, draw count, device kind, K, architecture or CNN
    schedule: each gives another identity (so a stale row is never read for it)."""
    from types import SimpleNamespace

    from ganlab.model.networks import ModelConfig

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8), np.arange(20) % 10
    options = {"draws": 5, "select_draws": 0, "val_size": 0.2, "solver": "auto", "tol": 1e-4, "preprocess": "none",
               "kmeans_preprocess": "standardize", "kmeans_k": 200, "bn_stats": "real", "batch_size": 256,
               "supervised_steps": 300, "supervised_draws": 3, "supervised_patience": 100}

    def ident(name, labels=labels, test=images, seed=0, grid=(0.1, 1.0), device="cpu", config=ModelConfig(),
              **changes):
        ctx = SimpleNamespace(options={**options, **changes}, seed=seed, device=device,
                              gan=SimpleNamespace(config=config))
        base = result_cache.probe_ident(ctx, images, labels, test, labels, grid)
        return json.dumps(result_cache.row_ident(base, name, "10pc", ctx), sort_keys=True, default=str)

    for name in ("pixels", "kmeans", "random-d", "supervised"):
        same = ident(name)
        assert same == ident(name)
        changed = [ident(name, labels=labels[::-1].copy()), ident(name, test=images[::-1].copy()), ident(name, seed=1),
                   ident(name, grid=(0.1,)), ident(name, draws=6), ident(name, device="cuda")]
        assert same not in changed and len(set(changed)) == len(changed), name
    assert ident("kmeans") != ident("kmeans", kmeans_k=100)
    assert ident("pixels") != ident("pixels", preprocess="standardize")
    for name in ("random-d", "supervised"):
        assert ident(name) != ident(name, config=ModelConfig(ndf=32)), name
    assert ident("supervised") != ident("supervised", supervised_patience=50)
    assert ident("pixels") == ident("pixels", config=ModelConfig(ndf=32))  # pixels do not depend on D
