"""`ganlab cache`: sizes of the cache's parts, and clearing some or all of them, never anything outside it."""
from click.testing import CliRunner

from ganlab.cli import cli


def _fill(folder):
    (folder / "features").mkdir(parents=True)
    (folder / "features" / "a.npy").write_bytes(b"x" * 3000)
    (folder / "features" / "b.npy").write_bytes(b"x" * 2000)
    (folder / "svm-probe").mkdir()
    (folder / "svm-probe" / "row.json").write_bytes(b"{}" * 10)


def test_it_lists_each_part_with_its_size(tmp_path, monkeypatch):
    runner = CliRunner()
    folder = tmp_path / "cache"
    result = runner.invoke(cli, ["cache"])
    assert result.exit_code == 0 and "empty (nothing cached yet)" in result.output
    _fill(folder)
    result = runner.invoke(cli, ["cache"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(str(folder))
    assert lines[1].split() == ["features", "4.9", "KB", "2", "files"]  # 5,000 bytes
    assert lines[2].split() == ["svm-probe", "20", "B", "1", "file"]
    assert lines[3].split() == ["total", "4.9", "KB"]


def test_clear_removes_only_the_parts_named(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "cache"
    _fill(folder)
    result = runner.invoke(cli, ["cache", "clear", "features", "--yes"])
    assert result.exit_code == 0, result.output
    assert "cleared features (4.9 KB)" in result.output
    assert not (folder / "features").exists() and (folder / "svm-probe" / "row.json").exists()
    # asked first without --yes: "n" keeps everything, "y" clears all that is left
    result = runner.invoke(cli, ["cache", "clear"], input="n\n")
    assert result.exit_code == 1 and (folder / "svm-probe").exists()
    result = runner.invoke(cli, ["cache", "clear"], input="y\n")
    assert result.exit_code == 0 and list(folder.iterdir()) == []
    assert "empty, nothing to clear" in runner.invoke(cli, ["cache", "clear", "--yes"]).output


def test_clear_never_reaches_outside_the_cache(tmp_path, monkeypatch):
    runner = CliRunner()
    folder = tmp_path / "cache"
    _fill(folder)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    result = runner.invoke(cli, ["cache", "clear", "linked", "--yes"])
    assert result.exit_code == 0, result.output
    assert not (folder / "linked").exists() and (elsewhere / "precious.txt").read_text() == "keep"
    # an unknown part: a one-line error naming what there is
    result = runner.invoke(cli, ["cache", "clear", "nope", "--yes"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no cache part named nope" in result.output and "features, svm-probe" in result.output
    # $GANLAB_CACHE set to the home folder by mistake: refused, nothing deleted
    monkeypatch.setenv("HOME", str(elsewhere))
    monkeypatch.setenv("GANLAB_CACHE", str(elsewhere))
    result = runner.invoke(cli, ["cache", "clear", "--yes"])
    assert result.exit_code == 1 and "refusing to clear" in result.output
    assert (elsewhere / "precious.txt").exists()
