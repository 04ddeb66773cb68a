"""The ``ganlab`` command line. torch is imported inside commands so ``ganlab --help`` stays fast."""
from __future__ import annotations

import json
import sys
from dataclasses import fields

import click

from ganlab import __version__
from ganlab.cache_cli import cache
from ganlab.errors import GanlabError


class GanlabGroup(click.Group):
    """Turns ``GanlabError`` into click's one-line ``Error: ...`` and exit 1, never a traceback."""

    plugin_commands: dict[str, str] = {}  # command name -> plugin that added it

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GanlabError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:  # one line, not click's usage block
            where = f"ganlab {exc.ctx.info_name} --help" if exc.ctx and exc.ctx.parent else "ganlab --help"
            error = click.ClickException(f"{exc.format_message()} (see `{where}`)")
            error.exit_code = exc.exit_code
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """A command from a plugin that failed to register elsewhere is refused with that plugin's error."""
        name, command, rest = super().resolve_command(ctx, args)
        plugin = self.plugin_commands.get(name)
        if plugin is not None:
            from ganlab.registry import get_registry

            info = get_registry().plugins.get(plugin)
            if info is not None and info.error:
                raise GanlabError(f"command {name!r} comes from plugin {plugin}, which failed: {info.error}")
        return name, command, rest


@click.group(cls=GanlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ganlab")
def cli() -> None:
    """Train, load, evaluate and analyse DCGANs (Radford, Metz & Chintala 2015)."""


def train_options(func):
    """Training flags shared by ``train`` and ``run``; defaults come from ``TrainOptions``."""
    from ganlab.defaults import MAX_SEED, TrainOptions

    d = TrainOptions()
    opts = [
        click.option("--dataset", default=None, help=f"dataset name (default {d.dataset}); see `ganlab plugins`"),
        click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="folder holding the dataset files"),
        click.option("--split", default=None, help=f"split to train on (default {d.split})"),
        click.option("--download", is_flag=True, default=None, help="allow torchvision to download the dataset"),
        click.option("--limit", type=click.IntRange(2), default=None, help="train on the first N images only"),
        click.option("--preset", type=click.Choice(["dcgan32", "dcgan64", "imagenet32"]), default=None,
                     help="model preset; flags below override it"),
        click.option("--image-size", type=click.Choice(["16", "32", "64", "128"]), default=None,
                     help="image side (default 32)"),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 or 3 (default: by dataset)"),
        click.option("--nz", type=click.IntRange(1), default=None, help="latent size (default 100)"),
        click.option("--ngf", type=click.IntRange(1), default=None, help="G width (default 64)"),
        click.option("--ndf", type=click.IntRange(1), default=None, help="D width (default 64)"),
        click.option("--kernel-size", type=click.Choice(["3", "4", "5"]), default=None, help="conv kernel (default 4)"),
        click.option("--latent", type=click.Choice(["normal", "uniform"]), default=None, help="z distribution"),
        click.option("--epochs", type=click.IntRange(1), default=None, help=f"epochs (default {d.epochs})"),
        click.option("--batch-size", type=click.IntRange(1), default=None, help=f"batch size (default {d.batch_size})"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help=f"Adam lr (default {d.lr})"),
        click.option("--beta1", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help=f"Adam beta1 (default {d.beta1})"),
        click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help=f"random seed (default {d.seed})"),
        click.option("--device", default=None, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"),
        click.option("--amp", is_flag=True, default=None, help="mixed precision (bf16, or fp16 with loss scaling)"),
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="run folder (default runs/DATASET; with --resume, the checkpoint's folder)"),
        click.option("--overwrite", is_flag=True, default=None, help="replace a run already in the run folder"),
        click.option("--skip-bad-images", is_flag=True, default=None,
                     help="skip unreadable image files (with a count) instead of stopping"),
        click.option("--exclude", type=click.Path(dir_okay=False), default=None,
                     help="file of image positions to leave out, one per line (e.g. from ganlab dedup)"),
    ]
    for option in reversed(opts):
        func = option(func)
    return func


