"""Analysis ``nearest-neighbours``: how close G's samples come to its training images, against held-out images,
which come from the training distribution but were never trained on: "as close as a new image" looks like them.

Metrics, per space (``pixels`` in G's [-1, 1] units, D's ``features``): ``copy_fraction_SPACE``, the fraction of
samples closer to the training set than ``copy_threshold_SPACE``, the ``percentile``-th percentile of held-out
distances (about ``copy_fraction_expected`` for samples like held-out images, up to 1 for copies), and the
median distances; ``sample_nn_rmse`` is the mean pixel distance / sqrt(C H W), an RMS per value;
``exact_copies`` counts samples at pixel distance 0 from a training image.
"""
from ganlab import Analysis, Figure, Image, Option, Result, Table, hookimpl

SPACES = {"pixels": "pixel space (L2 in [-1, 1] units)", "features": "D's feature space (L2 of pooled features)"}


def copy_limit(metrics: dict) -> float:
    """The copy fraction above which chance is ruled out: the expected one plus 3 standard errors of the
    difference between two binomial fractions (the samples', and the held-out images' that set the threshold)."""
    e, n, m = metrics["copy_fraction_expected"], metrics["samples"], metrics["test_images"]
    return e + 3 * (e * (1 - e) * (1 / n + 1 / m)) ** 0.5


def verdict(metrics: dict) -> tuple[str, list[str]]:
    """(the verdict line, problems): copy fractions against the expected one, and exact copies."""
    n, exact = metrics["samples"], metrics["exact_copies"]
    problems = [f"{exact} of {n} samples are exact copies of training images (pixel distance 0): G memorises"] \
        if exact else []
    if "copy_fraction_expected" not in metrics:
        return (f"median distance to the nearest training image {metrics['median_distance_generated_pixels']:.3g} in "
                f"pixels, {exact} exact copies; no held-out split, so no copy fraction: look at the image grids",
                problems)
    expected, limit = metrics["copy_fraction_expected"], copy_limit(metrics)
    fractions = {space: metrics[f"copy_fraction_{space}"] for space in SPACES if f"copy_fraction_{space}" in metrics}
    shown = " and ".join(f"{value:.3g} in {space}" for space, value in fractions.items())
    if any(value > limit for value in fractions.values()):
        problems.append(f"copy fraction {shown}, far above the {expected:g} of new images (chance reaches "
                        f"{limit:.3g}): samples sit closer to training images than new images do, G memorises")
        return f"copy fraction {shown} against {expected:g} expected: G copies training images", problems
    return (f"copy fraction {shown} against {expected:g} expected: samples are no closer to the training images "
            "than new images are", problems)


class NearestNeighbours(Analysis):
    name = "nearest-neighbours"
    description = ("Exact nearest training images of G's samples in pixels and D's features, against held-out "
                   "images: the fraction of samples closer than nearly every held-out image (a memorisation check)")
    needs = ("train_set",)
    directions = {"copy_fraction_expected": None, "copy_fraction_*": "lower", "exact_copies": "lower", "*": None}
    options = {"samples": Option(1000, "generated samples to match", min=1),
               "train_limit": Option(50000, "training images searched (the first N of the training split)", min=1),
               "test_limit": Option(10000, "held-out images for the baseline", min=1),
               "percentile": Option(1.0, "held-out distance percentile below which a sample counts as a copy",
                                    min=0.01, max=50),
               "show": Option(16, "samples shown (those closest to the training set)", min=1),
               "neighbours": Option(3, "training neighbours shown beside each sample", min=1)}

    def run(self, ctx):
        from ganlab import to_uint8

        from . import distances

        o = ctx.options
        train, _ = ctx.split(ctx.train_split, limit=o["train_limit"])
        n, k, show, percentile = o["samples"], min(o["neighbours"], len(train)), min(o["show"], o["samples"]), \
            o["percentile"]
        generated = to_uint8(ctx.gan.sample(n, seed=ctx.seed))  # rounded as real images come
        test = ctx.split(ctx.heldout_split, limit=o["test_limit"])[0] if ctx.heldout_split else None
        found, notes = distances.nearest_distances(ctx, train, generated, test, k)
        nearest = found["pixels"]["generated"][:, 0]
        metrics = {"samples": n, "train_images_searched": len(train), "exact_copies": int((nearest == 0).sum()),
                   "sample_nn_rmse": (nearest / generated[0].numel() ** 0.5).mean().item()}
        columns = ["space", "median distance, generated -> train"]
        if test is not None:
            metrics.update(copy_fraction_expected=percentile / 100, test_images=len(test))
            columns += ["median distance, held-out -> train", f"copy threshold ({percentile:g}% quantile of held-out)",
                        "copy fraction", "expected for held-out-like samples"]
        else:
            notes.append("The dataset has no held-out split, so there is no baseline: the distances are reported "
                         "without a copy threshold or copy fraction.")
        tables = [Table("Nearest-training-image distances", columns, distances.summarise(found, metrics, percentile))]
        images = []
        for space, grid, rows in distances.closest(found, generated, train, show):
            images.append(Image(f"The {show} samples closest to the training set in {SPACES[space]}: each row is "
                                f"the sample, then its {k} nearest training images ('{ctx.train_split}' split)", grid))
            tables.append(Table(f"The {show} closest samples, {SPACES[space]}", ["rank", "sample", *[
                f"distance to neighbour {r + 1}" for r in range(k)], "training image indices"], rows))
        text = [f"{n} samples of G (rounded to uint8, as real images are) and "
                f"{'no held-out images' if test is None else f'{len(test)} held-out images'} were matched to their "
                f"exact nearest neighbours among {len(train)} training images. A sample counts as a possible copy "
                f"when it is closer to the training set than the {percentile:g}% quantile of the held-out "
                f"images' distances; a G that generalises gives a copy fraction near {percentile / 100:g}, a "
                "memorising G one far above it. Look at the image grids: near-identical rows are copies.", *notes]
        line, problems = verdict(metrics)
        return Result(metrics=metrics, tables=tables, images=images, text=text, verdict=line, problems=problems,
                      figures=[Figure("Distance to the nearest training image: generated samples against held-out "
                                      "images", distances.histograms(found, percentile))])


@hookimpl
def ganlab_register_analyses(register):
    register(NearestNeighbours())
