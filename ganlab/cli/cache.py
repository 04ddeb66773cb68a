"""``ganlab cache``: what the cache folder holds, and clearing it.

Reports keep work there between runs ($GANLAB_CACHE, else ~/.cache/ganlab), one part folder per user (D's
``features/`` is by far the largest). Everything in it is recomputed when missing: clearing costs time only.

``clear`` works only on a folder ganlab marked as its cache (or one of an older version's, holding nothing but
its parts), deletes only entries ganlab wrote (by their names; a tool's marked sub-folder whole) and never
follows a link: a link, or a file ganlab did not write, is left where it is and counted.
"""
import contextlib
import os
import re
from pathlib import Path

import click

from ganlab.errors import GanlabError
from ganlab.store.atomic import os_error, remove_tree
from ganlab.store.cache import ENTRY, PART, default_root, is_cache
from ganlab.store.claims import MARKER, absolute, folder_kind

# names older versions gave their entries (and their temporary files), per part
LEGACY = re.compile(r"^\.?([0-9a-f]{20}(-bn[0-9a-f]{16}b\d+)?\.(npy|json)|autoencoder-[0-9a-f]{16}\.pt)"
                    r"(\.tmp\.npy|\.\d+\.tmp|\.tmp)?$")
TEMPORARY = re.compile(r"^\.[0-9a-f]{32}\..+\.tmp\.[a-z0-9]+$")  # left by a process killed while storing
NUMBA = re.compile(r".+\.(nbi|nbc)$")


def _size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path`` (a file or a folder), not following links."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size, 1
    files = [Path(root) / name for root, _, names in os.walk(path) for name in names]
    sizes = [file.stat().st_size for file in files if not file.is_symlink()]
    return sum(sizes), len(sizes)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def parts(folder: Path) -> dict[str, Path]:
    """The cache's parts (its sub-folders, links excluded), by name."""
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink() and PART.match(p.name)}


def ours(part: Path) -> tuple[list[Path], int]:
    """(what ganlab wrote in ``part`` and may delete, how many other things are left there)."""
    if folder_kind(part) == "cache-folder":
        return [part], 0
    found, others = [], 0
    for root, dirs, names in os.walk(part):
        for name in names:
            path = Path(root) / name
            named = any(p.match(name) for p in (ENTRY, TEMPORARY, LEGACY)) or part.name == "numba" and NUMBA.match(name)
            if path.is_symlink() or not path.is_file() or not named:
                others += 1
            else:
                found.append(path)
        others += sum((Path(root) / d).is_symlink() for d in dirs)
    return found, others


@click.group("cache", invoke_without_command=True)
@click.pass_context
def cache(ctx: click.Context) -> None:
    """Show the cache folder's parts and sizes (ganlab cache clear empties them)."""
    if ctx.invoked_subcommand is not None:
        return
    folder = absolute(default_root())
    found = parts(folder)
    if not found:
        click.echo(f"{folder}: empty (nothing cached yet)")
        return
    click.echo(f"{folder} ($GANLAB_CACHE to move it)" + ("" if is_cache(folder) else ": not ganlab's cache"))
    sizes = {name: _size(path) for name, path in found.items()}
    for name, (size, files) in sizes.items():
        click.echo(f"  {name:<18} {_human(size):>9}  {files:,} file{'s' if files != 1 else ''}")
    click.echo(f"  {'total':<18} {_human(sum(size for size, _ in sizes.values())):>9}")


@cache.command("clear")
@click.argument("names", nargs=-1)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def clear(names: tuple[str, ...], yes: bool) -> None:
    """Delete the entries of the cache's parts NAMES (default: all of them); they are recomputed when needed."""
    folder = absolute(default_root())
    if not folder.is_dir():
        click.echo(f"{folder}: empty, nothing to clear")
        return
    if not is_cache(folder):
        raise GanlabError(f"refusing to clear {folder}: it is not a folder ganlab made as its cache (no {MARKER} "
                          "marker); nothing was deleted. Point GANLAB_CACHE at ganlab's cache folder")
    found = parts(folder)
    if unknown := [n for n in names if n not in found]:
        raise GanlabError(f"no cache part named {', '.join(unknown)} in {folder}; it holds: "
                          f"{', '.join(found) or 'nothing'}")
    chosen = {n: ours(found[n]) for n in (names or found)}
    if not any(paths for paths, _ in chosen.values()):
        click.echo(f"{folder}: empty, nothing to clear")
        return
    sizes = {n: sum(_size(p)[0] for p in paths) for n, (paths, _) in chosen.items()}
    what = ", ".join(f"{n} ({_human(s)})" for n, s in sizes.items())
    if not yes:
        click.confirm(f"Delete {what} from {folder}?", abort=True)
    for name, (paths, others) in chosen.items():
        for path in paths:
            try:
                remove_tree(path)
            except OSError as exc:  # a read-only cache, an entry of another user's: stop, saying where
                raise os_error("clear the cache entry", path, exc) from None
        _prune(found[name])
        if others:
            click.echo(f"  {name}: left {others} entr{'ies' if others > 1 else 'y'} ganlab did not write (links or "
                       "other files)")
    click.echo(f"cleared {what}: {_human(sum(sizes.values()))} freed")


def _prune(part: Path) -> None:
    """Remove folders left empty under ``part`` (and ``part`` itself, if still there), deepest first; links are not
    followed."""
    folders = [Path(root) / name for root, dirs, _ in os.walk(part, topdown=False) for name in dirs]
    for folder in [f for f in folders if not f.is_symlink()] + [part]:
        with contextlib.suppress(OSError):  # not empty: it holds something ganlab did not write
            folder.rmdir()