def _options_from_flags(base, flags: dict):
    """Apply the flags the user gave (not None) on top of ``base`` TrainOptions."""
    names = {f.name for f in fields(base)}
    changes = {k: v for k, v in flags.items() if k in names and v is not None}
    for key in ("image_size", "channels", "kernel_size"):
        if key in changes:
            changes[key] = int(changes[key])
    return base.updated(**changes)


@cli.command()
@train_options
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="continue from this checkpoint")
def train(**flags) -> None:
    """Train a DCGAN; writes checkpoints, sample grids and log.jsonl to the run folder."""
    from ganlab.api import train as run_training
    from ganlab.defaults import TrainOptions

    options = _options_from_flags(TrainOptions(), flags)
    last = run_training(options)
    click.echo(f"trained {options.epochs} epochs; last checkpoint: {last}")


def _load_for_cli(checkpoint, generator, discriminator, device):
    from ganlab.api import load
    from ganlab.devices import select_device
    from ganlab.pytorch_examples import load_pair

    if checkpoint and generator:
        raise GanlabError("give a checkpoint or --generator, not both")
    if generator:
        return load_pair(generator, discriminator).to(select_device(device))
    if not checkpoint:
        raise GanlabError("give a checkpoint (ganlab sample CKPT) or --generator netG.pth")
    return load(checkpoint, select_device(device))


@cli.command()
@click.argument("checkpoint", required=False, type=click.Path())
@click.option("-n", "count", type=click.IntRange(1, 1_000_000), default=64, show_default=True,
              help="number of images (a grid holds at most 4096)")
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True,
              help="the grid image to write")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="write N separate PNGs (sample_000000.png, ...) here instead of a grid, for external tools")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nrow", type=click.IntRange(1), default=8, show_default=True, help="images per grid row")
@click.option("--generator", type=click.Path(dir_okay=False),
              help="a pytorch/examples netG_*.pth instead of CHECKPOINT")
@click.option("--discriminator", type=click.Path(dir_okay=False), help="its netD_*.pth (optional)")
@click.option("--device", default="auto", show_default=True)
def sample(checkpoint, count, out, out_dir, seed, nrow, generator, discriminator, device) -> None:
    """Write N generated images: a grid (PNG, JPEG, ...) or, with --out-dir, one PNG per image."""
    from pathlib import Path

    from PIL import Image

    out = Path(out)
    if out_dir is None and out.suffix.lower() not in Image.registered_extensions():
        raise GanlabError(f"--out {out}: unknown image extension {out.suffix or '(none)'!r}; use .png or .jpg")
    if out_dir is None and count > 4096:
        raise GanlabError(f"-n {count}: a grid holds at most 4096 images; give --out-dir DIR for one file each")
    if out_dir is not None and Path(out_dir).is_dir() and any(Path(out_dir).glob("sample_*.png")):
        raise GanlabError(f"{out_dir} already holds sample_*.png files; give an empty or new --out-dir")
    gan = _load_for_cli(checkpoint, generator, discriminator, device)
    from ganlab.sample_files import write_samples

    written = write_samples(gan, count, seed, out, Path(out_dir) if out_dir else None, nrow)
    click.echo(f"wrote {count} samples to {written}")


@cli.command()
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def components(as_json: bool) -> None:
    """List evaluators and analyses: kind, needs, cheap, and each option's default and type (for --set)."""
    from ganlab.options import describe
    from ganlab.registry import get_registry

    registry = get_registry()
    rows = [
        {"name": name, "kind": c.kind, "plugin": registry.component_owner(name), "description": c.description,
         "needs": sorted(c.needs), "cheap": bool(c.cheap),
         "options": describe(c.options)}
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


@cli.command("new-plugin")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="plugin name: lowercase letters, digits and dashes")
def new_plugin(folder, name) -> None:
    """Write an installable plugin package with an evaluator, an analysis and a passing test."""
    from ganlab.scaffold import new_plugin as write

    for path in write(folder, name):
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install -e {folder} && ganlab plugins && python -m pytest {folder}")


