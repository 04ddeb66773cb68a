"""``ganlab new-plugin DIR --name NAME``: write an installable plugin package that passes its own test: one
evaluator, one analysis, the entry point that registers them, and a test that uses the fixtures of ganlab's
pytest plugin (``ganlab_tiny_run``, ``ganlab_context``), from the templates in ``ganlab/templates/plugin/``."""
import re
from importlib import metadata, resources
from pathlib import Path

from ganlab.errors import GanlabError
from ganlab.store.atomic import write_atomically

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def new_plugin(folder: str | Path, name: str) -> list[Path]:
    """Write the plugin package into ``folder`` (which must not exist or be empty); returns the files written."""
    if not NAME.match(name):
        raise GanlabError(f"--name {name!r}: use lowercase letters, digits and dashes, starting with a letter")
    if name in {ep.name for ep in metadata.entry_points(group="ganlab")}:
        raise GanlabError(f"--name {name!r}: an installed plugin has that name already (see `ganlab plugins`); "
                          "choose another")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise GanlabError(f"{folder} exists and is not an empty folder; choose a new one")
    package = "ganlab_" + name.replace("-", "_")
    template = resources.files("ganlab") / "templates" / "plugin"
    targets = {"pyproject.toml.txt": "pyproject.toml", "plugin.py.txt": f"{package}/__init__.py",
               "test_plugin.py.txt": f"tests/test_{package}.py", "README.md.txt": "README.md"}
    files = {folder / target: (template / source).read_text().format(name=name, package=package)
             for source, target in targets.items()}
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, text)
    except OSError as exc:
        raise GanlabError(f"cannot write the plugin into {folder}: {exc.strerror or exc}") from None
    return list(files)
