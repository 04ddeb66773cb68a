"""``ganlab report`` and ``ganlab run``: components on a checkpoint, and experiments (train, then report)."""
from pathlib import Path

import click

from ganlab.cli.training import QUIET, SETTLE, _options_from_flags, train_options
from ganlab.defaults import MAX_SEED, ReportOptions, TrainOptions
from ganlab.errors import GanlabError
from ganlab.plugin.options import parse_settings
from ganlab.plugin.registry import get_registry
from ganlab.store.claims import epoch_files

DEFAULTS = ReportOptions()
SET = click.option("--set", "settings", multiple=True, metavar="NAME.OPTION=VALUE",
                   help="set a component option (see `ganlab components`)")
MAX_TIMEOUT = 1e8  # seconds, three years: setitimer refuses infinity


def _a_number(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if value != value:  # NaN passes every range check
        raise click.BadParameter("nan is not a number of seconds")
    return value


TIMEOUT = click.option("--component-timeout", type=click.FloatRange(min=0, max=MAX_TIMEOUT), callback=_a_number,
                       default=DEFAULTS.component_timeout, show_default=True,
                       help="seconds one component may run before it is stopped and marked timed out (0: no limit)")


class Names(click.ParamType):
    """"a, b" -> ["a", "b"]; a value that names nothing is an error."""

    name = "text"

    def convert(self, value, param, ctx) -> list[str]:
        found = [t.strip() for t in value.split(",") if t.strip()]
        if not found:
            raise GanlabError(f"{param.opts[0]} {value!r} names no component; give names separated by commas (see "
                              "`ganlab components`)")
        return found


def write_report(checkpoint, *, as_json=False, quiet=False, show_traceback=False, **options) -> None:
    """``make_report`` with the command line's output: status lines, the page's address, a one-line verdict."""
    from ganlab.report import make_report

    data, folder = make_report(checkpoint, progress=not quiet and not as_json,
                               say=lambda line: click.echo(line, err=True), **options)
    for run in data.components if show_traceback else []:
        if run.traceback:
            click.echo(f"traceback of {run.name}:\n{run.traceback.rstrip()}", err=True)
    if as_json:
        click.echo((folder / "metrics.json").read_text())
    click.echo(f"report: {(folder / 'index.html').as_uri()}", err=as_json)
    if data.failed:
        also = f"; also: {data.problems[0]}" if data.problems else ""
        raise GanlabError(f"components failed: {', '.join(data.failed)} (see their sections in the report){also}")
    if data.problems:
        more = f" (and {len(data.problems) - 1} more, listed in the report)" if len(data.problems) > 1 else ""
        raise GanlabError(f"the report was written with problems: {data.problems[0]}{more}")


@click.command("report")
@click.argument("checkpoint", type=click.Path())
@click.option("--only", type=Names(), help="comma-separated components to run (default: all applicable)")
@click.option("--skip", type=Names(), help="comma-separated components to leave out")
@click.option("--dataset", help="dataset for the components (default: the one recorded in the checkpoint)")
@click.option("--data-root", type=click.Path(file_okay=False), help="folder holding the dataset files")
@SET
@click.option("--across-epochs", is_flag=True, help="with a run folder: plot every component over the epochs")
@click.option("--select-epoch", metavar="COMPONENT.METRIC",
              help="with a run folder: report on the epoch where this (validation) metric is best, by the "
                   "direction its component declares")
@click.option("--epoch-points", type=click.IntRange(0), default=DEFAULTS.epoch_points, show_default=True,
              help="with a run folder: plot at most N epochs, evenly spread with the first and last (0: all; "
                   "--select-epoch always looks at all)")
@click.option("--json", "as_json", is_flag=True, help="print metrics.json's content to stdout, nothing else")
@QUIET
@click.option("--skip-bad-images", is_flag=True, help="skip unreadable image files (with a count)")
@click.option("--traceback", "-v", "show_traceback", is_flag=True,
              help="print the full traceback of each failed component")
@TIMEOUT
@SETTLE
@click.option("--out", type=click.Path(file_okay=False), help="output folder (default reports/<checkpoint name>)")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=DEFAULTS.seed, show_default=True)
@click.option("--device", default=DEFAULTS.device, show_default=True)
def report(checkpoint, across_epochs, settings, **flags) -> None:
    """Run every applicable evaluator and analysis on CHECKPOINT (a file or a run folder)."""
    write_report(checkpoint, all_across_epochs=across_epochs, settings=parse_settings(settings), **flags)


