"""Analysis ``nearest-neighbours``: how close G's samples come to its training images, against held-out images.

``samples`` generated images (G's output rounded to uint8, the scale real images come in) and up to ``test_limit``
held-out real images are each matched to their exact nearest training images (L2, ``ganlab.nearest_neighbours``,
chunked, on the GPU when the report runs on one) among up to ``train_limit`` images of the split G was trained on,
in two spaces:

- ``pixels``: L2 over all C x H x W values in G's [-1, 1] units (so 2 is black to white at one value);
- ``features``: L2 between D's pooled features (``ganlab.discriminator_features``), skipped without a D.

The held-out images are the baseline: they come from the training distribution but were never trained on, so
their distances to the training set are what "as close as a new image of the same kind" looks like. A memorising
G puts samples much closer to the training set than that.

Metrics (``SPACE`` is ``pixels`` or ``features``):

- ``copy_fraction_SPACE``: the fraction of samples closer to the training set than the ``percentile``-th percentile
  (default the 1st) of held-out distances, ``copy_threshold_SPACE``. Samples that behave like held-out images give
  about ``copy_fraction_expected`` = percentile / 100 (0.01); copies of training images give up to 1.
- ``median_distance_generated_SPACE`` and ``median_distance_test_SPACE``: median nearest-training distances.
- ``sample_nn_rmse``: mean over samples of the pixel distance to the nearest training image / sqrt(C H W), i.e. the
  RMS per-value difference in [-1, 1] units; ``train_images_searched``, ``test_images``, ``samples``: the sizes.

Without a held-out split only the distances are reported (no threshold, no copy fraction); the text says so.
The images show the ``show`` samples closest to the training set, each followed by its ``neighbours`` nearest
training images, per space.
"""
from __future__ import annotations

from ganlab import Analysis, Figure, Image, Option, Result, Table, hookimpl

SPACES = {"pixels": "pixel space (L2 in [-1, 1] units)", "features": "D's feature space (L2 of pooled features)"}


def generated_uint8(ctx, n: int):
    """n samples of G at ``ctx.seed``, rounded to uint8 as real images come (N x C x H x W, CPU)."""
    from ganlab import to_uint8

    return to_uint8(ctx.gan.sample(n, seed=ctx.seed))


def d_features(ctx, images, split: str | None = None, limit: int | None = None):
    """D's pooled features of uint8 images as float32 N x F; a named dataset split's are cached between reports."""
    from ganlab import cached_features, discriminator_features, feature_cache_key

    D = ctx.gan.discriminator
    if split is None:
        return discriminator_features(D, images, device=ctx.device)
    key = feature_cache_key(ctx.gan.path, "D", ctx.dataset, split, limit)
    return cached_features(ctx.cache, key, D, images, device=ctx.device, progress=ctx.progress)


def search(queries, references, k: int, device):
    """Exact k nearest references (L2) of each query: (distances N x k, indices N x k) on the CPU.

    Tensors are moved to a CUDA ``device`` whole (uint8 pixels are small); arrays (maybe memory-mapped) are sent
    chunk by chunk by ``ganlab.nearest_neighbours``.
    """
    import torch

    from ganlab import nearest_neighbours

    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and isinstance(references, torch.Tensor):
        references = references.to(device)
    return nearest_neighbours(queries, references, k, device=device, query_chunk=8192 if cuda else 2048)


def copy_fraction(generated_d, test_d, percentile: float) -> tuple[float, float]:
    """(threshold = the percentile of held-out distances (numpy's linear rule), fraction of samples strictly below)."""
    import numpy as np

    threshold = float(np.percentile(np.asarray(test_d, dtype=np.float64), percentile))
    return threshold, float((np.asarray(generated_d, dtype=np.float64) < threshold).mean())


def _histograms(found, percentile):
    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(5 * len(found), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(found)))
    for ax, (space, entry) in zip(axes, found.items()):
        gen, test = entry["generated"][:, 0].numpy(), entry["test"]
        values = gen if test is None else np.concatenate([gen, test])
        bins = np.histogram_bin_edges(values, bins=40)
        ax.hist(gen, bins=bins, density=True, alpha=0.6, label="generated -> train")
        if test is not None:
            ax.hist(test, bins=bins, density=True, alpha=0.6, label="held-out -> train")
            ax.axvline(entry["threshold"], color="k", linestyle="--", linewidth=1,
                       label=f"{percentile:g}% quantile of held-out")
        ax.set_xlabel(f"distance to the nearest training image, {space}")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    return fig


