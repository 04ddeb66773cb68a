"""Command ``ganlab dedup`` and evaluator ``hash-collisions``: the paper's autoencoder-hash dedup (section 4.1.1).

``ganlab dedup`` writes ``duplicates.json`` (``groups`` of positions in the whole split, in ``ganlab.open_split``
order, and their hashes), ``exclude.txt`` (every image of a group but its first, for ``ganlab train --exclude``),
``groups.png`` and ``autoencoder.pt``. The hash is coarse where images carry little detail (on the digits it put
748 of 898 training images into 99 groups of different digits), so a hash group is kept only where its images are
linked by a pixel RMS difference of at most ``--max-rms``: 0.04 on a 0-1 scale, about 10 grey levels, where +-2
grey levels of noise are 0.006 and a JPEG re-encoding at quality 90 at most 0.019. ``--max-rms 1`` is the paper's
rule. ``hash-collisions`` reads G's samples against the training set's own rates the same way.
"""
from pathlib import Path

import click

from ganlab import Evaluator, GanlabError, Image, Option, Result, Table, hookimpl

from . import MAX_RMS, MIN_STEPS


@click.command("dedup")
@click.option("--dataset", required=True, help="dataset name (see `ganlab plugins`)")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="folder holding the dataset files")
@click.option("--split", default="train", show_default=True, help="split to deduplicate")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the results")
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True,
              help=f"autoencoder training epochs (at least {MIN_STEPS} steps)")
@click.option("--limit", type=click.IntRange(1), default=None, help="hash the N images `ganlab train --limit N` uses")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="training seed")
@click.option("--max-rms", type=click.FloatRange(0), default=MAX_RMS, show_default=True,
              help="a hash group's images must differ by at most this pixel RMS (0-1 scale); 1: the hash alone")
@click.option("--skip-bad-images", is_flag=True, help="skip unreadable image files (listed) instead of stopping")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps")
def dedup_command(dataset, data_root, split, out, epochs, limit, seed, max_rms, skip_bad_images, device) -> None:
    """Find near-duplicate training images with the paper's autoencoder hash (section 4.1.1)."""
    from ganlab import StagedFolder, select_device

    from .duplicates import deduplicate

    if max_rms != max_rms:  # NaN passes click's range check, and every comparison would drop every group
        raise GanlabError("--max-rms nan: give a number from 0 to 1")
    legacy = ("duplicates.json", "exclude.txt", "autoencoder.pt", "groups.png")
    with StagedFolder(out, "dedup", sources=[Path(data_root)] if data_root else [], legacy=legacy) as folder:
        report = deduplicate(folder, dataset, split, data_root, limit, skip_bad_images, epochs, seed, max_rms,
                             select_device(device))
        out = folder.commit()
    written = ["duplicates.json", "exclude.txt", "autoencoder.pt"] + (["groups.png"] if report["groups"] else [])
    click.echo(f"{report['count']} images hashed, {len(report['groups'])} duplicate groups, {report['excluded']} "
               "images excluded")
    if report["hash_groups"] != len(report["groups"]):
        click.echo(f"({report['hash_groups']} groups shared a hash; images differing by more than {max_rms:g} RMS "
                   "were split off: --max-rms 1 keeps the hash's groups)")
    click.echo(f"wrote {', '.join(str(out / name) for name in written)}")


def verdict(metrics: dict, max_rms: float) -> tuple[str, list[str]]:
    """(the verdict line, problems): colliding samples against the training set's own rate, and the copies."""
    n, m = metrics["samples"], metrics["train_images"]
    collides, copies = round(metrics["collision_rate"] * n), round(metrics["copy_rate"] * n)
    line = (f"{collides} of {n} samples share a training image's hash (rate {metrics['collision_rate']:.3g}; "
            f"training images with each other: {metrics['train_collision_rate']:.3g}), {copies} within "
            f"{max_rms:g} pixel RMS of it: " + ("copies of training images" if copies else "no copies"))
    # with max_rms >= 1 the hash alone decides, so only a rate above the training set's own points to copying
    copying = copies and (max_rms < 1 or metrics["copy_rate"] > metrics["train_copy_rate"])
    problems = [f"{copies} of {n} samples are copies of training images (same autoencoder hash, within {max_rms:g} "
                f"pixel RMS; {round(metrics['train_copy_rate'] * m)} of {m} training images are duplicates of "
                "each other)"] if copying else []
    return line, problems


