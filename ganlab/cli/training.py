"""``ganlab train`` and ``ganlab sample`` (a grid or one PNG per sample), and the training flags ``ganlab run``
shares."""
from dataclasses import fields
from pathlib import Path

import click

from ganlab.defaults import IMAGE_SIZES, KERNEL_SIZES, LATENTS, MAX_SEED, PRESETS, ModelConfig, TrainOptions
from ganlab.errors import GanlabError

# TrainOptions field -> (click type, help); the defaults shown come from TrainOptions, else ModelConfig
TRAIN_FLAGS = {
    "dataset": (None, "dataset name; see `ganlab plugins`"),
    "data_root": (click.Path(file_okay=False), "folder holding the dataset files"),
    "split": (None, "split to train on"),
    "download": (bool, "allow torchvision to download the dataset"),
    "limit": (click.IntRange(2), "train on N images only (a fixed random subset)"),
    "preset": (click.Choice(PRESETS), "model preset; the flags below override it"),
    "image_size": (click.Choice(IMAGE_SIZES), "image side"),
    "channels": (click.Choice((1, 3)), "1 or 3 (default: the dataset's; a folder's: 1 when its images are grey)"),
    "nz": (click.IntRange(1), "latent size"),
    "ngf": (click.IntRange(1), "G width"),
    "ndf": (click.IntRange(1), "D width"),
    "kernel_size": (click.Choice(KERNEL_SIZES), "conv kernel"),
    "latent": (click.Choice(LATENTS), "z distribution"),
    "epochs": (click.IntRange(1), "epochs"),
    "batch_size": (click.IntRange(1), "batch size"),
    "lr": (click.FloatRange(min=0, min_open=True), "Adam learning rate"),
    "beta1": (click.FloatRange(0, 1, max_open=True), "Adam beta1"),
    "seed": (click.IntRange(0, MAX_SEED), "random seed"),
    "device": (None, "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"),
    "amp": (bool, "mixed precision (bf16, or fp16 with loss scaling)"),
    "out": (click.Path(file_okay=False), "run folder (default runs/DATASET; with --resume, the checkpoint's folder)"),
    "overwrite": (bool, "replace a run already in the run folder"),
    "skip_bad_images": (bool, "skip unreadable image files (with a count) instead of stopping"),
    "exclude": (click.Path(dir_okay=False), "file of image positions to leave out, one per line (from ganlab dedup)"),
}
QUIET = click.option("--quiet", "-q", is_flag=True, help="no progress bars")
SETTLE = click.option("--settle-batchnorm", is_flag=True,
                      help="recompute G's BatchNorm statistics from 1,024 random latent vectors first (for a "
                           "checkpoint whose eval-mode samples are flat: its running statistics never settled)")


def train_options(func):
    """Training flags shared by ``train`` and ``run``, from ``TRAIN_FLAGS``; each defaults to None (not given),
    so that ``--resume`` can tell a setting given from one left alone, and shows the default that applies."""
    train, model = TrainOptions(), ModelConfig()
    for name, (kind, help) in reversed(TRAIN_FLAGS.items()):
        shown = getattr(train, name) if getattr(train, name) is not None else getattr(model, name, None)
        # channels default to the dataset's, not ModelConfig's
        hidden = kind is bool or shown in (None, "") or name == "channels"
        func = click.option("--" + name.replace("_", "-"), is_flag=kind is bool, type=None if kind is bool else kind,
                            default=None, help=help, show_default=False if hidden else str(shown))(func)
    return func


def _options_from_flags(base: TrainOptions, flags: dict) -> TrainOptions:
    """Apply the flags the user gave (not None, not an empty repeatable) on top of ``base``; name them in ``given``."""
    typed = {k: v for k, v in flags.items() if k in {f.name for f in fields(base)} and v not in (None, ())}
    return base.updated(**typed, given=tuple(typed))


@click.command()
@train_options
@click.option("--resume", type=click.Path(dir_okay=False), default=None, help="continue from this checkpoint")
@click.option("--allow-change", multiple=True, metavar="SETTING",
              help="with --resume: let this recorded setting (e.g. batch_size) change; repeatable; the run's log "
                   "records the change")
@QUIET
def train(quiet, **flags) -> None:
    """Train a DCGAN; writes checkpoints, sample grids and log.jsonl to the run folder."""
    from ganlab.api import train as run_training

    options = _options_from_flags(TrainOptions(), flags)
    last = run_training(options, progress=not quiet)
    click.echo(f"trained {options.epochs} epochs; last checkpoint: {last}")


