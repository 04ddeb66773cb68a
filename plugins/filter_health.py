"""Analysis ``filter-health``: collapsed and oscillating feature maps, sample diversity, D's first filters.

The paper (section 4.1) noticed that models trained longer sometimes collapse a subset of filters to a
single oscillating mode. This analysis looks for that in three ways.

Collapsed maps. For every feature map (channel) of every hidden layer of G (after its ReLU, on
``samples`` random z) and of D (after its LeakyReLU, on up to ``samples`` real images: the held-out split
when the dataset has one, else the training split), the map's *input variance* is the variance across
images at each spatial position, averaged over positions. A map that does not depend on its input (a
constant, or the same fixed pattern for every image) scores exactly 0. A map is *collapsed* when its
input variance is at most max(``relative_threshold`` x the layer's median map variance, ``absolute_floor``).
Metrics: ``collapsed_fraction_G`` / ``_D`` (collapsed maps / all maps of that network) and
``collapsed_fraction_G1``, ``_G2``, ... / ``_D1``, ... per layer (1 = lowest); the table has the counts.

Oscillating maps. When the checkpoint is a run's ``last.pt`` or ``epoch_NNNN.pt`` and the folder holds
at least 3 epoch files (up to that epoch), up to ``max_epochs`` of them, evenly spaced, are loaded. Per
epoch, each map's statistic is its mean activation: G's on ``epoch_samples`` fixed z, D's on the first
``epoch_samples`` of the real images above. With the epoch-to-epoch changes d_1 ... d_(E-1) of a map, its
*flip fraction* is the share of consecutive pairs (d_t, d_(t+1)) of opposite sign (a zero change never
flips) and its *relative amplitude* is mean |d_t| / mean |statistic|. A map *oscillates* when its flip
fraction is at least ``min_flip_fraction`` and its relative amplitude at least ``min_relative_amplitude``:
it keeps going up and down, by a lot. Smooth or monotone learning curves have few flips; a map that has
settled jitters with a small amplitude. Metrics: ``oscillating_maps``, ``oscillating_fraction`` (of all G
and D maps) and ``epochs_compared``; the figure shows the flagged maps (at most 12, or the 6 closest to
being flagged when none is) over the epochs, each divided by its mean |statistic|.

Sample diversity. The mean pairwise L2 distance between ``samples`` generated images, and between as many
training images, in pixel space ([-1, 1] values; both quantised to uint8 first) and in D's pooled feature
space (``ganlab.discriminator_features``). ``*_distance_ratio`` = generated / training: near 1 for a G as
varied as its data; well below 1 suggests mode collapse.

D's first-layer filters are shown as an image grid, each filter normalised to its own range.
"""
from __future__ import annotations

import re
from pathlib import Path

from ganlab import Analysis, Figure, Image, Result, Table, hookimpl

_EPOCH = re.compile(r"epoch_(\d+)\.pt")


class MapVariance:
    """Streaming per-channel input variance of a list of maps (N x C x H x W each), batch after batch."""

    def __init__(self):
        self.n, self.shift, self.sum, self.sq = 0, None, None, None

    def add(self, maps) -> None:
        maps = [m.detach().double().cpu() for m in maps]
        if self.shift is None:  # shifting by the first image keeps a constant map at exactly 0
            self.shift = [m[0].clone() for m in maps]
            self.sum = [0.0] * len(maps)
            self.sq = [0.0] * len(maps)
        for i, m in enumerate(maps):
            d = m - self.shift[i]
            self.sum[i] = self.sum[i] + d.sum(0)
            self.sq[i] = self.sq[i] + d.pow(2).sum(0)
        self.n += len(maps[0])

    def result(self):
        """Per layer a C-vector: the variance across images at each position, averaged over positions."""
        return [(sq / self.n - (s / self.n) ** 2).clamp(min=0).mean((1, 2)) for s, sq in zip(self.sum, self.sq)]


