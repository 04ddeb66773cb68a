"""Evaluator ``data-copying``: the C_T test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020).

"A Non-Parametric Test to Detect Data-Copying in Generative Models". A model copies data when its samples lie
closer to the training set T than new images from the same distribution do. The test compares, region by region,
the distances to T of generated samples Q (``samples`` of them, G's output rounded to uint8) and of held-out real
images P (``test_limit``), in pixels or in D's pooled features (``space``):

1. The training images are partitioned into ``cells`` cells by k-means (scikit-learn ``KMeans``, k-means++,
   ``random_state`` = the report's seed) fitted on the training points; every training, held-out and generated
   point goes to the cell of its nearest centre.
2. In cell c, each held-out and each generated point gets its distance to the nearest training point **of that
   cell** (as the authors' reference code does; exact L2, ``ganlab.nearest_neighbours``).
3. U_c is the Mann-Whitney U statistic of ``scipy.stats.mannwhitneyu(generated distances, held-out distances)``:
   generated is the first sample, so U_c counts the (generated, held-out) pairs in which the generated point is
   farther from T (ties count 1/2). With m_c generated and n_c held-out points in the cell,
   Z_c = (U_c - m_c n_c / 2) / sqrt(m_c n_c (m_c + n_c + 1) / 12) (the normal approximation under "same
   distribution"; no continuity or tie correction, where the reference code subtracts 0.5 from the mean).
   Z_c < 0: generated points are closer to T than held-out ones (copying); Z_c > 0: farther (under-fitting).
4. A cell is used when it holds at least ``min_cell_fraction`` (the paper's tau) of all generated samples,
   m_c / m >= tau (the reference code uses a strict >), and at least one held-out point. Then
   C_T = sum over used cells of P(c) Z_c / sum over used cells of P(c), where P(c) = n_c / n is the fraction of
   held-out points in cell c: the mean of the used cells' Z, weighted by the held-out mass, renormalised to the
   used cells. No used cell: C_T is NaN.

Metrics: ``C_T``; ``C_T_null_sd`` = sqrt(sum P(c)^2) / sum P(c) over used cells, the spread C_T would have if every
Z_c were an independent N(0, 1) (samples like held-out data); ``worst_cell_Z`` (the lowest used Z_c: local
copying); ``cells_used``; ``test_mass_used`` (the held-out fraction in used cells). Read C_T in units of Z:
well below 0 (say below -3): copying; well above 0: under-fitting (samples farther from T than real data);
within about 2 ``C_T_null_sd`` of 0: like held-out data. The table lists every cell.
"""
from __future__ import annotations

from ganlab import Evaluator, Option, Result, Table, hookimpl

from .neighbours import d_features, generated_uint8, search


def mann_whitney_z(generated_d, test_d) -> tuple[float, float]:
    """(U, Z) of generated vs held-out distances: U = scipy's statistic for the generated (first) sample."""
    import warnings

    import numpy as np
    from scipy.stats import mannwhitneyu

    m, n = len(generated_d), len(test_d)
    with warnings.catch_warnings():  # scipy's p-value (unused) divides by 0 when every distance is tied
        warnings.simplefilter("ignore", RuntimeWarning)
        u = float(mannwhitneyu(np.asarray(generated_d, dtype=np.float64), np.asarray(test_d, dtype=np.float64),
                               alternative="two-sided", method="asymptotic").statistic)
    return u, (u - m * n / 2) / (m * n * (m + n + 1) / 12) ** 0.5


