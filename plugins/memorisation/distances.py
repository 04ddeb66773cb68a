"""What ``nearest-neighbours`` and ``data-copying`` compute: exact distances from G's samples and held-out images to
their nearest training images (``ganlab.nearest_neighbours``), in pixels and in D's pooled features."""
import warnings

import numpy as np
import torch
from matplotlib.figure import Figure as MplFigure
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from torchvision.utils import make_grid

from ganlab import cached_features, discriminator_features, feature_cache_key, nearest_neighbours, to_unit_range


def d_features(ctx, train, test, generated) -> tuple:
    """D's pooled features of the training, held-out (or None) and generated images; a split's are cached between
    reports."""
    def split(images, name: str, limit: int):
        key = feature_cache_key(ctx.gan.path, "D", ctx.dataset, name, limit)
        return cached_features(ctx.cache, key, ctx.gan.discriminator, images, device=ctx.device, progress=ctx.progress)

    return (split(train, ctx.train_split, ctx.options["train_limit"]),
            None if test is None else split(test, ctx.heldout_split, ctx.options["test_limit"]),
            discriminator_features(ctx.gan.discriminator, generated, device=ctx.device))


def search(queries, references, k: int, device):
    """(distances, indices) N x k on the CPU. Tensors go to a CUDA ``device`` whole (uint8 pixels are small);
    arrays (maybe memory-mapped) go chunk by chunk."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and isinstance(references, torch.Tensor):
        references = references.to(device)
    return nearest_neighbours(queries, references, k, device=device, query_chunk=8192 if cuda else 2048)


def nearest_distances(ctx, train, generated, test, k: int) -> tuple[dict, list[str]]:
    """space -> {"generated": distances N x k, "indices": N x k, "test": nearest distances or None}, and notes."""
    n = len(generated)
    # pixels: uint8 in, distances in 0..255 units out; / 127.5 turns them into G's [-1, 1] units
    spaces = {"pixels": (train, generated if test is None else torch.cat([generated, test]), 127.5)}
    if ctx.gan.discriminator is not None:
        references, held, queries = d_features(ctx, train, test, generated)
        spaces["features"] = (references, queries if held is None else np.concatenate([queries, held]), 1)
    found = {}
    for space, (references, queries, scale) in spaces.items():
        dist, idx = search(queries, references, k, ctx.device)
        found[space] = {"generated": dist[:n] / scale, "indices": idx[:n],
                        "test": None if test is None else (dist[n:, 0] / scale).numpy()}
    return found, [] if "features" in found else [
        "This checkpoint has no discriminator, so the search in D's feature space was skipped."]


def summarise(found: dict, metrics: dict, percentile: float) -> list[list]:
    """Each space's medians, and with held-out distances its copy threshold (numpy's linear percentile) and the
    fraction of samples strictly below it, into ``metrics`` (the threshold also into ``found``); the table's rows."""
    rows = []
    for space, entry in found.items():
        gen = entry["generated"][:, 0].numpy()
        metrics[f"median_distance_generated_{space}"] = float(np.median(gen))
        rows.append([space, round(float(np.median(gen)), 4)])
        if entry["test"] is not None:
            entry["threshold"] = float(np.percentile(entry["test"].astype(np.float64), percentile))
            fraction = float((gen.astype(np.float64) < entry["threshold"]).mean())
            metrics[f"median_distance_test_{space}"] = float(np.median(entry["test"]))
            metrics[f"copy_threshold_{space}"] = entry["threshold"]
            metrics[f"copy_fraction_{space}"] = fraction
            rows[-1] += [round(float(np.median(entry["test"])), 4), round(entry["threshold"], 4), round(fraction, 4),
                         percentile / 100]
    return rows


