"""An example ganlab plugin: an evaluator, an analysis, a labelled dataset, a checkpoint reader for a non-torch
format (.npz) and a command, each registered through its hook. It imports only names of ``ganlab`` itself."""
import json

import click

import ganlab


class SampleBrightness(ganlab.Evaluator):
    """Mean brightness of generated images, in [0, 1]: the smallest useful evaluator."""

    name = "example-brightness"
    description = "Mean pixel brightness of 256 generated images (0 = black, 1 = white)"
    options = {"samples": ganlab.Option(256, "how many images to generate", min=1)}
    cheap = True
    directions = {"brightness": None}  # neither brighter nor darker is better

    def run(self, ctx):
        images = ctx.gan.sample(ctx.options["samples"], seed=ctx.seed)  # N x C x H x W in [-1, 1]
        brightness = (images + 1) / 2
        return ganlab.Result(metrics={"brightness": brightness.mean().item()},
                             text=[f"measured on {len(images)} samples"])


class PixelHistogram(ganlab.Analysis):
    """Histogram of pixel values, generated against held-out real images."""

    name = "example-histogram"
    description = "Pixel value histogram of generated and held-out real images"
    needs = ("heldout",)
    options = {"images": 256, "bins": ganlab.Option(32, "histogram bins", min=2, max=256)}

    def run(self, ctx):
        from matplotlib.figure import Figure

        fake = (ctx.gan.sample(ctx.options["images"], seed=ctx.seed) + 1) / 2
        real, _ = ctx.split(ctx.heldout_split, limit=ctx.options["images"])
        fig = Figure(figsize=(5, 3))
        ax = fig.subplots()
        ax.hist(fake.flatten().numpy(), bins=ctx.options["bins"], range=(0, 1), alpha=0.6, label="generated")
        ax.hist(real.flatten().numpy() / 255, bins=ctx.options["bins"], range=(0, 1), alpha=0.6, label="real")
        ax.legend()
        return ganlab.Result(figures=[ganlab.Figure("pixel values", fig)])


def _stripes(split, root, download, variant):
    """200 (train) or 100 (test) 16x16 grey images: label 0 = horizontal stripes, 1 = vertical, with noise."""
    import numpy as np
    from torch.utils.data import Dataset

    n = {"train": 200, "test": 100}[split]
    rng = np.random.default_rng({"train": 0, "test": 1}[split])
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
    for image, label, phase in zip(images, labels, rng.integers(0, 4, n)):
        if label == 0:
            image[phase::4, :] = 220
        else:
            image[:, phase::4] = 220

    class Stripes(Dataset):
        classes = ["horizontal", "vertical"]

        def __len__(self):
            return n

        def __getitem__(self, i):
            return images[i], int(labels[i])

    return Stripes()


STRIPES = ganlab.DatasetSource(
    name="example-stripes", description="horizontal vs vertical stripes, 16x16 grey (made in memory)",
    splits=("train", "test"), num_classes=2, expected_files="nothing (generated)", open=_stripes, channels=1)


@ganlab.hookimpl
def ganlab_register_datasets(register):
    register(STRIPES)


def save_npz(gan, path):
    """Write a LoadedGAN as .npz: the config as JSON, then every G and D tensor (the format read below)."""
    import numpy as np

    arrays = {"config": np.frombuffer(json.dumps(gan.config.to_dict()).encode(), dtype=np.uint8)}
    for prefix, module in (("generator", gan.generator), ("discriminator", gan.discriminator)):
        arrays.update({f"{prefix}/{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    np.savez(path, **arrays)


@ganlab.hookimpl
def ganlab_load_checkpoint(path, state):
    """Reads .npz files written by ``save_npz``; ganlab never unpickles them (``allow_pickle=False``)."""
    import numpy as np
    import torch

    if state is not None or not str(path).endswith(".npz"):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            config = ganlab.ModelConfig.from_dict(json.loads(bytes(data["config"]).decode()))
            parts = {"generator": {}, "discriminator": {}}
            for key in data.files:
                prefix, _, name = key.partition("/")
                if prefix in parts:
                    parts[prefix][name] = torch.from_numpy(data[key])
    except (OSError, ValueError, KeyError) as exc:
        raise ganlab.GanlabError(f"{path} is not a readable example .npz checkpoint ({exc})") from None
    return ganlab.LoadedGAN.from_state_dicts(config, parts["generator"], parts["discriminator"] or None, path=path,
                                             meta={"format": "example-npz"})


@ganlab.hookimpl
def ganlab_register_evaluators(register):
    register(SampleBrightness())


@ganlab.hookimpl
def ganlab_register_analyses(register):
    register(PixelHistogram())


@click.command("example-hello")
@click.argument("name", default="world")
def hello(name):
    """Say hello (a command added by the example plugin)."""
    click.echo(f"hello {name} from ganlab-example-plugin")


@ganlab.hookimpl
def ganlab_register_commands(cli):
    cli.add_command(hello)