@click.command()
@click.argument("experiment", required=False)
@click.option("--list", "list_", is_flag=True, help="list the experiments")
@click.option("--retrain", is_flag=True, help="train again, replacing the run in the run folder")
@click.option("--checkpoint", type=click.Path(), help="report on this checkpoint instead of training")
@click.option("--report-out", type=click.Path(file_okay=False), help="report folder (default reports/EXPERIMENT)")
@train_options
@SET
@QUIET
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="train K GANs (seeds SEED ... SEED+K-1) and summarise their reports as mean ± std over seeds")
@TIMEOUT
@SETTLE
def run(experiment, list_, retrain, checkpoint, report_out, seeds, settings, quiet, component_timeout,
        settle_batchnorm, **flags) -> None:
    """Run a registered experiment: train (unless its checkpoint exists), then write the report.

    The training defaults below are `ganlab train`'s: an experiment's own settings (`ganlab run --list` shows
    them) replace them, and the flags given replace both."""
    if list_ or not experiment:
        click.echo("\n".join(_listing(n, e) for n, e in sorted(get_registry().experiments.items()))
                   or "no experiments registered")
        return
    exp = get_registry().get("experiments", experiment)
    if checkpoint is not None and retrain:
        raise GanlabError("give --checkpoint (report on that checkpoint) or --retrain (train anew), not both")
    options = _options_from_flags(TrainOptions().updated(**exp.train), flags)
    # another dataset than the experiment's gets a run folder (and report) of its own
    name = exp.name if options.dataset == exp.train.get("dataset", TrainOptions.dataset) else \
        f"{exp.name}-{options.dataset.replace(':', '-')}"
    options = options if flags.get("out") else options.updated(out=f"runs/{name}")
    report = {"settings": {**exp.component_options, **parse_settings(settings)}, "quiet": quiet,
              "settle_batchnorm": settle_batchnorm, "component_timeout": component_timeout, "seed": options.seed}
    report_out = report_out or f"reports/{name}"
    if seeds == 1:
        return _run_experiment(exp, options, retrain, checkpoint, report_out, report)
    if checkpoint is not None:
        raise GanlabError("--seeds trains one GAN per seed; it cannot be combined with --checkpoint")
    if options.seed + seeds - 1 > MAX_SEED:
        raise GanlabError(f"--seed {options.seed} --seeds {seeds} goes past the largest seed, {MAX_SEED}")
    _run_seeds(exp, options, retrain, report_out, report, list(range(options.seed, options.seed + seeds)))


def _listing(name, exp) -> str:
    """An experiment's name and description, then the training settings it sets (over `ganlab train`'s)."""
    trains = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in exp.train.items())
    return f"{name:<16} {exp.description}" + (f"\n{'':<16} trains with: {trains}" if trains else "")


def _run_seeds(exp, options, retrain, report_out, report, numbers) -> None:
    """One GAN and report per seed, then the summary over seeds (seeds.md) with the components' own tables."""
    from ganlab.api import seed_tables
    from ganlab.report import seed_runs

    runs, reports = seed_runs.seed_folders(options.out, numbers), seed_runs.seed_folders(report_out, numbers)
    for seed in numbers:
        click.echo(f"GAN seed {seed}: run folder {runs[seed]}, report {reports[seed]}", err=True)
        # The report seed stays the first one, so every GAN is probed with the same label draws.
        _run_experiment(exp, options.updated(seed=seed, out=str(runs[seed])), retrain, None, reports[seed], report)
    summary = seed_runs.summarise(seed_runs.read_metrics(reports))
    tables = seed_tables(summary)
    written = seed_runs.write_summary(seed_runs.summary_folder(report_out), summary, exp.name, reports, tables)
    for table in tables:
        click.echo(f"{table.title}:\n" + "\n".join("  " + "  ".join(map(str, row)) for row in table.rows))
    click.echo(f"summary over {len(numbers)} GAN seeds: {written}")


def _run_experiment(exp, options, retrain, checkpoint, report_out, report) -> None:
    """Train ``exp`` into ``options.out`` unless its last.pt exists (or report on ``checkpoint``), then report."""
    if checkpoint is None:
        from ganlab.api import train as run_training
        from ganlab.report.run import check_before_training

        check_before_training(list(exp.components or ()), report["settings"], exp.report_dataset or options.dataset,
                              None if exp.report_dataset else options.data_root)
        last = Path(options.out) / "last.pt"
        if retrain or not last.exists():
            # --retrain asks for a fresh run: it replaces the old one in the run folder
            run_training(options.updated(resume=None, overwrite=bool(retrain or options.overwrite)),
                         progress=not report["quiet"])
        elif _check_existing(last, options) < options.epochs:  # an interrupted run goes on where it stopped
            click.echo(f"resuming {last} to epoch {options.epochs}", err=True)
            run_training(options.updated(resume=str(last)), progress=not report["quiet"])
        else:
            click.echo(f"using existing {last} (give --retrain to train again)")
        checkpoint = str(Path(options.out))
    write_report(checkpoint, only=list(exp.components) if exp.components else None, out=str(report_out),
                 dataset=exp.report_dataset, data_root=options.data_root, device=options.device,
                 skip_bad_images=bool(options.skip_bad_images), **report,
                 # a run of one epoch has nothing to choose from
                 select_epoch=exp.select_epoch if len(epoch_files(checkpoint)) > 1 else None)


def _check_existing(last: Path, options) -> int:
    """A run already in the folder stands for the one asked only when it was trained with the same settings;
    returns the epochs it has finished."""
    from ganlab.model.checkpoint import read_checkpoint
    from ganlab.model.training import settings_differ

    payload = read_checkpoint(last)
    differ = settings_differ(options, payload)
    if differ:
        name, was, asked = differ[0]
        raise GanlabError(f"{last.parent} holds a run trained with {name} {was!r}, not {asked!r}; give --retrain "
                          "to replace it, or --out for a run folder of its own")
    return int(payload.get("epoch", 0)) if isinstance(payload.get("epoch"), int) else 0