def closest(found: dict, generated, train, show: int) -> list[tuple]:
    """Per space, the ``show`` samples closest to the training set: (space, grid of each beside its neighbours,
    table rows)."""
    out = []
    for space, entry in found.items():
        gen_d, gen_i = entry["generated"], entry["indices"]
        order = torch.argsort(gen_d[:, 0], stable=True)[:show].tolist()
        rows = torch.cat([torch.cat([to_unit_range(generated[j:j + 1]), to_unit_range(train[gen_i[j]])])
                          for j in order])
        out.append((space, make_grid(rows, nrow=gen_i.shape[1] + 1, normalize=True, value_range=(-1, 1)),
                    [[rank + 1, j, *[round(float(v), 4) for v in gen_d[j]], ", ".join(map(str, gen_i[j].tolist()))]
                     for rank, j in enumerate(order)]))
    return out


def histograms(found: dict, percentile: float) -> MplFigure:
    fig = MplFigure(figsize=(5 * len(found), 3.2), layout="constrained")
    for ax, (space, entry) in zip(np.atleast_1d(fig.subplots(1, len(found))), found.items()):
        gen, test = entry["generated"][:, 0].numpy(), entry["test"]
        bins = np.histogram_bin_edges(gen if test is None else np.concatenate([gen, test]), bins=40)
        ax.hist(gen, bins=bins, density=True, alpha=0.6, label="generated -> train")
        if test is not None:
            ax.hist(test, bins=bins, density=True, alpha=0.6, label="held-out -> train")
            ax.axvline(entry["threshold"], color="k", linestyle="--", linewidth=1,
                       label=f"{percentile:g}% quantile of held-out")
        ax.set_xlabel(f"distance to the nearest training image, {space}")
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    return fig


def mann_whitney_z(generated_d, test_d) -> tuple[float, float]:
    """(U, Z): U is scipy's statistic for the generated (first) sample."""
    m, n = len(generated_d), len(test_d)
    with warnings.catch_warnings():  # scipy's p-value (unused) divides by 0 when every distance is tied
        warnings.simplefilter("ignore", RuntimeWarning)
        u = float(mannwhitneyu(np.asarray(generated_d, dtype=np.float64), np.asarray(test_d, dtype=np.float64),
                               alternative="two-sided", method="asymptotic").statistic)
    return u, (u - m * n / 2) / (m * n * (m + n + 1) / 12) ** 0.5


def c_t(train, test, generated, cells: int = 10, seed: int = 0, min_cell_fraction: float = 0.02, *,
        device="cpu") -> tuple[float, list[dict]]:
    """(C_T of ``generated`` against held-out ``test``, both relative to ``train`` (arrays N x ...), one dict per
    cell: cell, train, test, generated (counts), test_fraction, generated_fraction, U, Z (NaN where the cell has no
    held-out or no generated point) and used)."""
    train, test, generated = (np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
                              for x in (train, test, generated))
    if len(test) == 0 or len(generated) == 0:
        raise ValueError("c_t needs at least one held-out and one generated point")
    kmeans = KMeans(n_clusters=cells, n_init=1, random_state=seed).fit(train)
    labels = [kmeans.predict(x) for x in (train, test, generated)]
    rows = []
    for c in range(cells):
        in_train, in_test, in_gen = (x[lab == c] for x, lab in zip((train, test, generated), labels))
        row = {"cell": c, "train": len(in_train), "test": len(in_test), "generated": len(in_gen),
               "test_fraction": len(in_test) / len(test), "generated_fraction": len(in_gen) / len(generated),
               "U": float("nan"), "Z": float("nan"), "used": False}
        if len(in_train) and len(in_test) and len(in_gen):
            dist = search(np.concatenate([in_gen, in_test]), in_train, 1, device)[0][:, 0].numpy()
            row["U"], row["Z"] = mann_whitney_z(dist[:len(in_gen)], dist[len(in_gen):])
            row["used"] = row["generated_fraction"] >= min_cell_fraction
        rows.append(row)
    used = [r for r in rows if r["used"]]
    mass = sum(r["test_fraction"] for r in used)
    return (sum(r["test_fraction"] * r["Z"] for r in used) / mass if used else float("nan")), rows


def copying_points(ctx, train, test, generated) -> tuple:
    """data-copying's three sets: pixels in [-1, 1], or D's pooled features."""
    if ctx.options["space"] == "pixels":
        return tuple(to_unit_range(x).flatten(1).numpy() for x in (train, test, generated))
    return d_features(ctx, train, test, generated)
