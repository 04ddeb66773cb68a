"""An example ganlab plugin: an evaluator and a command, registered through the ``ganlab`` entry points."""
import click

import ganlab


class SampleBrightness(ganlab.Evaluator):
    """Mean brightness of generated images, in [0, 1]: the smallest useful evaluator."""

    name = "example-brightness"
    description = "Mean pixel brightness of 256 generated images (0 = black, 1 = white)"
    options = {"samples": 256}
    cheap = True

    def run(self, ctx):
        images = ctx.gan.sample(ctx.options["samples"], seed=ctx.seed)  # N x C x H x W in [-1, 1]
        brightness = (images + 1) / 2
        return ganlab.Result(metrics={"brightness": brightness.mean().item()},
                             text=[f"measured on {len(images)} samples"])


@ganlab.hookimpl
def ganlab_register_evaluators(register):
    register(SampleBrightness())


@click.command("example-hello")
@click.argument("name", default="world")
def hello(name):
    """Say hello (a command added by the example plugin)."""
    click.echo(f"hello {name} from ganlab-example-plugin")


@ganlab.hookimpl
def ganlab_register_commands(cli):
    cli.add_command(hello)