def map_variance(model, inputs, batch_size: int = 256):
    """Input variance of each feature map ``model(x, return_features=True)`` returns, over ``inputs``.

    G: latent vectors N x nz x 1 x 1 (its post-ReLU maps); D: images in [-1, 1] N x C x H x W (its
    post-LeakyReLU maps). Returns one C-vector per layer.
    """
    import torch

    stats, device = MapVariance(), next(model.parameters()).device
    with torch.no_grad():
        for chunk in inputs.split(batch_size):
            stats.add(model.eval()(chunk.to(device), return_features=True)[1])
    return stats.result()


def collapsed(variance, relative: float, floor: float):
    """Boolean C-vector: maps whose variance is at most max(relative x the layer's median variance, floor)."""
    import torch

    threshold = max(relative * torch.quantile(variance.double(), 0.5).item(), floor)
    return variance <= threshold


def oscillation(series):
    """(flip fraction, relative amplitude) of each column of an E x M series (E >= 3 epochs)."""
    series = series.double()
    change = series[1:] - series[:-1]
    sign = change.sign()
    flips = (sign[1:] * sign[:-1] < 0).double().mean(0)
    amplitude = change.abs().mean(0) / (series.abs().mean(0) + 1e-12)
    return flips, amplitude


def oscillating(series, min_flip_fraction: float = 0.6, min_relative_amplitude: float = 0.2):
    """Boolean M-vector: columns of the E x M series that flip direction often and by a lot (see the docstring)."""
    flips, amplitude = oscillation(series)
    return (flips >= min_flip_fraction) & (amplitude >= min_relative_amplitude)


def mean_pairwise_distance(x, chunk: int = 1024) -> float:
    """Mean L2 distance over all pairs of rows of x (N x ..., N >= 2), in float64.

    Squared distances come from Gram blocks of the centred rows (|a|^2 + |b|^2 - 2 a.b: a matrix product,
    several times faster than differencing every pair); centring keeps the rounding at 1e-16 of the spread, so
    the mean agrees with scipy's pdist to about 1e-14. Memory: ``chunk`` x N at a time.
    """
    import torch

    flat = x.reshape(len(x), -1).double()
    flat = flat - flat.mean(0)
    norms = (flat * flat).sum(1)
    n, total = len(flat), 0.0
    for start in range(0, n, chunk):
        block = flat[start:start + chunk]
        squared = norms[start:start + chunk, None] + norms[None, :] - 2 * (block @ flat.T)
        later = torch.arange(n)[None, :] > torch.arange(start, start + len(block))[:, None]  # each pair once
        total += squared.clamp_min_(0).sqrt_().mul_(later).sum().item()
    return total / (n * (n - 1) / 2)


def epoch_files(path, max_epochs: int):
    """[(epoch, path)] of the run's epoch checkpoints up to ``path``'s epoch (all for last.pt), evenly capped."""
    import numpy as np

    path = Path(path)
    own = _EPOCH.fullmatch(path.name)
    if path.name != "last.pt" and own is None:
        return []
    found = sorted((int(m.group(1)), p) for p in path.parent.glob("epoch_*.pt") if (m := _EPOCH.fullmatch(p.name)))
    found = [(e, p) for e, p in found if own is None or e <= int(own.group(1))]
    if len(found) > max_epochs:
        found = [found[i] for i in sorted(set(np.linspace(0, len(found) - 1, max_epochs).round().astype(int)))]
    return found


def _to_uint8(x):
    import torch

    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _epoch_statistics(files, z, real, device, progress):
    """epochs, E x M mean activations of every G then D map, the maps' names, and the files that failed."""
    import torch

    from ganlab import GanlabError, load

    epochs, rows, skipped, names = [], [], [], None
    for epoch, path in progress(files, desc="filter-health epochs", total=len(files)):
        try:
            gan = load(path, device)
        except GanlabError as exc:
            skipped.append(f"{path.name} ({exc})")
            continue
        with torch.no_grad():
            maps = [("G", gan.generator(z.to(device), return_features=True)[1])]
            if gan.discriminator is not None:
                maps.append(("D", gan.discriminator(real.to(device), return_features=True)[1]))
        row = torch.cat([m.mean((0, 2, 3)).double().cpu() for _, layer in maps for m in layer])
        here = [f"{net}{i + 1} map {c}" for net, layer in maps for i, m in enumerate(layer) for c in range(m.shape[1])]
        if names is not None and here != names:
            skipped.append(f"{path.name} (different maps from the other epochs)")
            continue
        names = here
        epochs.append(epoch)
        rows.append(row)
    return epochs, (torch.stack(rows) if rows else None), names or [], skipped


