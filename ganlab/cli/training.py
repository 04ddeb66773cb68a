"""``ganlab train`` and ``ganlab sample``, and the training flags ``ganlab run`` shares."""
from __future__ import annotations

from dataclasses import fields

import click

from ganlab.defaults import MAX_SEED
from ganlab.errors import GanlabError


def train_options(func):
    """Training flags shared by ``train`` and ``run``; defaults come from ``TrainOptions``."""
    from ganlab.defaults import TrainOptions

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


@click.command()
@train_options
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="continue from this checkpoint")
@click.option("--allow-change", multiple=True, metavar="SETTING",
              help="with --resume: let this recorded setting (e.g. batch_size) change; repeatable; the run's log "
                   "records the change")
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


@click.command()
@click.argument("checkpoint", required=False, type=click.Path())
@click.option("-n", "count", type=click.IntRange(1, 1_000_000), default=64, show_default=True,
              help="number of images (a grid holds at most 4096)")
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True,
              help="the grid image to write")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="write N separate PNGs (sample_000000.png, ...) here instead of a grid, for external tools")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--nrow", type=click.IntRange(1), default=8, show_default=True, help="images per grid row")
@click.option("--generator", type=click.Path(dir_okay=False),
              help="a pytorch/examples netG_*.pth instead of CHECKPOINT")
@click.option("--discriminator", type=click.Path(dir_okay=False), help="its netD_*.pth (optional)")
@click.option("--device", default="auto", show_default=True)
@click.option("--settle-batchnorm", is_flag=True,
              help="recompute G's BatchNorm statistics from 1,024 random latent vectors first (for a checkpoint "
                   "whose eval-mode samples are flat)")
def sample(checkpoint, count, out, out_dir, seed, nrow, generator, discriminator, device, settle_batchnorm) -> None:
    """Write N generated images: a grid (PNG, JPEG, ...) or, with --out-dir, one PNG per image."""
    from pathlib import Path

    from PIL import Image

    out = Path(out)
    if out_dir is not None and click.get_current_context().get_parameter_source("out").name == "COMMANDLINE":
        raise GanlabError("give --out (one grid image) or --out-dir (one PNG per sample), not both")
    if out_dir is None and out.suffix.lower() not in Image.registered_extensions():
        raise GanlabError(f"--out {out}: unknown image extension {out.suffix or '(none)'!r}; use .png or .jpg")
    if out_dir is None and count > 4096:
        raise GanlabError(f"-n {count}: a grid holds at most 4096 images; give --out-dir DIR for one file each")
    if out_dir is not None and Path(out_dir).is_dir() and any(Path(out_dir).glob("sample_*.png")):
        raise GanlabError(f"{out_dir} already holds sample_*.png files; give an empty or new --out-dir")
    gan = _load_for_cli(checkpoint, generator, discriminator, device)
    if settle_batchnorm:
        gan.settle_batchnorm(seed=seed)
    elif why := gan.unsettled_batchnorm(seed=seed):
        raise GanlabError(f"{why}; nothing was written: give --settle-batchnorm to recompute them from random "
                          "latent vectors")
    from ganlab.sample_files import write_samples

    written = write_samples(gan, count, seed, out, Path(out_dir) if out_dir else None, nrow)
    click.echo(f"wrote {count} samples to {written}")
