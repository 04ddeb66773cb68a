"""Analysis ``filter-health``: collapsed and oscillating feature maps, sample diversity, D's first filters.

The paper (section 4.1) saw models trained longer collapse a subset of filters to a single oscillating mode.

Collapsed maps: a map's input variance (across images, mean over positions; G on ``samples`` random z, D on as
many held-out, else training, images) is exactly 0 when it ignores its input; it is collapsed at or below
max(``relative_threshold`` x its layer's median, ``absolute_floor``). ``collapsed_fraction_G``/``_D`` and per layer
``_G1``, ``_D2``, ...

Oscillating maps: across up to ``max_epochs`` ``epoch_NNNN.pt`` beside the checkpoint (3 or more, up to its
epoch), each map's mean activation per epoch; a map oscillates when the share of consecutive changes that turn
direction reaches ``min_flip_fraction`` and mean |change| / mean |activation| reaches ``min_relative_amplitude``
(smooth learning rarely turns, a settled map only jitters): ``oscillating_maps``, ``_fraction``, ``epochs_compared``.

Diversity: ``*_distance_generated``/``_train``, the mean pairwise L2 distance of ``samples`` generated and as many
training images, in pixels and D's pooled features; ``_ratio`` near 1 for a G as varied as its data, well below 1
for mode collapse.
"""
from pathlib import Path

from ganlab import Analysis, Figure, Image, Option, Result, Table, epoch_files, hookimpl


def map_variance(model, inputs, batch_size: int = 256):
    """Input variance of each map of ``model(x, return_features=True)`` over ``inputs``: one C-vector per layer."""
    import torch

    device, n, shift, sums, squares = next(model.parameters()).device, 0, None, None, None
    with torch.no_grad():
        for chunk in inputs.split(batch_size):
            maps = [m.double().cpu() for m in model.eval()(chunk.to(device), return_features=True)[1]]
            if shift is None:  # shifting by the first image keeps a constant map at exactly 0
                shift, sums, squares = [m[0].clone() for m in maps], [0.0] * len(maps), [0.0] * len(maps)
            for i, m in enumerate(maps):
                sums[i] = sums[i] + (m - shift[i]).sum(0)
                squares[i] = squares[i] + (m - shift[i]).pow(2).sum(0)
            n += len(chunk)
    return [(sq / n - (s / n) ** 2).clamp(min=0).mean((1, 2)) for s, sq in zip(sums, squares)]


def collapsed(variance, relative: float, floor: float):
    import torch

    return variance <= max(relative * torch.quantile(variance.double(), 0.5).item(), floor)


def oscillation(series):
    """(flip fraction, relative amplitude) of each column of an E x M series (E >= 3 epochs)."""
    series = series.double()
    change = series[1:] - series[:-1]
    flips = (change.sign()[1:] * change.sign()[:-1] < 0).double().mean(0)
    return flips, change.abs().mean(0) / (series.abs().mean(0) + 1e-12)


def oscillating(series, min_flip_fraction: float = 0.6, min_relative_amplitude: float = 0.2):
    flips, amplitude = oscillation(series)
    return (flips >= min_flip_fraction) & (amplitude >= min_relative_amplitude)


