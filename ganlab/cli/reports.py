"""``ganlab report`` and ``ganlab run``: components on a checkpoint, and experiments (train, then report)."""
from __future__ import annotations

import click

from ganlab.cli.training import _options_from_flags, train_options
from ganlab.defaults import MAX_SEED
from ganlab.errors import GanlabError


def report_options(func):
    opts = [
        click.option("--only", help="comma-separated components to run (default: all applicable)"),
        click.option("--skip", help="comma-separated components to leave out"),
        click.option("--dataset", help="dataset for the components (default: the one recorded in the checkpoint)"),
        click.option("--data-root", type=click.Path(file_okay=False), help="folder holding the dataset files"),
        click.option("--set", "settings", multiple=True, metavar="NAME.OPTION=VALUE", help="set a component option"),
        click.option("--across-epochs", is_flag=True, help="with a run folder: plot every component over the epochs"),
        click.option("--select-epoch", metavar="COMPONENT.METRIC",
                     help="with a run folder: report on the epoch where this (validation) metric is best, by the "
                          "direction its component declares"),
        click.option("--epoch-points", type=click.IntRange(0), default=10, show_default=True,
                     help="with a run folder: plot at most N epochs, evenly spread with the first and last (0: "
                          "all; --select-epoch always looks at all)"),
        click.option("--json", "as_json", is_flag=True, help="print metrics.json's content to stdout, nothing else"),
        click.option("--quiet", "-q", is_flag=True, help="no progress bars"),
        click.option("--skip-bad-images", is_flag=True, help="skip unreadable image files (with a count)"),
        click.option("--traceback", "-v", "show_traceback", is_flag=True,
                     help="print the full traceback of each failed component"),
        click.option("--component-timeout", type=click.FloatRange(min=0), default=6 * 3600, show_default=True,
                     help="seconds one component may run before it is stopped and marked timed out (0: no limit)"),
        click.option("--settle-batchnorm", is_flag=True,
                     help="recompute G's BatchNorm statistics from 1,024 random latent vectors first (for a "
                          "checkpoint whose eval-mode samples are flat: its running statistics never settled)"),
    ]
    for option in reversed(opts):
        func = option(func)
    return func


def _split(text: str | None, flag: str = "--only") -> list[str] | None:
    """"a, b" -> ["a", "b"]; None when the flag was not given; a value that names nothing is an error."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise GanlabError(f"{flag} {text!r} names no component; give names separated by commas (see `ganlab "
                          "components`)")
    return names


def _write_report(checkpoint, *, only, skip, out, dataset, data_root, seed, device, settings, across_epochs,
                  as_json=False, quiet=False, skip_bad_images=False, show_traceback=False, select_epoch=None,
                  epoch_points=10, component_timeout=6 * 3600, settle_batchnorm=False) -> None:
    from ganlab.report import make_report

    def say(line: str) -> None:
        click.echo(line, err=True)

    data, folder = make_report(checkpoint, only=only, skip=_split(skip, "--skip"), out=out, dataset=dataset,
                               data_root=data_root, seed=seed, device=device, settings=settings,
                               all_across_epochs=across_epochs, progress=not quiet and not as_json, say=say,
                               skip_bad_images=skip_bad_images, select_epoch=select_epoch, epoch_points=epoch_points,
                               component_timeout=component_timeout, settle_batchnorm=settle_batchnorm)
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


@click.command()
@click.argument("checkpoint", type=click.Path())
@report_options
@click.option("--out", type=click.Path(file_okay=False), help="output folder (default reports/<checkpoint name>)")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def report(checkpoint, only, settings, **flags) -> None:
    """Run every applicable evaluator and analysis on CHECKPOINT (a file or a run folder)."""
    from ganlab.options import parse_settings

    _write_report(checkpoint, only=_split(only), settings=parse_settings(settings), **flags)


@click.command()
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
@click.option("--component-timeout", type=click.FloatRange(min=0), default=6 * 3600, show_default=True,
              help="seconds one component may run before it is stopped and marked timed out (0: no limit)")
def run(experiment, list_, retrain, checkpoint, report_out, settings, quiet, seeds, component_timeout,
        **flags) -> None:
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
        return _run_experiment(exp, options, retrain, checkpoint, report_out, settings, quiet, options.seed,
                               component_timeout)
    if checkpoint is not None:
        raise GanlabError("--seeds trains one GAN per seed; it cannot be combined with --checkpoint")
    if options.seed + seeds - 1 > MAX_SEED:
        raise GanlabError(f"--seed {options.seed} --seeds {seeds} goes past the largest seed, {MAX_SEED}")
    from ganlab.report import seed_runs

    numbers = list(range(options.seed, options.seed + seeds))
    runs, reports = seed_runs.seed_folders(options.out, numbers), seed_runs.seed_folders(report_out, numbers)
    for seed in numbers:
        click.echo(f"GAN seed {seed}: run folder {runs[seed]}, report {reports[seed]}", err=True)
        # The report seed stays the first one, so every GAN is probed with the same label draws.
        _run_experiment(exp, options.updated(seed=seed, out=str(runs[seed])), retrain, None, reports[seed], settings,
                        quiet, options.seed, component_timeout)
    from ganlab.api import seed_tables

    summary = seed_runs.summarise(seed_runs.read_metrics(reports))
    tables = seed_tables(summary)
    written = seed_runs.write_summary(seed_runs.summary_folder(report_out), summary, exp.name, reports, tables)
    for table in tables:
        click.echo(f"{table.title}:")
        for row in table.rows:
            click.echo("  " + "  ".join(map(str, row)))
    click.echo(f"summary over {seeds} GAN seeds: {written}")


def _run_experiment(exp, options, retrain, checkpoint, report_out, settings, quiet, report_seed,
                    component_timeout) -> None:
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
                  skip_bad_images=bool(options.skip_bad_images), component_timeout=component_timeout,
                  # a run of one epoch has nothing to choose from
                  select_epoch=exp.select_epoch if len(list(Path(checkpoint).glob("epoch_*.pt"))) > 1 else None)
