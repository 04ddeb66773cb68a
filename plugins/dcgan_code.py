"""Command ``ganlab import dcgan-code DIR --out CKPT --dataset NAME``: the paper's released D as a ganlab checkpoint.

The architecture is read from the shapes of ``<epoch>_discrim_params.jl`` (``dcgan_code_format``). Theano's
``dnn_conv`` convolves, so kernels are flipped for PyTorch's cross-correlation; the dense layer ``wy`` (a dot
product on the C-order flattened 4 x 4 map) becomes D's 4x4 convolution. The authors saved no BatchNorm statistics
(and Theano's epsilon was 1e-8, PyTorch's 1e-5): they are recomputed on ``--dataset``, as the authors did before
extracting features. The authors' G is not converted (its first layer normalises each 4x4 position separately,
which ganlab's G cannot express). The checkpoint is written atomically and read back with ``ganlab.load`` first.
"""
import math
from pathlib import Path

import click

from ganlab import GanlabError, hookimpl

from .dcgan_code_format import find_discriminator_file, first_line, read_params

GENERATOR_NOTE = ("not converted (the authors' G normalises each 4x4 position of its first layer separately); "
                  "this G is ganlab's initialisation with seed 0")


def split_layout(params: list, source: str = "the parameter list"):
    """(conv weights, [(BatchNorm gain, bias) of each but the first], dense weight), the list's structure checked.

    Theano's shapes: convolutions out x in x k x k (without bias), the dense layer ``(width * 16) x 1``.
    """
    import numpy as np

    n = len(params)
    if n < 2 or (n - 2) % 3:
        raise GanlabError(f"{source} holds {n} arrays; a dcgan_code discriminator has 1 + 3 per BatchNorm "
                          "convolution + 1 (8 for the SVHN model, 17 for ImageNet-32)")
    for i, a in enumerate(params):
        if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
            raise GanlabError(f"{source}: array {i} is not finite numbers")
    previous = None
    for position in [0, *range(1, n - 1, 3)]:
        w = params[position]
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            raise GanlabError(f"{source}: array {position} should be a convolution's weights (out x in x k x k), "
                              f"not shape {w.shape}")
        if previous is not None and w.shape[1] != previous:
            raise GanlabError(f"{source}: array {position} takes {w.shape[1]} channels but the layer before "
                              f"gives {previous}")
        previous = w.shape[0]
        for offset, what in ((1, "gain"), (2, "bias")) if position else ():
            if params[position + offset].shape != (previous,):
                raise GanlabError(f"{source}: array {position + offset} should be a BatchNorm {what} of shape "
                                  f"({previous},), not {params[position + offset].shape}")
    dense = params[-1]
    if dense.size != previous * 16 or dense.ndim not in (1, 2) or (dense.ndim == 2 and dense.shape[1] != 1):
        raise GanlabError(f"{source}: the last array should be the dense layer on the {previous} x 4 x 4 map, "
                          f"shape ({previous * 16}, 1), not {dense.shape}")
    return [params[0], *params[1:n - 1:3]], [(params[i + 1], params[i + 2]) for i in range(1, n - 1, 3)], dense


def match_config(params: list, image_size: int | None = None, source: str = "the parameter list"):
    """The ganlab ModelConfig whose D has exactly these shapes (the imagenet32 preset when it is that one)."""
    import torch

    from ganlab import PRESETS, Discriminator, ModelConfig

    convs, _, _ = split_layout(params, source)
    first, k = convs[0], convs[0].shape[2]
    wanted = [w.shape for w in convs] + [(1, convs[-1].shape[0], 4, 4)]
    found = []
    for size in (16, 32, 64, 128) if image_size is None else (image_size,):
        for extra in range(4):
            strided = int(math.log2(size)) - 2
            if strided * (extra + 1) != len(convs) or k not in (3, 5):  # the authors' kernels are odd
                continue
            config = ModelConfig(image_size=size, channels=first.shape[1], ndf=first.shape[0],
                                 ngf=first.shape[0], kernel_size=k, extra_layers=extra)
            D = Discriminator(config)
            if [tuple(m.weight.shape) for m in D.modules() if isinstance(m, torch.nn.Conv2d)] == wanted:
                found.append(config)
    if not found:
        raise GanlabError(f"{source}: no ganlab discriminator has these layers (kernel {k}, widths "
                          f"{[w.shape[0] for w in convs]}{f', image size {image_size}' if image_size else ''})")
    if len(found) > 1:
        raise GanlabError(f"{source} fits image sizes {[c.image_size for c in found]}; give --image-size")
    preset = PRESETS["imagenet32"]
    same = ("image_size", "channels", "ndf", "kernel_size", "extra_layers")
    return preset if all(getattr(found[0], f) == getattr(preset, f) for f in same) else found[0]