def mean_pairwise_distance(x, chunk: int = 1024) -> float:
    """Mean L2 distance over all pairs of rows of x (N x ..., N >= 2), in float64, ``chunk`` x N at a time.

    Gram blocks (|a|^2 + |b|^2 - 2 a.b) are several times faster than differencing every pair; centring the rows
    first keeps the rounding at 1e-16 of the spread (scipy's pdist to about 1e-14).
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


def compared_epochs(path, max_epochs: int):
    """[(epoch, path)] of the run's epoch checkpoints up to ``path``'s epoch (all for last.pt), evenly capped."""
    import numpy as np

    path = Path(path)
    found = epoch_files(path.parent)
    own = next((epoch for epoch, p in found if p.name == path.name), None)
    if path.name != "last.pt" and own is None:
        return []
    found = [(e, p) for e, p in found if own is None or e <= own]
    if len(found) > max_epochs:
        found = [found[i] for i in sorted(set(np.linspace(0, len(found) - 1, max_epochs).round().astype(int)))]
    return found


def epoch_statistics(files, z, real, device, progress):
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
        here = [f"{net}{i + 1} map {c}" for net, layer in maps for i, m in enumerate(layer) for c in range(m.shape[1])]
        if names is not None and here != names:
            skipped.append(f"{path.name} (different maps from the other epochs)")
            continue
        names = here
        epochs.append(epoch)
        rows.append(torch.cat([m.mean((0, 2, 3)).double().cpu() for _, layer in maps for m in layer]))
    return epochs, (torch.stack(rows) if rows else None), names or [], skipped


def epoch_figure(epochs, series, flagged, names, score):
    """The flagged maps (or the 6 highest scores when none is) over the epochs, relative to their own scale."""
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import MaxNLocator

    show = flagged.nonzero().flatten().tolist()
    title = f"{len(show)} oscillating maps"
    if not show:
        show = score.argsort(descending=True)[:6].tolist()
        title = "no map oscillates; the 6 with the largest flip fraction x relative amplitude"
    fig = MplFigure(figsize=(7, 3.5))
    ax = fig.subplots()
    for m in sorted(show, key=lambda m: -score[m].item())[:12]:  # relative, as the amplitude criterion is
        ax.plot(epochs, (series[:, m] / (series[:, m].abs().mean() + 1e-12)).numpy(), marker="o", label=names[m])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="mean activation / its mean |value|")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def first_filters(D):
    """D's first-layer filters as an image grid (at least 32 pixels each), each normalised to its own range."""
    import torch
    import torch.nn.functional as F
    from torchvision.utils import make_grid

    w = next(m for m in D.main if isinstance(m, torch.nn.Conv2d)).weight.detach().float().cpu()
    w = F.interpolate(w, scale_factor=max(1, 32 // w.shape[-1]), mode="nearest")
    return make_grid(w, nrow=min(16, len(w)), normalize=True, scale_each=True, pad_value=1.0).clamp(0, 1)


def verdict(metrics: dict, layers: list) -> str:
    """``layers``: the table's rows, [layer, maps, median input variance, collapsed, ...]."""
    dead, maps = ({net: sum(row[column] for row in layers if row[0][0] == net) for net in "GD"} for column in (3, 1))
    parts = [f"{dead['G']} of {maps['G']} maps of G and {dead['D']} of {maps['D']} of D are collapsed"
             if dead["G"] + dead["D"] else "no collapsed maps in G or D"]
    if "oscillating_maps" in metrics:
        parts.append(f"{metrics['oscillating_maps']} of {maps['G'] + maps['D']} maps oscillate across "
                     f"{metrics['epochs_compared']} epochs")
    parts.append(f"samples are {metrics['pixel_distance_ratio']:.2f}x as spread as training images in pixels and "
                 f"{metrics['feature_distance_ratio']:.2f}x in D's features")
    return "; ".join(parts)


class FilterHealth(Analysis):
    name = "filter-health"
    description = "Collapsed and oscillating feature maps of G and D, sample diversity vs. training images"
    needs = ("discriminator", "train_set")
    # a distance ratio's best is about 1 (below: collapse), so it has no direction
    directions = {"collapsed_fraction_*": "lower", "oscillating_*": "lower", "*": None}
    options = {"samples": Option(512, "random z and real images measured", min=2),
               "batch_size": Option(128, "images per forward pass", min=1),
               "relative_threshold": Option(1e-3, "collapsed: variance <= this x the layer's median", min=0),
               "absolute_floor": Option(1e-8, "collapsed: variance <= this", min=0),
               "max_epochs": Option(20, "epoch checkpoints compared", min=3),
               "epoch_samples": Option(128, "z and real images per epoch checkpoint", min=1),
               "min_flip_fraction": Option(0.6, "share of epoch-to-epoch changes that must turn direction for "
                                           "a map to count as oscillating", min=0),
               "min_relative_amplitude": Option(0.2, "its swing, relative to its mean, that must also be reached",
                                                min=0)}

    def run(self, ctx):
        import torch

        from ganlab import sample_latent, to_unit_range

        o = ctx.options
        z = sample_latent(ctx.gan.config, o["samples"], torch.Generator().manual_seed(ctx.seed))
        real_split = ctx.heldout_split or ctx.train_split
        real = to_unit_range(ctx.split(real_split, limit=o["samples"])[0])
        metrics, table = self.collapsed_maps(ctx, z, real)
        text = [f"G's maps are measured on {len(z)} random z, D's on {len(real)} real images of the "
                f"'{real_split}' split. A collapsed map gives the same output whatever the input.",
                self.diversity(ctx, metrics)]
        figures = self.oscillation(ctx, z, real, metrics, text)
        filters = Image("D's first-layer filters, each normalised to its own range",
                        first_filters(ctx.gan.discriminator))
        problems = [f"every map of layer {row[0]} is collapsed ({row[3]} of {row[1]}): the layer passes nothing on"
                    for row in table.rows if row[3] == row[1]]
        return Result(metrics=metrics, tables=[table], figures=figures, images=[filters], text=text,
                      verdict=verdict(metrics, table.rows), problems=problems)

    @staticmethod
    def collapsed_maps(ctx, z, real):
        import torch

        o, metrics, rows, totals = ctx.options, {}, [], {"G": [0, 0], "D": [0, 0]}
        for net, model, inputs in (("G", ctx.gan.generator, z), ("D", ctx.gan.discriminator, real)):
            for layer, v in enumerate(map_variance(model, inputs, o["batch_size"]), 1):
                which = collapsed(v, o["relative_threshold"], o["absolute_floor"]).nonzero().flatten().tolist()
                totals[net] = [totals[net][0] + len(which), totals[net][1] + len(v)]
                metrics[f"collapsed_fraction_{net}{layer}"] = len(which) / len(v)
                rows.append([f"{net}{layer}", len(v), float(torch.quantile(v.double(), 0.5)), len(which),
                             ", ".join(map(str, which[:12])) + (" ..." if len(which) > 12 else "")])
        metrics.update({f"collapsed_fraction_{net}": count / total for net, (count, total) in totals.items()})
        return metrics, Table("Collapsed maps per layer (input variance at most the threshold)",
                              ["layer", "maps", "median input variance", "collapsed", "collapsed maps"], rows)

    @staticmethod
    def diversity(ctx, metrics) -> str:
        import torch

        from ganlab import GanlabError, discriminator_features, to_uint8, to_unit_range

        o = ctx.options
        generated = to_uint8(ctx.gan.sample(o["samples"], seed=ctx.seed))
        train, _ = ctx.split(ctx.train_split, limit=o["samples"])
        n = min(len(generated), len(train))
        if n < 2:
            raise GanlabError(f"filter-health needs at least 2 training images; the '{ctx.train_split}' split has {n}")

        def features(images):
            return torch.from_numpy(discriminator_features(ctx.gan.discriminator, images, device=ctx.device,
                                                           batch_size=o["batch_size"]))

        for space, embed in (("pixel", to_unit_range), ("feature", features)):
            fake, true = mean_pairwise_distance(embed(generated[:n])), mean_pairwise_distance(embed(train[:n]))
            metrics.update({f"{space}_distance_generated": fake, f"{space}_distance_train": true,
                            f"{space}_distance_ratio": fake / true if true > 0 else float("nan")})
        return (f"Diversity: mean pairwise L2 distance of {n} generated and {n} '{ctx.train_split}' images; "
                f"generated / training = {metrics['pixel_distance_ratio']:.3f} in pixels and "
                f"{metrics['feature_distance_ratio']:.3f} in D's features (well below 1 suggests mode collapse).")

    @staticmethod
    def oscillation(ctx, z, real, metrics, text) -> list:
        o, files = ctx.options, compared_epochs(ctx.gan.path, ctx.options["max_epochs"])
        if len(files) < 3:
            text.append(f"Oscillation across epochs skipped: it needs at least 3 epoch checkpoints beside the "
                        f"checkpoint ({ctx.gan.path.name}); found {len(files)}.")
            return []
        k = o["epoch_samples"]
        epochs, series, names, skipped = epoch_statistics(files, z[:k], real[:k], ctx.device,
                                                          ctx.progress or (lambda it, **_: it))
        if skipped:
            text.append("Epoch checkpoints skipped: " + "; ".join(skipped))
        if series is None or len(epochs) < 3:
            text.append(f"Oscillation across epochs skipped: only {len(epochs)} epoch checkpoints could be read.")
            return []
        flips, amplitude = oscillation(series)
        flagged = oscillating(series, o["min_flip_fraction"], o["min_relative_amplitude"])
        metrics.update({"oscillating_maps": int(flagged.sum()), "oscillating_fraction": flagged.double().mean().item(),
                        "epochs_compared": len(epochs)})
        text.append(f"{int(flagged.sum())} of {len(names)} maps oscillate across {len(epochs)} epochs (flip fraction "
                    f">= {o['min_flip_fraction']}, relative amplitude >= {o['min_relative_amplitude']}).")
        return [Figure(f"Mean activation over epochs {epochs[0]}-{epochs[-1]} ({len(epochs)} checkpoints)",
                       epoch_figure(epochs, series, flagged, names, flips * amplitude))]


@hookimpl
def ganlab_register_analyses(register):
    register(FilterHealth())
