"""A plugin whose command registers but whose evaluator is refused: the whole plugin is disabled, so ganlab must
not list its command as if it worked."""
import click

import ganlab


class Nameless(ganlab.Evaluator):
    name = "Not A Valid Name"
    description = "refused at registration"


@click.command("example-half-hello")
def half_hello():
    """Says hello (never runs: this plugin is disabled)."""
    click.echo("hello")


@ganlab.hookimpl
def ganlab_register_evaluators(register):
    register(Nameless())


@ganlab.hookimpl
def ganlab_register_commands(cli):
    cli.add_command(half_hello)
