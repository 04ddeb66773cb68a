"""``ganlab plugins``, ``ganlab components`` and ``ganlab new-plugin``: what is installed, and a start on a new one."""
import json
from dataclasses import asdict

import click

from ganlab.errors import GanlabError
from ganlab.plugin.registry import get_registry

JSON = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.command()
@JSON
@click.option("--check", is_flag=True, help="exit 1 if any plugin failed to load or register")
def plugins(as_json: bool, check: bool) -> None:
    """List plugins, their distribution and version, what they register, and load errors."""
    found = list(get_registry().plugins.values())
    if as_json:
        click.echo(json.dumps([asdict(p) for p in found], indent=2))
    else:
        for p in found:
            state = " [disabled]" if p.disabled else (" [FAILED]" if p.error else "")
            click.echo(f"{p.name} ({p.distribution} {p.version}){state}")
            for kind, names in sorted(p.registers.items()):
                click.echo(f"    {kind}: {', '.join(names)}")
            if p.error:
                click.echo(f"    error: {p.error}")
    failed = [p.name for p in found if p.error]
    if check and failed:
        raise GanlabError(f"plugins failed: {', '.join(failed)} (see `ganlab plugins`)")


def catalogue(registry) -> dict[str, list[dict]]:
    """Everything a report can use, by kind: components with their options, then loaders, feature spaces,
    datasets and detectors with their descriptions, and the plugins that failed to load."""
    from ganlab.plugin.options import describe

    def named(kind: str, **extra) -> list[dict]:
        return [{"name": name, "plugin": registry.owner.get((kind, name), "?"), "description": obj.description,
                 **{key: get(obj) for key, get in extra.items()}}
                for name, obj in sorted(getattr(registry, kind).items())]

    components = [{"name": name, "kind": c.kind, "plugin": registry.component_owner(name),
                   "description": c.description, "needs": sorted(c.needs), "cheap": bool(c.cheap),
                   "default": bool(getattr(c, "default", True)), "options": describe(c.options),
                   "directions": dict(c.directions)}
                  for name, c in sorted(registry.components().items())]
    # the plugins that read other checkpoint formats, with the first line of their hook's docstring
    loaders = sorted(({"name": impl.plugin_name, "plugin": impl.plugin_name,
                       "description": ((impl.function.__doc__ or "").strip().splitlines() or [""])[0]}
                      for impl in registry.pm.hook.ganlab_load_checkpoint.get_hookimpls()),
                     key=lambda row: row["name"])
    return {"components": components, "loaders": loaders, "feature_spaces": named("feature_spaces"),
            "datasets": named("datasets", splits=lambda d: [s for s in d.splits if s != "*"],
                              classes=lambda d: d.num_classes),
            "detectors": named("detectors"), "failed_plugins": registry.errors()}


def _option_line(component: str, option: str, spec: dict) -> str:
    rules = [f"one of {', '.join(map(str, spec['choices']))}"] if spec["choices"] else []
    rules += [f">= {spec['min']:g}"] if spec["min"] is not None else []
    rules += [f"<= {spec['max']:g}"] if spec["max"] is not None else []
    rules += [f"names of {spec['of'].replace('_', ' ')}"] if spec.get("of") else []
    about = f"; {spec['help']}" if spec["help"] else ""
    return (f"    --set {component}.{option}=...  ({spec['type']}, default {spec['default']!r}"
            f"{''.join('; ' + r for r in rules)}){about}")


@click.command()
@JSON
def components(as_json: bool) -> None:
    """List evaluators and analyses (kind, needs, cheap, each option for --set), then checkpoint loaders,
    feature spaces, datasets and detectors, and any plugin that failed to load."""
    found = catalogue(get_registry())
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    for line in found["failed_plugins"]:
        click.echo(f"warning: {line}", err=True)
    for row in found["components"]:
        flags = ", ".join([row["kind"]] + (["cheap"] if row["cheap"] else []) +
                          ([] if row["default"] else ["runs only when named with --only"]) +
                          ([f"needs {', '.join(row['needs'])}"] if row["needs"] else []))
        click.echo(f"{row['name']} ({flags}; plugin {row['plugin']})")
        click.echo(f"    {row['description']}")
        for option, spec in row["options"].items():
            click.echo(_option_line(row["name"], option, spec))
    for kind, title in (("loaders", "checkpoint loaders (tried on files ganlab's own loader cannot read)"),
                        ("feature_spaces", "feature spaces"), ("datasets", "datasets"), ("detectors", "detectors")):
        click.echo(f"\n{title}:")
        for row in found[kind] or [{"name": "none", "plugin": "-", "description": ""}]:
            click.echo(f"  {row['name']} (plugin {row['plugin']}): {row['description']}")


@click.command("new-plugin")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="plugin name: lowercase letters, digits and dashes")
def new_plugin(folder, name) -> None:
    """Write an installable plugin package with an evaluator, an analysis and a passing test."""
    from ganlab.plugin.scaffold import new_plugin as write

    for path in write(folder, name):
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install -e {folder} && ganlab plugins && python -m pytest {folder}")
