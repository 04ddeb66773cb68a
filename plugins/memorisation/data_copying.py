"""Evaluator ``data-copying``: the C_T test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020). A model copies when its
samples lie closer to the training set T than new images of the same distribution do, region by region.

k-means (``random_state`` = the report's seed) splits the training points into ``cells``; in each cell, every
held-out and generated point gets its exact distance to the cell's nearest training point (in pixels or D's
features: ``space``). Z_c is the normal approximation of scipy's Mann-Whitney U (generated vs held-out; no
continuity or tie correction): below 0, samples closer to T than held-out images. C_T is the mean Z_c over cells
holding a held-out point and at least ``min_cell_fraction`` of the samples (the paper's tau), weighted by each
cell's share of the held-out points; ``C_T_null_sd`` is its spread if every Z_c were N(0, 1).
"""
import math

from ganlab import Evaluator, GanlabError, Option, Result, Table, hookimpl


def verdict(value: float, null_sd: float) -> tuple[str, list[str]]:
    """(how to read C_T, problems): well below 0 (beyond 2 null standard deviations) is copying, well above
    under-fitting."""
    if math.isnan(value):
        return "No cell holds enough generated samples, so C_T is undefined; lower min_cell_fraction.", []
    if value < -2 * null_sd:
        return (f"C_T = {value:.2f} is well below 0: the samples are closer to the training images than held-out "
                "images are, i.e. G copies (parts of) its training set.",
                [f"C_T = {value:.2f}, beyond 2 null standard deviations ({null_sd:.2f}) below 0: G copies (parts "
                 "of) its training set"])
    if value > 2 * null_sd:
        return (f"C_T = {value:.2f} is well above 0: the samples are farther from the training images than "
                "held-out images are (under-fitting), and no sign of copying.", [])
    return (f"C_T = {value:.2f} is within 2 null standard deviations ({null_sd:.2f}) of 0: the samples are as far "
            "from the training images as held-out images are.", [])


class DataCopying(Evaluator):
    name = "data-copying"
    description = ("The C_T data-copying test (Meehan et al. 2020): are samples closer to the training set than "
                   "held-out images are, cell by cell? Below 0: copying; above 0: under-fitting")
    needs = ("heldout", "train_set")
    directions = {"*": None}  # C_T's best is 0: below is copying, above under-fitting
    options = {"samples": Option(1000, "generated samples", min=2),
               "train_limit": Option(50000, "training images (the first N of the training split)", min=2),
               "test_limit": Option(10000, "held-out images", min=2),
               "cells": Option(10, "k-means cells fitted on the training images", min=1),
               "min_cell_fraction": Option(0.02, "tau: a cell counts when it holds at least this fraction of the "
                                                 "generated samples", min=0, max=1),
               "space": Option("pixels", "where distances are measured: pixels, or discriminator (D's pooled "
                                         "features)", choices=("pixels", "discriminator"))}

    def run(self, ctx):
        from ganlab import to_uint8

        from .distances import c_t, copying_points

        o = ctx.options
        train, _ = ctx.split(ctx.train_split, limit=o["train_limit"])
        test, _ = ctx.split(ctx.heldout_split, limit=o["test_limit"])
        generated = to_uint8(ctx.gan.sample(o["samples"], seed=ctx.seed))  # rounded as real images come
        if o["cells"] > len(train):
            raise GanlabError(f"data-copying.cells={o['cells']} is more than the {len(train)} training images; "
                              "give fewer, e.g. --set data-copying.cells=10")
        if o["space"] == "discriminator" and ctx.gan.discriminator is None:
            raise GanlabError("data-copying.space=discriminator needs a checkpoint with a discriminator; "
                              "use --set data-copying.space=pixels")
        value, rows = c_t(*copying_points(ctx, train, test, generated), cells=o["cells"], seed=ctx.seed,
                          min_cell_fraction=o["min_cell_fraction"], device=ctx.device)
        used = [r for r in rows if r["used"]]
        mass = sum(r["test_fraction"] for r in used)
        null_sd = math.sqrt(sum(r["test_fraction"] ** 2 for r in used)) / mass if used else float("nan")
        metrics = {"C_T": value, "C_T_null_sd": null_sd, "cells_used": len(used), "test_mass_used": mass,
                   "worst_cell_Z": min((r["Z"] for r in used), default=float("nan"))}
        where = "pixels ([-1, 1] units)" if o["space"] == "pixels" else "D's pooled features"
        table = Table(f"Cells (k-means on {len(train)} training images, {where}); Z < 0: samples closer to the "
                      "training images than held-out images are",
                      ["cell", "train", "held-out", "generated", "held-out mass", "generated fraction", "Z", "used"],
                      [[r["cell"], r["train"], r["test"], r["generated"], round(r["test_fraction"], 4),
                        round(r["generated_fraction"], 4), round(r["Z"], 3) if not math.isnan(r["Z"]) else "n/a",
                        "yes" if r["used"] else "no"] for r in rows])
        line, problems = verdict(value, null_sd)
        text = [f"C_T (Meehan, Chaudhuri & Dasgupta 2020) compares, in each of {o['cells']} k-means cells of the "
                f"training set, the distances to the nearest training image (in the same cell) of "
                f"{len(generated)} samples and of {len(test)} held-out images, with a Mann-Whitney test turned "
                "into a Z-score (negative: samples closer). C_T is the mean Z over the cells that hold at least "
                f"{o['min_cell_fraction']:g} of the samples, weighted by the held-out images' share of each cell. "
                "Well below 0 means copying, well above 0 under-fitting, near 0 (within about 2 x C_T_null_sd) "
                "like held-out data. A very negative worst_cell_Z with C_T near 0 means copying in one region."]
        return Result(metrics=metrics, tables=[table], text=text, verdict=line, problems=problems)


@hookimpl
def ganlab_register_evaluators(register):
    register(DataCopying())