def report_options(func):
    opts = [
        click.option("--only", help="comma-separated components to run (default: all applicable)"),
        click.option("--skip", help="comma-separated components to leave out"),
        click.option("--dataset", help="dataset for the components (default: the one recorded in the checkpoint)"),
        click.option("--data-root", type=click.Path(file_okay=False), help="folder holding the dataset files"),
        click.option("--set", "settings", multiple=True, metavar="NAME.OPTION=VALUE", help="set a component option"),
        click.option("--across-epochs", is_flag=True, help="with a run folder: plot every component over the epochs"),
        click.option("--select-epoch", metavar="COMPONENT.METRIC",
                     help="with a run folder: report on the epoch where this (validation) metric is highest"),
        click.option("--epoch-points", type=click.IntRange(0), default=10, show_default=True,
                     help="with a run folder: plot at most N epochs, evenly spread with the first and last (0: "
                          "all; --select-epoch always looks at all)"),
        click.option("--json", "as_json", is_flag=True, help="print metrics.json's content to stdout, nothing else"),
        click.option("--quiet", "-q", is_flag=True, help="no progress bars"),
        click.option("--skip-bad-images", is_flag=True, help="skip unreadable image files (with a count)"),
        click.option("--traceback", "-v", "show_traceback", is_flag=True,
                     help="print the full traceback of each failed component"),
    ]
    for option in reversed(opts):
        func = option(func)
    return func


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _write_report(checkpoint, *, only, skip, out, dataset, data_root, seed, device, settings, across_epochs,
                  as_json=False, quiet=False, skip_bad_images=False, show_traceback=False, select_epoch=None,
                  epoch_points=10) -> None:
    from ganlab.report import make_report

    def say(line: str) -> None:
        click.echo(line, err=True)

    data, folder = make_report(checkpoint, only=only, skip=_split(skip), out=out, dataset=dataset,
                               data_root=data_root, seed=seed, device=device, settings=settings,
                               all_across_epochs=across_epochs, progress=not quiet and not as_json, say=say,
                               skip_bad_images=skip_bad_images, select_epoch=select_epoch, epoch_points=epoch_points)
    if show_traceback:
        for run in data.components:
            if run.traceback:
                click.echo(f"traceback of {run.name}:\n{run.traceback.rstrip()}", err=True)
    if as_json:
        click.echo((folder / "metrics.json").read_text())
    click.echo(f"report: {(folder / 'index.html').resolve().as_uri()}", err=as_json)
    if data.failed:
        also = f"; also: {data.problems[0]}" if data.problems else ""
        raise click.ClickException(f"components failed: {', '.join(data.failed)} (see their sections in the report)"
                                   f"{also}")
    if data.problems:
        more = f" (and {len(data.problems) - 1} more, listed in the report)" if len(data.problems) > 1 else ""
        raise click.ClickException(f"the report was written with problems: {data.problems[0]}{more}")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@report_options
