"""The package as users get it: an sdist and a wheel built from the repository, installed without -e.

The fresh virtual environment borrows this one's dependencies (torch & co.) through a .pth file, so
nothing is downloaded; ganlab itself comes only from the wheel, which the test checks.
"""
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("ganlab", "plugins", "setup.py", "pyproject.toml", "README.md", "LICENSE")
QUICK_PROBE = {"labels_per_class": "5,all", "draws": 2, "baselines": "pixels", "umap": "false", "C_grid": "0.01"}


def _run(args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(venv python, venv bin folder, wheel path) with ganlab installed from a freshly built wheel."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in SOURCES:
        src = REPO / name
        (shutil.copytree(src, source / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, source / name))
    # sdist first, then the wheel from the sdist: what `python -m build` and PyPI users get
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", source])
    wheel = next((work / "dist").glob("ganlab-*.whl"))
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    return python, venv / "bin", wheel


def test_wheel_holds_every_plugin_subpackage(wheel_env):
    names = set(zipfile.ZipFile(wheel_env[2]).namelist())
    for path in (REPO / "plugins").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".html"):
            assert "ganlab_plugins/" + path.relative_to(REPO / "plugins").as_posix() in names
    for path in (REPO / "ganlab").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".html", ".css"):
            assert "ganlab/" + path.relative_to(REPO / "ganlab").as_posix() in names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_installed_wheel_lists_every_builtin_and_probes(wheel_env, tmp_path):
    python, bin_dir, _ = wheel_env
    where = _run([python, "-c", "import ganlab, ganlab_plugins.probe.plugin as p; print(ganlab.__file__); "
                  "print(p.__file__)"], cwd=tmp_path).stdout.split()
    assert all(str(bin_dir.parent) in w for w in where), where  # not the checkout
    rows = {row["name"]: row for row in json.loads(_run([bin_dir / "ganlab", "plugins", "--json"], cwd=tmp_path).stdout)
            if row["distribution"] == "ganlab"}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["ganlab"]
    assert set(rows) == {"ganlab.core_plugin", *declared} and "svm-probe" in declared
    assert all(row["error"] is None for row in rows.values()), rows
    assert rows["svm-probe"]["registers"] == {"evaluators": ["svm-probe"]}
    _run([bin_dir / "ganlab", "train", "--dataset", "digits", "--epochs", "1", "--image-size", "16", "--ngf", "8",
          "--ndf", "8", "--nz", "8", "--out", "run"], cwd=tmp_path)
    settings = [a for k, v in QUICK_PROBE.items() for a in ("--set", f"svm-probe.{k}={v}")]
    result = _run([bin_dir / "ganlab", "report", "run", "--only", "svm-probe", "--quiet", "--json", *settings],
                  cwd=tmp_path)
    probe = json.loads(result.stdout)["components"]["svm-probe"]
    assert probe["status"] == "ok", probe
    assert 0.1 < probe["metrics"]["d.all.accuracy"] <= 1.0
    assert _run([python, "-m", "ganlab", "--version"], cwd=tmp_path).stdout.strip().endswith(
        _run([python, "-c", "import ganlab; print(ganlab.__version__)"]).stdout.strip())