class NearestNeighbours(Analysis):
    name = "nearest-neighbours"
    description = ("Exact nearest training images of G's samples in pixels and D's features, against held-out "
                   "images: the fraction of samples closer than nearly every held-out image (a memorisation check)")
    needs = ("train_set",)
    directions = {"copy_fraction_expected": None, "copy_fraction_*": "lower", "*": None}
    options = {"samples": Option(1000, "generated samples to match", min=1),
               "train_limit": Option(50000, "training images searched (the first N of the training split)", min=1),
               "test_limit": Option(10000, "held-out images for the baseline", min=1),
               "percentile": Option(1.0, "held-out distance percentile below which a sample counts as a copy",
                                    min=0.01, max=50),
               "show": Option(16, "samples shown (those closest to the training set)", min=1),
               "neighbours": Option(3, "training neighbours shown beside each sample", min=1)}

    def run(self, ctx):
        import numpy as np
        import torch
        from torchvision.utils import make_grid

        from ganlab import to_unit_range

        o = ctx.options
        train, _ = ctx.split(ctx.train_split, limit=o["train_limit"])
        n = o["samples"]
        k = min(o["neighbours"], len(train))
        generated = generated_uint8(ctx, n)
        test = ctx.split(ctx.heldout_split, limit=o["test_limit"])[0] if ctx.heldout_split else None
        notes = []
        found = {}
        # pixels: uint8 in, distances in 0..255 units out; / 127.5 turns them into G's [-1, 1] units
        queries = generated if test is None else torch.cat([generated, test])
        dist, idx = search(queries, train, k, ctx.device)
        found["pixels"] = {"generated": dist[:n] / 127.5, "indices": idx[:n],
                           "test": None if test is None else (dist[n:, 0] / 127.5).numpy()}
        if ctx.gan.discriminator is None:
            notes.append("This checkpoint has no discriminator, so the search in D's feature space was skipped.")
        else:
            train_f = d_features(ctx, train, ctx.train_split, o["train_limit"])
            queries = d_features(ctx, generated)
            if test is not None:
                queries = np.concatenate([queries, d_features(ctx, test, ctx.heldout_split, o["test_limit"])])
            dist, idx = search(queries, train_f, k, ctx.device)
            found["features"] = {"generated": dist[:n], "indices": idx[:n],
                                 "test": None if test is None else dist[n:, 0].numpy()}

        percentile = o["percentile"]
        metrics = {"samples": n, "train_images_searched": len(train),
                   "sample_nn_rmse": (found["pixels"]["generated"][:, 0] / generated[0].numel() ** 0.5).mean().item()}
        summary = []
        for space, entry in found.items():
            gen = entry["generated"][:, 0].numpy()
            metrics[f"median_distance_generated_{space}"] = float(np.median(gen))
            row = [space, round(float(np.median(gen)), 4)]
            if test is not None:
                entry["threshold"], fraction = copy_fraction(gen, entry["test"], percentile)
                metrics[f"median_distance_test_{space}"] = float(np.median(entry["test"]))
                metrics[f"copy_threshold_{space}"] = entry["threshold"]
                metrics[f"copy_fraction_{space}"] = fraction
                row += [round(float(np.median(entry["test"])), 4), round(entry["threshold"], 4), round(fraction, 4),
                        percentile / 100]
            summary.append(row)
        columns = ["space", "median distance, generated -> train"]
        if test is not None:
            metrics["copy_fraction_expected"] = percentile / 100
            metrics["test_images"] = len(test)
            columns += ["median distance, held-out -> train", f"copy threshold ({percentile:g}% quantile of held-out)",
                        "copy fraction", "expected for held-out-like samples"]
        else:
            notes.append("The dataset has no held-out split, so there is no baseline: the distances are reported "
                         "without a copy threshold or copy fraction.")

        images, tables = [], [Table("Nearest-training-image distances", columns, summary)]
        show = min(o["show"], n)
        for space, entry in found.items():
            gen_d, gen_i = entry["generated"], entry["indices"]
            order = torch.argsort(gen_d[:, 0], stable=True)[:show]
            rows = torch.cat([torch.cat([to_unit_range(generated[j:j + 1]), to_unit_range(train[gen_i[j]])])
                              for j in order.tolist()])
            images.append(Image(f"The {show} samples closest to the training set in {SPACES[space]}: each row is "
                                f"the sample, then its {k} nearest training images ('{ctx.train_split}' split)",
                                make_grid(rows, nrow=k + 1, normalize=True, value_range=(-1, 1))))
            tables.append(Table(f"The {show} closest samples, {SPACES[space]}",
                                ["rank", "sample", *[f"distance to neighbour {r + 1}" for r in range(k)],
                                 "training image indices"],
                                [[rank + 1, j, *[round(float(v), 4) for v in gen_d[j]], ", ".join(map(str,
                                  gen_i[j].tolist()))] for rank, j in enumerate(order.tolist())]))
        text = [f"{n} samples of G (rounded to uint8, as real images are) and "
                f"{'no held-out images' if test is None else f'{len(test)} held-out images'} were matched to their "
                f"exact nearest neighbours among {len(train)} training images. A sample counts as a possible copy "
                f"when it is closer to the training set than the {percentile:g}% quantile of the held-out "
                f"images' distances; a G that generalises gives a copy fraction near {percentile / 100:g}, a "
                "memorising G one far above it. Look at the image grids: near-identical rows are copies.", *notes]
        return Result(metrics=metrics, tables=tables, images=images, text=text,
                      figures=[Figure("Distance to the nearest training image: generated samples against held-out "
                                      "images", _histograms(found, percentile))])


@hookimpl
def ganlab_register_analyses(register):
    register(NearestNeighbours())