def discriminator_from_params(params: list, image_size: int | None = None, source: str = "the parameter list"):
    """(config, ganlab D) with the authors' weights; BatchNorm running statistics reset: recompute them."""
    import numpy as np
    import torch

    from ganlab import Discriminator

    config = match_config(params, image_size, source)
    theano_convs, theano_norms, dense = split_layout(params, source)
    D = Discriminator(config)
    convs = [m for m in D.main if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in D.main if isinstance(m, torch.nn.BatchNorm2d)]

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        for conv, w in zip(convs[:-1], theano_convs, strict=True):
            # Theano's dnn_conv (conv_mode='conv') convolves; PyTorch cross-correlates: flip both kernel axes
            conv.weight.copy_(tensor(w[:, :, ::-1, ::-1]))
        for norm, (g, b) in zip(norms, theano_norms, strict=True):
            norm.weight.copy_(tensor(g))
            norm.bias.copy_(tensor(b))
            norm.reset_running_stats()
        # T.flatten(h, 2) on N x C x 4 x 4 is C-order: unit c * 16 + 4 * y + x; a dot product, so no flip
        convs[-1].weight.copy_(tensor(dense).reshape(1, theano_convs[-1].shape[0], 4, 4))
    return config, D.eval()


def write_checkpoint(out: Path, payload: dict, D, config) -> None:
    import torch

    from ganlab import atomic_file, load

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            check = load(handle.name)  # weights-only, through ganlab's own reader, before it takes out's name
            probe = torch.zeros(2, config.channels, config.image_size, config.image_size)
            with torch.no_grad():
                if not torch.allclose(check.discriminator(probe), D.eval()(probe), atol=1e-6):
                    raise GanlabError(f"the checkpoint written to {out} does not read back as converted")
    except (OSError, RuntimeError) as exc:  # torch's zip writer turns a full disk into a RuntimeError
        raise GanlabError(f"cannot write {out} ({first_line(exc, 160)})") from None


def convert(folder: Path, out: Path, *, dataset: str, data_root: Path | None, split: str, limit: int | None,
            epoch: int | None, image_size: int | None, batch_size: int, device: str, overwrite: bool) -> str:
    import torch

    import ganlab
    from ganlab import Generator, check_outside, load_split, recompute_batchnorm, select_device

    out = out.expanduser().resolve()
    check_outside(out, [folder] + ([data_root] if data_root else []))
    if out.exists() and not overwrite:
        raise GanlabError(f"{out} exists; give --overwrite to replace it, or another --out")
    if out.is_dir():
        raise GanlabError(f"{out} is a folder; --out is the checkpoint file to write")
    path, found_epoch = find_discriminator_file(folder, epoch)
    config, D = discriminator_from_params(read_params(path), image_size, source=str(path))
    images, _ = load_split(dataset, split, data_root=data_root, image_size=config.image_size, channels=config.channels,
                           limit=limit)
    D = recompute_batchnorm(D, images, batch_size=batch_size, device=select_device(device)).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(config)
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    statistics = f"{len(images)} images of {dataset}/{split}"
    write_checkpoint(out, {
        "format": "ganlab", "format_version": 1, "ganlab_version": ganlab.__version__,
        "torch_version": str(torch.__version__), "config": config.to_dict(),
        "generator": G.state_dict(), "discriminator": D.state_dict(),
        "dataset": {"name": dataset, "split": split, "root": root, "size": len(images)},
        "imported": {"from": "dcgan-code", "file": str(path.resolve()), "epoch": found_epoch,
                     "bn_stats": f"recomputed on {statistics}", "generator": GENERATOR_NOTE},
        **({"epoch": found_epoch} if found_epoch is not None else {})}, D, config)
    what = ("the imagenet32 preset" if config == ganlab.PRESETS["imagenet32"] else
            f"image size {config.image_size}, kernel {config.kernel_size}, ndf {config.ndf}, "
            f"{config.channels} channels")
    return f"wrote {out}: D of {path.name} ({what}), BatchNorm statistics from {statistics}; G not converted (use " \
           "the checkpoint for D)"


@click.group("import")
def import_group() -> None:
    """Convert model files written by other code into ganlab checkpoints."""


@import_group.command("dcgan-code")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="checkpoint file to write")
@click.option("--dataset", required=True, help="real images for the BatchNorm statistics (e.g. svhn, cifar10)")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="the dataset's folder")
@click.option("--split", default="train", show_default=True, help="split whose images give the statistics")
@click.option("--limit", type=click.IntRange(2), default=None, help="use this many images (default: all)")
@click.option("--epoch", type=int, default=None, help="which <epoch>_discrim_params file (default: the highest)")
@click.option("--image-size", type=int, default=None, help="only when the shapes fit several sizes")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, auto ...")
@click.option("--overwrite", is_flag=True, help="replace an existing --out")
def dcgan_code_command(folder: Path, out: Path, **options) -> None:
    """Convert the paper's released Theano D (FOLDER/<epoch>_discrim_params.jl, or .npz) into a ganlab checkpoint."""
    click.echo(convert(folder, out, **options))


@hookimpl
def ganlab_register_commands(cli):
    cli.add_command(import_group)