@click.option("--out", type=click.Path(file_okay=False), help="output folder (default reports/<checkpoint name>)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def report(checkpoint, only, settings, **flags) -> None:
    """Run every applicable evaluator and analysis on CHECKPOINT (a file or a run folder)."""
    from ganlab.options import parse_settings

    _write_report(checkpoint, only=_split(only), settings=parse_settings(settings), **flags)


@cli.command()
@click.argument("experiment", required=False)
@click.option("--list", "list_", is_flag=True, help="list the experiments")
@click.option("--retrain", is_flag=True, help="train again, replacing the run in the run folder")
@click.option("--checkpoint", type=click.Path(), help="report on this checkpoint instead of training")
@click.option("--report-out", type=click.Path(file_okay=False), help="report folder (default reports/EXPERIMENT)")
@train_options
@click.option("--set", "settings", multiple=True, metavar="NAME.OPTION=VALUE", help="set a component option")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars in the report")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="train K GANs (seeds SEED ... SEED+K-1) and summarise their reports as mean ± std over seeds")
def run(experiment, list_, retrain, checkpoint, report_out, settings, quiet, seeds, **flags) -> None:
    """Run a registered experiment: train (unless its checkpoint exists), then write the report."""
    from ganlab.defaults import MAX_SEED, TrainOptions
    from ganlab.registry import get_registry

    registry = get_registry()
    if list_ or not experiment:
        if not registry.experiments:
            click.echo("no experiments registered")
        for name, exp in sorted(registry.experiments.items()):
            click.echo(f"{name:<16} {exp.description}")
        return
    exp = registry.get("experiments", experiment)
    options = _options_from_flags(TrainOptions(out=f"runs/{exp.name}").updated(**exp.train), flags)
    report_out = report_out or f"reports/{exp.name}"
    if seeds == 1:
        return _run_experiment(exp, options, retrain, checkpoint, report_out, settings, quiet, options.seed)
    if checkpoint is not None:
        raise GanlabError("--seeds trains one GAN per seed; it cannot be combined with --checkpoint")
    if options.seed + seeds - 1 > MAX_SEED:
        raise GanlabError(f"--seed {options.seed} --seeds {seeds} goes past the largest seed, {MAX_SEED}")
    from ganlab import seed_runs

    numbers = list(range(options.seed, options.seed + seeds))
    runs, reports = seed_runs.seed_folders(options.out, numbers), seed_runs.seed_folders(report_out, numbers)
    for seed in numbers:
        click.echo(f"GAN seed {seed}: run folder {runs[seed]}, report {reports[seed]}", err=True)
        # The report seed stays the first one, so every GAN is probed with the same label draws.
        _run_experiment(exp, options.updated(seed=seed, out=str(runs[seed])), retrain, None, reports[seed], settings,
                        quiet, options.seed)
    summary = seed_runs.summarise(seed_runs.read_metrics(reports))
    written = seed_runs.write_summary(seed_runs.summary_folder(report_out), summary, exp.name, reports)
    for row in seed_runs.probe_rows(summary):
        click.echo(f"{row[0]:<12} {row[1]:<6} {row[2]} % over {row[3]} GAN seeds")
    click.echo(f"summary over {seeds} GAN seeds: {written}")


def _run_experiment(exp, options, retrain, checkpoint, report_out, settings, quiet, report_seed) -> None:
    """Train ``exp`` into ``options.out`` unless its last.pt exists (or report on ``checkpoint``), then report."""
    from pathlib import Path

    from ganlab.options import parse_settings

    if checkpoint is None:
        last = Path(options.out) / "last.pt"
        if retrain or not last.exists():
            from ganlab.api import train as run_training

            # --retrain asks for a fresh run: it replaces the old one in the run folder
            run_training(options.updated(resume=None, overwrite=bool(retrain or options.overwrite)))
        else:
            click.echo(f"using existing {last} (give --retrain to train again)")
        checkpoint = str(Path(options.out))
    _write_report(checkpoint, only=list(exp.components) if exp.components else None, skip=None,
                  out=str(report_out), dataset=exp.report_dataset, data_root=options.data_root,
                  seed=report_seed, device=options.device,
                  settings={**exp.component_options, **parse_settings(settings)}, across_epochs=False, quiet=quiet,
                  skip_bad_images=bool(options.skip_bad_images),
                  # a run of one epoch has nothing to choose from
                  select_epoch=exp.select_epoch if len(list(Path(checkpoint).glob("epoch_*.pt"))) > 1 else None)


def main() -> None:
    cli(prog_name="ganlab")


def _add_plugin_commands() -> None:
    from ganlab.registry import register_commands

    GanlabGroup.plugin_commands = register_commands(cli)


cli.add_command(cache)
# Plugin commands join the group last, so a plugin cannot shadow a built-in by accident.
_add_plugin_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
