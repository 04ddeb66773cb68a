"""The ``ganlab`` command line: one click group, a module per family of commands, plugin commands last.

torch is imported inside commands so ``ganlab --help`` stays fast."""
import signal
import sys

import click

from ganlab import __version__
from ganlab.cli.cache import cache
from ganlab.cli.info import components, new_plugin, plugins
from ganlab.cli.reports import report, run
from ganlab.cli.training import sample, train
from ganlab.errors import GanlabError, Terminated, raise_terminated
from ganlab.plugin.registry import collect_commands, get_registry


class GanlabGroup(click.Group):
    """Turns ``GanlabError`` into click's one-line ``Error: ...`` and exit 1, never a traceback."""

    plugin_commands: dict[str, str] = {}  # command name -> plugin that added it

    def invoke(self, ctx: click.Context):
        # SIGTERM unwinds like Ctrl-C, so whatever the command was writing is cleaned up on the way out
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        try:
            return super().invoke(ctx)
        except GanlabError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:  # one line, not click's usage block
            where = f"{exc.ctx.command_path} --help" if exc.ctx and exc.ctx.parent else "ganlab --help"
            error = click.ClickException(f"{exc.format_message()} (see `{where}`)")
            error.exit_code = exc.exit_code
            raise error from None
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            click.echo("terminated (SIGTERM)" if terminated else "interrupted", err=True)
            sys.exit(143 if terminated else 130)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _failed_plugin(self, command: str) -> tuple[str, str] | None:
        """(plugin, its error) when ``command`` comes from a plugin that failed."""
        plugin = self.plugin_commands.get(command)
        info = get_registry().plugins.get(plugin) if plugin is not None else None
        return (plugin, info.error) if info is not None and info.error else None

    def format_commands(self, ctx: click.Context, formatter) -> None:
        """``ganlab --help``: a command whose plugin failed is listed as unavailable, with the reason."""
        for name in self.plugin_commands:
            failed = self._failed_plugin(name)
            if failed and name in self.commands:
                self.commands[name].short_help = f"UNAVAILABLE: plugin {failed[0]} failed (see `ganlab plugins`)"
        super().format_commands(ctx, formatter)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """A command from a plugin that failed to register elsewhere is refused with that plugin's error."""
        name, command, rest = super().resolve_command(ctx, args)
        if failed := self._failed_plugin(name):
            raise GanlabError(f"command {name!r} comes from plugin {failed[0]}, which failed: {failed[1]}")
        return name, command, rest


@click.group(cls=GanlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ganlab")
def cli() -> None:
    """Train, load, evaluate and analyse DCGANs (Radford, Metz & Chintala 2015)."""


def main() -> None:
    cli(prog_name="ganlab")


for command in (train, sample, plugins, components, new_plugin, report, run, cache):
    cli.add_command(command)
# Plugin commands join the group last, so a plugin cannot shadow a built-in by accident.
GanlabGroup.plugin_commands = collect_commands(cli)