def c_t(train, test, generated, cells: int = 10, seed: int = 0, min_cell_fraction: float = 0.02, *,
        device="cpu") -> tuple[float, list[dict]]:
    """The C_T statistic of ``generated`` against held-out ``test``, both relative to ``train`` (arrays N x ...).

    Returns (C_T, one dict per cell: cell, train, test, generated (counts), test_fraction, generated_fraction,
    U, Z (NaN where the cell has no held-out or no generated point) and used). See the module docstring.
    """
    import numpy as np
    from sklearn.cluster import KMeans

    train, test, generated = (np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
                              for x in (train, test, generated))
    if not 1 <= cells <= len(train):
        raise ValueError(f"cells must be between 1 and the {len(train)} training points, not {cells}")
    if len(test) == 0 or len(generated) == 0:
        raise ValueError("c_t needs at least one held-out and one generated point")
    kmeans = KMeans(n_clusters=cells, n_init=1, random_state=seed).fit(train)
    labels = [kmeans.predict(x) for x in (train, test, generated)]
    n, m = len(test), len(generated)
    rows = []
    for c in range(cells):
        in_train, in_test, in_gen = (x[lab == c] for x, lab in zip((train, test, generated), labels))
        row = {"cell": c, "train": len(in_train), "test": len(in_test), "generated": len(in_gen),
               "test_fraction": len(in_test) / n, "generated_fraction": len(in_gen) / m, "U": float("nan"),
               "Z": float("nan"), "used": False}
        if len(in_train) and len(in_test) and len(in_gen):
            dist, _ = search(np.concatenate([in_gen, in_test]), in_train, 1, device)
            row["U"], row["Z"] = mann_whitney_z(dist[:len(in_gen), 0].numpy(), dist[len(in_gen):, 0].numpy())
            row["used"] = row["generated_fraction"] >= min_cell_fraction
        rows.append(row)
    used = [r for r in rows if r["used"]]
    mass = sum(r["test_fraction"] for r in used)
    value = sum(r["test_fraction"] * r["Z"] for r in used) / mass if used else float("nan")
    return value, rows


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
        import math

        from ganlab import GanlabError, to_unit_range

        o = ctx.options
        train, _ = ctx.split(ctx.train_split, limit=o["train_limit"])
        test, _ = ctx.split(ctx.heldout_split, limit=o["test_limit"])
        generated = generated_uint8(ctx, o["samples"])
        if o["cells"] > len(train):
            raise GanlabError(f"data-copying.cells={o['cells']} is more than the {len(train)} training images; "
                              "give fewer, e.g. --set data-copying.cells=10")
        if o["space"] == "discriminator":
            if ctx.gan.discriminator is None:
                raise GanlabError("data-copying.space=discriminator needs a checkpoint with a discriminator; "
                                  "use --set data-copying.space=pixels")
            points = (d_features(ctx, train, ctx.train_split, o["train_limit"]),
                      d_features(ctx, test, ctx.heldout_split, o["test_limit"]), d_features(ctx, generated))
        else:
            points = tuple(to_unit_range(x).flatten(1).numpy() for x in (train, test, generated))
        value, rows = c_t(*points, cells=o["cells"], seed=ctx.seed, min_cell_fraction=o["min_cell_fraction"],
                          device=ctx.device)
        used = [r for r in rows if r["used"]]
        mass = sum(r["test_fraction"] for r in used)
        null_sd = math.sqrt(sum(r["test_fraction"] ** 2 for r in used)) / mass if used else float("nan")
        metrics = {"C_T": value, "C_T_null_sd": null_sd, "cells_used": len(used), "test_mass_used": mass,
                   "worst_cell_Z": min((r["Z"] for r in used), default=float("nan"))}
        if math.isnan(value):
            verdict = "No cell holds enough generated samples, so C_T is undefined; lower min_cell_fraction."
        elif value < -2 * null_sd:
            verdict = (f"C_T = {value:.2f} is well below 0: the samples are closer to the training images than "
                       "held-out images are, i.e. G copies (parts of) its training set.")
        elif value > 2 * null_sd:
            verdict = (f"C_T = {value:.2f} is well above 0: the samples are farther from the training images than "
                       "held-out images are (under-fitting), and no sign of copying.")
        else:
            verdict = (f"C_T = {value:.2f} is within 2 null standard deviations ({null_sd:.2f}) of 0: the samples "
                       "are as far from the training images as held-out images are.")
        where = "pixels ([-1, 1] units)" if o["space"] == "pixels" else "D's pooled features"
        table = Table(f"Cells (k-means on {len(train)} training images, {where}); Z < 0: samples closer to the "
                      "training images than held-out images are",
                      ["cell", "train", "held-out", "generated", "held-out mass", "generated fraction", "Z", "used"],
                      [[r["cell"], r["train"], r["test"], r["generated"], round(r["test_fraction"], 4),
                        round(r["generated_fraction"], 4), round(r["Z"], 3) if not math.isnan(r["Z"]) else "n/a",
                        "yes" if r["used"] else "no"] for r in rows])
        text = [verdict,
                f"C_T (Meehan, Chaudhuri & Dasgupta 2020) compares, in each of {o['cells']} k-means cells of the "
                f"training set, the distances to the nearest training image (in the same cell) of "
                f"{len(generated)} samples and of {len(test)} held-out images, with a Mann-Whitney test turned "
                "into a Z-score (negative: samples closer). C_T is the mean Z over the cells that hold at least "
                f"{o['min_cell_fraction']:g} of the samples, weighted by the held-out images' share of each cell. "
                "Well below 0 means copying, well above 0 under-fitting, near 0 (within about 2 x C_T_null_sd) "
                "like held-out data. A very negative worst_cell_Z with C_T near 0 means copying in one region."]
        return Result(metrics=metrics, tables=[table], text=text)


@hookimpl
def ganlab_register_evaluators(register):
    register(DataCopying())