class HashCollisions(Evaluator):
    name = "hash-collisions"
    description = "Samples whose autoencoder hash (the paper's dedup, 4.1.1) equals a training image's hash"
    needs = ("train_set",)
    # the training set's own rates are the reference, not a score
    directions = {"collision_rate": "lower", "copy_rate": "lower", "sample_self_collision_rate": "lower", "*": None}
    options = {"autoencoder": Option("", "autoencoder.pt from `ganlab dedup`; empty: train one here (cached)"),
               "samples": Option(1000, "generated samples hashed", min=1),
               "train_limit": Option(10000, "training images hashed (and trained on); 0: all", min=0),
               "epochs": Option(5, "epochs when the autoencoder is trained here", min=1),
               "examples": Option(8, "colliding pairs shown", min=0),
               "max_rms": Option(MAX_RMS, "a collision is a copy when the pair is within this pixel RMS (0-1 scale)",
                                 min=0.0)}

    def run(self, ctx):
        from ganlab import load_split, to_uint8

        from . import autoencoder as ae
        from .duplicates import colliding_pairs, collision_table, hash_collisions

        o = ctx.options
        limit = o["train_limit"] or None
        train, _ = load_split(ctx.dataset, ctx.train_split, data_root=ctx.data_root, image_size=ae.SIZE, channels=3,
                              limit=limit, progress=not ctx.quiet, skip_bad=ctx.skip_bad_images)
        model, where = self._autoencoder(ctx, train, limit)
        generated = ae.hash_input(to_uint8(ctx.gan.sample(o["samples"], seed=ctx.seed)))
        found = hash_collisions(model, generated, train, device=ctx.device, max_rms=o["max_rms"])
        names = ("collision_rate", "train_collision_rate", "copy_rate", "train_copy_rate",
                 "sample_self_collision_rate", "bits_used")
        table = Table(f"128-bit autoencoder hashes ({ctx.train_split} split; {where})", ["what", "count", "of", "rate"],
                      collision_table(found, len(generated), len(train), o["max_rms"]))
        grid = colliding_pairs(found, generated, train, o["examples"])
        images = [] if grid is None else [Image("colliding pairs: each generated sample, then the training image "
                                                "with its hash (32x32 RGB, as hashed)", grid)]
        metrics = {**{key: found[key] for key in names}, "samples": len(generated), "train_images": len(train)}
        line, problems = verdict(metrics, o["max_rms"])
        return Result(metrics=metrics, tables=[table], images=images, verdict=line, problems=problems,
                      text=[f"Each image's hash is the sign pattern of the paper's dedup autoencoder's 128 code "
                            f"units at 32x32 RGB ({found['bits_used']} of the 128 bits vary over these training "
                            "images). A sample that shares a training image's hash is a (near) copy of it, or a "
                            "false collision: the training set's own rate is the reference for the latter. "
                            "A collision whose images are also close in pixels (within max_rms) is counted as a "
                            "copy, as `ganlab dedup` confirms its groups."])

    def _autoencoder(self, ctx, train, limit):
        """(the autoencoder the options name, or one trained here and kept in ctx.cache; where it came from)."""
        from . import autoencoder as ae

        if ctx.options["autoencoder"]:
            path = Path(ctx.options["autoencoder"]).expanduser()
            return ae.load_autoencoder(path), f"autoencoder {path}"
        root = str(Path(ctx.data_root).resolve()) if ctx.data_root else None
        trained = []

        def make(path):
            model, _ = ae.train_autoencoder(train, epochs=ctx.options["epochs"], seed=ctx.seed, device=ctx.device,
                                            progress=None if ctx.quiet else ctx.progress)
            ae.save_autoencoder(model, path)
            trained.append(True)

        ident = [ctx.dataset, root, ctx.train_split, limit, ctx.options["epochs"], ctx.seed, ae.MARGIN]
        model = ctx.cache.file("hash-collisions", ident, "pt", make, ae.load_autoencoder)
        return model, (f"autoencoder trained here on {len(train)} images for {ctx.options['epochs']} epochs" if trained
                       else f"cached autoencoder trained on {len(train)} images")


@hookimpl
def ganlab_register_commands(cli):
    cli.add_command(dedup_command)


@hookimpl
def ganlab_register_evaluators(register):
    register(HashCollisions())
