"""`ganlab cache`: sizes of the cache's parts, and clearing what ganlab wrote there, never anything else."""
import numpy as np
from click.testing import CliRunner

import ganlab
from ganlab.cli import cli


def _fill(folder):
    """Entries written the way components write them: two arrays, a JSON row and a tool's own folder."""
    cache = ganlab.Cache(folder)
    cache.array("features", "a", lambda: np.zeros(750, dtype=np.float32))  # 3,000 bytes + the npy header
    cache.array("features", "b", lambda: np.zeros(500, dtype=np.float32))
    cache.put_json("svm-probe", "row", {"accuracies": [0.5]})
    (cache.folder("numba") / "umap.nbi").write_bytes(b"x" * 10)
    return cache


def test_it_lists_each_part_with_its_size(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "cache"
    result = runner.invoke(cli, ["cache"])
    assert result.exit_code == 0 and "empty (nothing cached yet)" in result.output
    _fill(folder)
    result = runner.invoke(cli, ["cache"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(str(folder.resolve()))
    assert lines[1].split() == ["features", "5.1", "KB", "2", "files"]  # 5,000 bytes and two 128-byte headers
    assert lines[2].split()[0] == "numba" and lines[3].split()[0] == "svm-probe"


def test_clear_removes_only_the_parts_named(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "cache"
    _fill(folder)
    result = runner.invoke(cli, ["cache", "clear", "features", "--yes"])
    assert result.exit_code == 0, result.output
    assert "cleared features (5.1 KB)" in result.output
    assert not (folder / "features").exists() and list((folder / "svm-probe").glob("*.json"))
    # asked first without --yes: "n" keeps everything, "y" clears all that is left
    result = runner.invoke(cli, ["cache", "clear"], input="n\n")
    assert result.exit_code == 1 and (folder / "svm-probe").exists()
    result = runner.invoke(cli, ["cache", "clear"], input="y\n")
    assert result.exit_code == 0 and sorted(p.name for p in folder.iterdir()) == [".ganlab", "CACHEDIR.TAG"]
    assert "empty, nothing to clear" in runner.invoke(cli, ["cache", "clear", "--yes"]).output


def test_clear_deletes_only_what_ganlab_wrote_and_never_follows_a_link(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "cache"
    _fill(folder)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (folder / "features" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "features" / "notes.txt").write_text("mine too")
    result = runner.invoke(cli, ["cache", "clear", "features", "--yes"])
    assert result.exit_code == 0, result.output
    assert "features: left 2 entries ganlab did not write" in result.output
    assert (elsewhere / "precious.txt").read_text() == "keep" and (folder / "features" / "linked").is_symlink()
    assert sorted(p.name for p in (folder / "features").iterdir()) == ["linked", "notes.txt"]
    # an unknown part: a one-line error naming what there is
    result = runner.invoke(cli, ["cache", "clear", "nope", "--yes"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no cache part named nope" in result.output and "features, numba, svm-probe" in result.output


def test_clear_refuses_a_folder_that_is_not_ganlabs_cache(tmp_path, monkeypatch):
    """$GANLAB_CACHE pointing (through a link, here) at a folder of someone else's: nothing is deleted."""
    etc = tmp_path / "etc"
    (etc / "features").mkdir(parents=True)
    (etc / "features" / "passwd").write_text("root:x:0:0")
    (etc / "hosts").write_text("127.0.0.1 localhost")
    (tmp_path / "link").symlink_to(etc, target_is_directory=True)
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "link"))
    result = CliRunner().invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 1 and "is not a folder ganlab made as its cache" in result.output
    assert (etc / "hosts").is_file() and (etc / "features" / "passwd").is_file()


def test_clear_empties_an_unmarked_cache_of_an_earlier_version(tmp_path):
    folder = tmp_path / "cache"
    (folder / "features").mkdir(parents=True)
    (folder / "features" / "0123456789abcdef0123.npy").write_bytes(b"x" * 100)
    (folder / "svm-probe").mkdir()
    (folder / "svm-probe" / "0123456789abcdef0123.json").write_text("{}")
    (folder / "svm-probe" / "mine.json").write_text("{}")
    result = CliRunner().invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 0, result.output
    assert not (folder / "features").exists() and [p.name for p in (folder / "svm-probe").iterdir()] == ["mine.json"]
