"""``ganlab plugins``, ``ganlab components`` and ``ganlab new-plugin``: what is installed, and a start on a new one."""
from __future__ import annotations

import json

import click

from ganlab.errors import GanlabError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--check", is_flag=True, help="exit 1 if any plugin failed to load or register")
def plugins(as_json: bool, check: bool) -> None:
    """List plugins, their distribution and version, what they register, and load errors."""
    from ganlab.registry import get_registry

    registry = get_registry()
    rows = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "registers": p.registers,
         "error": p.error, "disabled": p.disabled}
        for p in registry.plugins.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = " [disabled]" if row["disabled"] else (" [FAILED]" if row["error"] else "")
            click.echo(f"{row['name']} ({row['distribution']} {row['version']}){state}")
            for kind, names in sorted(row["registers"].items()):
                click.echo(f"    {kind}: {', '.join(names)}")
            if row["error"]:
                click.echo(f"    error: {row['error']}")
    failed = [row["name"] for row in rows if row["error"]]
    if check and failed:
        raise GanlabError(f"plugins failed: {', '.join(failed)} (see `ganlab plugins`)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def components(as_json: bool) -> None:
    """List evaluators and analyses: kind, needs, cheap, and each option's default and type (for --set)."""
    from ganlab.options import describe
    from ganlab.registry import get_registry

    registry = get_registry()
    rows = [
        {"name": name, "kind": c.kind, "plugin": registry.component_owner(name), "description": c.description,
         "needs": sorted(c.needs), "cheap": bool(c.cheap),
         "options": describe(c.options), "directions": dict(c.directions)}
        for name, c in sorted(registry.components().items())
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        flags = ", ".join([row["kind"]] + (["cheap"] if row["cheap"] else []) +
                          ([f"needs {', '.join(row['needs'])}"] if row["needs"] else []))
        click.echo(f"{row['name']} ({flags}; plugin {row['plugin']})")
        click.echo(f"    {row['description']}")
        for option, spec in row["options"].items():
            rules = [f"one of {', '.join(map(str, spec['choices']))}"] if spec["choices"] else []
            rules += [f">= {spec['min']:g}"] if spec["min"] is not None else []
            rules += [f"<= {spec['max']:g}"] if spec["max"] is not None else []
            about = f"; {spec['help']}" if spec["help"] else ""
            click.echo(f"    --set {row['name']}.{option}=...  ({spec['type']}, default {spec['default']!r}"
                       f"{''.join('; ' + r for r in rules)}){about}")


@click.command("new-plugin")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="plugin name: lowercase letters, digits and dashes")
def new_plugin(folder, name) -> None:
    """Write an installable plugin package with an evaluator, an analysis and a passing test."""
    from ganlab.scaffold import new_plugin as write

    for path in write(folder, name):
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install -e {folder} && ganlab plugins && python -m pytest {folder}")