def _epoch_figure(epochs, series, flagged, names, score):
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import MaxNLocator

    show = flagged.nonzero().flatten().tolist()
    title = f"{len(show)} oscillating maps"
    if not show:  # nothing flagged: still show the most oscillating maps, labelled as such
        show = score.argsort(descending=True)[:6].tolist()
        title = "no map oscillates; the 6 with the largest flip fraction x relative amplitude"
    show = sorted(show, key=lambda m: -score[m].item())[:12]
    fig = MplFigure(figsize=(7, 3.5))
    ax = fig.subplots()
    for m in show:  # relative to the map's own scale, as the amplitude criterion is
        ax.plot(epochs, (series[:, m] / (series[:, m].abs().mean() + 1e-12)).numpy(), marker="o", label=names[m])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean activation / its mean |value|")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def _first_filters(D):
    import torch
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    conv = next(m for m in D.main if isinstance(m, torch.nn.Conv2d))
    w = conv.weight.detach().float().cpu()
    w = F.interpolate(w, scale_factor=max(1, 32 // w.shape[-1]), mode="nearest")
    return make_grid(w, nrow=min(16, len(w)), normalize=True, scale_each=True, pad_value=1.0).clamp(0, 1)


class FilterHealth(Analysis):
    name = "filter-health"
    description = "Collapsed and oscillating feature maps of G and D, sample diversity vs. training images"
    needs = ("discriminator", "train_set")
    # a distance ratio's best is about 1 (below: collapse), so it has no direction
    directions = {"collapsed_fraction_*": "lower", "oscillating_*": "lower", "*": None}
    options = {"samples": 512, "batch_size": 128, "relative_threshold": 1e-3, "absolute_floor": 1e-8,
               "max_epochs": 20, "epoch_samples": 128, "min_flip_fraction": 0.6, "min_relative_amplitude": 0.2}

    def run(self, ctx):
        import torch

        from ganlab import GanlabError, discriminator_features, sample_latent, to_unit_range

        o = ctx.options
        if o["samples"] < 2 or o["epoch_samples"] < 1 or o["batch_size"] < 1 or o["max_epochs"] < 3:
            raise GanlabError("filter-health needs samples >= 2, epoch_samples >= 1, batch_size >= 1 and "
                              "max_epochs >= 3; e.g. --set filter-health.samples=512")
        if min(o["relative_threshold"], o["absolute_floor"], o["min_flip_fraction"],
               o["min_relative_amplitude"]) < 0:
            raise GanlabError("filter-health's thresholds must not be negative")
        progress = ctx.progress or (lambda it, **_: it)
        cfg, G, D = ctx.gan.config, ctx.gan.generator.eval(), ctx.gan.discriminator.eval()
        z = sample_latent(cfg, o["samples"], torch.Generator().manual_seed(ctx.seed))
        real_split = ctx.heldout_split or ctx.train_split
        real, _ = ctx.split(real_split, limit=o["samples"])
        variances = [("G", v) for v in map_variance(G, z, o["batch_size"])]
        variances += [("D", v) for v in map_variance(D, to_unit_range(real), o["batch_size"])]

        metrics, rows, totals = {}, [], {"G": [0, 0], "D": [0, 0]}
        layer = {"G": 0, "D": 0}
        for net, v in variances:
            layer[net] += 1
            flags = collapsed(v, o["relative_threshold"], o["absolute_floor"])
            count = int(flags.sum())
            totals[net][0] += count
            totals[net][1] += len(v)
            metrics[f"collapsed_fraction_{net}{layer[net]}"] = count / len(v)
            which = flags.nonzero().flatten().tolist()
            rows.append([f"{net}{layer[net]}", len(v), float(torch.quantile(v.double(), 0.5)), count,
                         ", ".join(map(str, which[:12])) + (" ..." if len(which) > 12 else "")])
        for net, (count, total) in totals.items():
            metrics[f"collapsed_fraction_{net}"] = count / total
        tables = [Table("Collapsed maps per layer (input variance at most the threshold)",
                        ["layer", "maps", "median input variance", "collapsed", "collapsed maps"], rows)]
        text = [f"G's maps are measured on {len(z)} random z, D's on {len(real)} real images of the "
                f"'{real_split}' split. A collapsed map gives the same output whatever the input."]

        # sample diversity, generated vs. training, in pixels and in D's features
        generated = _to_uint8(ctx.gan.sample(o["samples"], seed=ctx.seed))
        train, _ = ctx.split(ctx.train_split, limit=o["samples"])
        n = min(len(generated), len(train))
        if n < 2:
            raise GanlabError(f"filter-health needs at least 2 training images; the '{ctx.train_split}' split has {n}")
        generated, train = generated[:n], train[:n]

        def features(images):
            return torch.from_numpy(discriminator_features(D, images, device=ctx.device, batch_size=o["batch_size"]))

        for space, embed in (("pixel", to_unit_range), ("feature", features)):
            fake, true = mean_pairwise_distance(embed(generated)), mean_pairwise_distance(embed(train))
            metrics.update({f"{space}_distance_generated": fake, f"{space}_distance_train": true,
                            f"{space}_distance_ratio": fake / true if true > 0 else float("nan")})
        text.append(f"Diversity: mean pairwise L2 distance of {n} generated and {n} '{ctx.train_split}' images; "
                    f"generated / training = {metrics['pixel_distance_ratio']:.3f} in pixels and "
                    f"{metrics['feature_distance_ratio']:.3f} in D's features (well below 1 suggests mode collapse).")

        figures = []
        files = epoch_files(ctx.gan.path, o["max_epochs"])
        if len(files) < 3:
            text.append(f"Oscillation across epochs skipped: it needs at least 3 epoch checkpoints beside the "
                        f"checkpoint ({ctx.gan.path.name}); found {len(files)}.")
        else:
            k = o["epoch_samples"]
            epochs, series, names, skipped = _epoch_statistics(files, z[:k], to_unit_range(real[:k]), ctx.device,
                                                               progress)
            if skipped:
                text.append("Epoch checkpoints skipped: " + "; ".join(skipped))
            if series is None or len(epochs) < 3:
                text.append(f"Oscillation across epochs skipped: only {len(epochs)} epoch checkpoints could be read.")
            else:
                flips, amplitude = oscillation(series)
                flagged = oscillating(series, o["min_flip_fraction"], o["min_relative_amplitude"])
                metrics.update({"oscillating_maps": int(flagged.sum()),
                                "oscillating_fraction": flagged.double().mean().item(),
                                "epochs_compared": len(epochs)})
                figure = _epoch_figure(epochs, series, flagged, names, flips * amplitude)
                figures.append(Figure(f"Mean activation over epochs {epochs[0]}-{epochs[-1]} "
                                      f"({len(epochs)} checkpoints)", figure))
                text.append(f"{int(flagged.sum())} of {len(names)} maps oscillate across {len(epochs)} epochs "
                            f"(flip fraction >= {o['min_flip_fraction']}, relative amplitude >= "
                            f"{o['min_relative_amplitude']}).")
        images = [Image("D's first-layer filters, each normalised to its own range", _first_filters(D))]
        return Result(metrics=metrics, tables=tables, figures=figures, images=images, text=text)


@hookimpl
def ganlab_register_analyses(register):
    register(FilterHealth())
