"""The feature cache during tests: module- and session-scoped fixtures never write into the user's cache."""
import os
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import session_cache_state

import ganlab
from ganlab.plugin import registry
from ganlab.plugin.components import Evaluator, Result
from ganlab.report import make_report
from ganlab.store.cache import default_root

SEEN: dict[str, Path] = {}


class CacheWriter(Evaluator):
    """Caches D's features of 16 test images, as the probe and the memorisation checks do."""

    name, description, needs = "cache-writer", "writes one feature array into ctx.cache", ("discriminator",)

    def run(self, ctx):
        images, _ = ctx.split("test", limit=16)
        key = ganlab.feature_cache_key(ctx.gan.path, "D", ctx.dataset, "test", 16)
        before = set((ctx.cache.root / "features").glob("*.npy"))
        features = ganlab.cached_features(ctx.cache, key, ctx.gan.discriminator, images)
        SEEN["cache_dir"] = ctx.cache.root
        [SEEN["file"]] = set((ctx.cache.root / "features").glob("*.npy")) - before
        return Result(metrics={"dim": features.shape[1]})


@pytest.fixture(scope="module")
def module_scoped_report(tiny_run, tmp_path_factory):
    """A report made by a module-scoped fixture: it runs before any function-scoped fixture does."""
    SEEN["env"] = ganlab.Cache().root
    module = types.ModuleType("cache_writer")
    module.ganlab_register_evaluators = ganlab.hookimpl(lambda register: register(CacheWriter()))
    registry.register_plugin(module, "cache-writer")
    try:
        data, _ = make_report(tiny_run, only=["cache-writer"], out=tmp_path_factory.mktemp("cache") / "r",
                              device="cpu", progress=False)
    finally:
        registry.reset()
    return data


def test_module_scoped_fixtures_cache_in_the_session_folder(module_scoped_report):
    real, session_cache, writes = session_cache_state()
    assert module_scoped_report.components[0].status == "ok", module_scoped_report.components[0].error
    for path in (SEEN["env"], SEEN["cache_dir"]):
        assert path.resolve() == session_cache.resolve(), (path, session_cache)
        assert real not in path.resolve().parents and path.resolve() != real
    assert SEEN["file"].is_file() and session_cache.resolve() in SEEN["file"].resolve().parents
    assert np.load(SEEN["file"]).shape == (16, 16 * (8 + 16))
    assert not writes, writes


def test_function_scoped_tests_get_their_own_cache(tmp_path):
    assert default_root() == tmp_path / "cache" and ganlab.Cache().root == (tmp_path / "cache").resolve()
    assert os.environ["GANLAB_CACHE"] != str(session_cache_state()[1])


def test_the_write_spy_sees_writes_under_the_watched_folder(tmp_path, monkeypatch):
    """The session's guard itself: an audit hook that records every write under the watched folder."""
    import conftest

    watched = tmp_path / "watched"
    watched.mkdir()
    monkeypatch.setitem(conftest._SESSION, "real_cache", watched.resolve())
    monkeypatch.setitem(conftest._SESSION, "writes", [])
    (tmp_path / "elsewhere.txt").write_text("fine")
    (watched / "read.txt").write_text("x")
    (watched / "read.txt").read_text()  # reads are not writes
    np.save(watched / "features.npy", np.zeros(3))
    (watched / "sub").mkdir()
    (watched / "features.npy").replace(watched / "sub" / "moved.npy")
    fd = os.open(watched / "raw.bin", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    writes = list(conftest._SESSION["writes"])
    assert [w.split()[0] for w in writes] == ["open", "open", "os.mkdir", "os.rename", "os.rename", "open"], writes
    assert all(str(watched.resolve()) in w for w in writes) and not any("elsewhere" in w for w in writes)
