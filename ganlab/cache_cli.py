"""``ganlab cache``: what the cache folder holds, and clearing it.

Reports keep work there between runs ($GANLAB_CACHE, else ~/.cache/ganlab): D features per checkpoint and split
(``features/``, by far the largest), svm-probe's baseline rows (``svm-probe/``), probe-epochs' lines and C
(``probe-epochs/``), hash-collisions' autoencoder (``hash-collisions/``), UMAP's compiled code (``numba/``).
Everything in it is recomputed when missing, so clearing costs time, never results.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from ganlab.errors import GanlabError


def cache_folder() -> Path:
    from ganlab.report import cache_dir

    return cache_dir().expanduser()


def _size(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path`` (a file or a folder), not following links."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size, 1
    total = files = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            total, files = total + item.stat().st_size, files + 1
    return total, files


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def parts(folder: Path) -> dict[str, Path]:
    """The cache's top-level entries, by name."""
    return {p.name: p for p in sorted(folder.iterdir())} if folder.is_dir() else {}


@click.group("cache", invoke_without_command=True)
@click.pass_context
def cache(ctx: click.Context) -> None:
    """Show the cache folder's parts and sizes (ganlab cache clear empties them)."""
    if ctx.invoked_subcommand is not None:
        return
    folder = cache_folder()
    found = parts(folder)
    if not found:
        click.echo(f"{folder}: empty (nothing cached yet)")
        return
    click.echo(f"{folder} ($GANLAB_CACHE to move it)")
    grand = 0
    for name, path in found.items():
        size, files = _size(path)
        grand += size
        click.echo(f"  {name:<18} {_human(size):>9}  {files:,} file{'s' if files != 1 else ''}")
    click.echo(f"  {'total':<18} {_human(grand):>9}")


@cache.command("clear")
@click.argument("names", nargs=-1)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def clear(names: tuple[str, ...], yes: bool) -> None:
    """Delete the cache's parts NAMES (default: all of them); they are recomputed when next needed."""
    folder = cache_folder()
    resolved = folder.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise GanlabError(f"refusing to clear {resolved}: $GANLAB_CACHE points at a folder that is not only a cache")
    found = parts(folder)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise GanlabError(f"no cache part named {', '.join(unknown)} in {folder}; it holds: "
                          f"{', '.join(found) or 'nothing'}")
    chosen = {n: found[n] for n in (names or found)}
    if not chosen:
        click.echo(f"{folder}: empty, nothing to clear")
        return
    sizes = {n: _size(p)[0] for n, p in chosen.items()}
    what = ", ".join(f"{n} ({_human(s)})" for n, s in sizes.items())
    if not yes:
        click.confirm(f"Delete {what} from {folder}?", abort=True)
    for path in chosen.values():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    click.echo(f"cleared {what}: {_human(sum(sizes.values()))} freed")