@click.command()
@click.argument("checkpoint", required=False, type=click.Path())
@click.option("-n", "count", type=click.IntRange(1, 1_000_000), default=64, show_default=True,
              help="number of images (a grid holds at most 4096)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default="samples.png", show_default=True,
              help="the grid image to write")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write N separate PNGs (sample_000000.png, ...) here instead of a grid, for external tools")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--nrow", type=click.IntRange(1), default=8, show_default=True, help="images per grid row")
@click.option("--generator", type=click.Path(dir_okay=False),
              help="a pytorch/examples netG_*.pth instead of CHECKPOINT")
@click.option("--discriminator", type=click.Path(dir_okay=False), help="its netD_*.pth (optional)")
@click.option("--device", default="auto", show_default=True)
@SETTLE
def sample(checkpoint, count, out, out_dir, seed, nrow, generator, discriminator, device, settle_batchnorm) -> None:
    """Write N generated images: a grid (PNG, JPEG, ...) or, with --out-dir, one PNG per image."""
    from PIL import Image

    from ganlab.api import load
    from ganlab.model.devices import select_device
    from ganlab.model.pytorch_examples import load_pair

    if out_dir is not None and click.get_current_context().get_parameter_source("out").name == "COMMANDLINE":
        raise GanlabError("give --out (one grid image) or --out-dir (one PNG per sample), not both")
    if out_dir is None and out.suffix.lower() not in Image.registered_extensions():
        raise GanlabError(f"--out {out}: unknown image extension {out.suffix or '(none)'!r}; use .png or .jpg")
    if out_dir is None and count > 4096:
        raise GanlabError(f"-n {count}: a grid holds at most 4096 images; give --out-dir DIR for one file each")
    if out_dir is not None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        held = "sample_*.png files" if any(out_dir.glob("sample_*.png")) else "files" if out_dir.is_dir() else "a file"
        raise GanlabError(f"{out_dir} already holds {held}; give an empty or new --out-dir")
    if checkpoint and generator:
        raise GanlabError("give a checkpoint or --generator, not both")
    if not checkpoint and not generator:
        raise GanlabError("give a checkpoint (ganlab sample CKPT) or --generator netG.pth")
    chosen = select_device(device)
    gan = load_pair(generator, discriminator).to(chosen) if generator else load(checkpoint, chosen)
    if settle_batchnorm:
        gan.settle_batchnorm(seed=seed)
    elif why := gan.unsettled_batchnorm(seed=seed):
        raise GanlabError(f"{why}; nothing was written: give --settle-batchnorm to recompute them from random "
                          "latent vectors")
    written = write_samples(gan, count, seed, out, out_dir, nrow)
    click.echo(f"wrote {count} samples to {written}")


def write_samples(gan, count, seed, out, out_dir, nrow):
    """The grid at ``out``, or one PNG per sample in ``out_dir`` (generated in chunks, never all in memory)."""
    import torch
    from PIL import Image
    from torchvision.utils import save_image

    from ganlab.data.pixel_ranges import to_uint8
    from ganlab.store.atomic import atomic_path, os_error

    target = out_dir or out
    try:
        (out_dir or out.parent).mkdir(parents=True, exist_ok=True)
        chunk = count if out_dir is None else 1024
        for start in range(0, count, chunk):
            # seed + start: chunk k holds the same images whatever the chunk size of an earlier call
            images = gan.sample(min(chunk, count - start), seed=seed + start)
            if bad := int((~torch.isfinite(images)).sum()):
                raise GanlabError(f"the generator is broken: {bad} of {images.numel()} output values are NaN or "
                                  f"infinite; {'nothing was written' if start == 0 else f'wrote {start} images'}")
            # each file is swapped in whole: a full disk or a kill leaves the previous file, never half of one
            if out_dir is None:
                # a link named as --out is written through: its target is the picture meant, the link stays
                with atomic_path(out.resolve() if out.is_symlink() else out, suffix=out.suffix) as tmp:
                    save_image(images, tmp, nrow=nrow, normalize=True, value_range=(-1, 1))
                continue
            pixels = to_uint8(images).permute(0, 2, 3, 1).numpy()
            for i, array in enumerate(pixels, start):
                with atomic_path(out_dir / f"sample_{i:06d}.png", suffix=".png") as tmp:
                    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(tmp)
    except OSError as exc:
        raise os_error("write", target, exc) from None
    return target
