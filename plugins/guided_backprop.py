"""Analysis ``guided-backprop``: what D's filters respond to (the paper's figure 5).

For the first ``filters`` maps of D's last conv layer (after its LeakyReLU), the ``top`` held-out images with the
largest response (the map's spatial max) beside their guided-backpropagation saliency (Springenberg et al. 2015:
|gradient|, max over colour channels), for the trained D and for a D of the same architecture at its random
initialisation (``torch.manual_seed(seed)``), each ranking the images by its own filters.

``top5_mass_trained`` / ``_random``: the share of a saliency map's mass in its top 5% of pixels, mean over every
filter's top images; a flat map gives about 0.05, mass in a few pixels 1. Guided backprop draws image-like maps
even for random networks (Adebayo et al. 2018), so ``top5_mass_difference`` (trained minus random) > 0 is what
says the trained filters look at more localised structure.
"""
import math

from ganlab import Analysis, GanlabError, Image, Option, Result, Table, hookimpl

TOP_PIXELS = 0.05  # the share of pixels whose saliency mass the metric measures


def guided_backprop(module, inputs, target=None, *, layer=None):
    """Guided-backpropagation attribution of ``target`` with respect to ``inputs`` (same shape as ``inputs``).

    Every ``nn.ReLU`` / ``nn.LeakyReLU`` passes only positive gradients, through its own derivative. On ReLU that
    is ``captum.attr.GuidedBackprop``; Captum changes only ``nn.ReLU``, so on D's LeakyReLUs it gives the plain
    gradient. A tensor hook on each activation's output clamps the gradient arriving there at 0, and autograd's own
    backward applies the derivative (full backward hooks, as Captum's, refuse ``inplace=True``); the hooks go
    when this returns, and parameters' ``.grad`` and ``requires_grad`` are untouched. Use eval mode: BatchNorm in
    training mode would mix the batch's samples.

    ``target``, one number per sample: ``None``, the output itself (N or N x 1); an int or one int per sample,
    ``output[:, target]`` (as in Captum); or a callable ``target(output) -> N``, e.g. ``channel_max(channels)``.
    With ``layer`` (a submodule), ``output`` is that layer's output in the forward pass.
    """
    import torch
    from torch import nn

    def clamp_gradient(_module, _inputs, out):
        if out.requires_grad:
            out.register_hook(lambda grad: grad.clamp(min=0))

    captured = {}
    handles = [m.register_forward_hook(clamp_gradient) for m in module.modules()
               if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    if layer is not None:
        handles.append(layer.register_forward_hook(lambda _m, _args, out: captured.__setitem__("out", out)))
    try:
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            output = module(x)
            if layer is not None:
                if "out" not in captured:
                    raise ValueError("guided_backprop: `layer` was not called in the module's forward pass")
                output = captured["out"]
            (grad,) = torch.autograd.grad(_per_sample(output, target, len(x)).sum(), x)
        return grad
    finally:
        for handle in handles:
            handle.remove()


def _per_sample(output, target, n: int):
    import torch

    if callable(target):
        value = target(output)
    elif not isinstance(output, torch.Tensor):
        raise ValueError("guided_backprop: the output is not a tensor; give `target` as a callable or a `layer`")
    elif target is None:
        value = output
    else:
        index = torch.as_tensor(target, device=output.device)
        value = output[:, index] if index.ndim == 0 else output[torch.arange(n, device=output.device), index]
    if not isinstance(value, torch.Tensor) or value.ndim and (len(value) != n or value[0].numel() != 1):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"guided_backprop: the target must give one number per sample ({n}), got {shape}")
    return value.reshape(n) if value.ndim else value


def channel_max(channels):
    """A ``target`` for N x C x H x W outputs: sample i's spatial max of channel ``channels[i]`` (or one int)."""
    import torch

    def target(output):
        index = torch.as_tensor(channels, device=output.device).expand(len(output))
        return output[torch.arange(len(output), device=output.device), index].flatten(1).amax(1)

    return target


def top_count(pixels: int, fraction: float = TOP_PIXELS) -> int:
    return max(1, math.ceil(round(fraction * pixels, 9)))  # rounded: 0.07 * 100 is 7.000000000000001


def top_mass_fraction(saliency, fraction: float = TOP_PIXELS):
    """Per map (N x H x W, non-negative): the share of its total mass in its top ceil(fraction * H * W) pixels
    (a flat map gives about ``fraction``, all mass in at most that many pixels 1, an all-zero map NaN)."""
    flat = saliency.flatten(1).double()
    return (flat.topk(top_count(flat.shape[1], fraction), dim=1).values.sum(1) / flat.sum(1)).float()  # 0 / 0: NaN


def explain_filters(D, images, n_filters: int, top: int, device, batch_size: int = 256) -> dict:
    """The top images of D's first ``n_filters`` last-layer maps and their saliency, filter by filter:
    ``filters`` (the number used), ``responses`` (filters x top), ``images`` (filters*top x C x H x W in [-1, 1]),
    ``saliency`` (filters*top x H x W) and ``mass`` (top-5% mass fractions)."""
    import torch
    from torch import nn

    from ganlab import to_unit_range

    last_activation = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)][-1]
    with torch.no_grad():
        responses = torch.cat([D(to_unit_range(chunk).to(device), return_features=True)[1][-1][:, :n_filters]
                               .amax((2, 3)).float().cpu() for chunk in images.split(batch_size)])
    n_filters = responses.shape[1]
    values, indices = responses.topk(top, dim=0)  # top x filters
    x = to_unit_range(images[indices.T.flatten()])
    channels = torch.arange(n_filters).repeat_interleave(top).to(device)
    saliency = guided_backprop(D, x.to(device), channel_max(channels), layer=last_activation).float().abs().amax(1)
    return {"filters": n_filters, "responses": values.T, "images": x, "saliency": saliency.cpu(),
            "mass": top_mass_fraction(saliency).cpu()}


def filter_grid(found: dict, top: int):
    import torch
    from torchvision.utils import make_grid

    images = ((found["images"] + 1) / 2).clamp(0, 1)
    sal = found["saliency"] / found["saliency"].flatten(1).amax(1).clamp(min=1e-30).view(-1, 1, 1)
    sal = sal.unsqueeze(1).expand(-1, images.shape[1], -1, -1)
    rows = [torch.cat([images[f * top:(f + 1) * top], sal[f * top:(f + 1) * top]]) for f in range(found["filters"])]
    return make_grid(torch.cat(rows), nrow=2 * top, padding=2, pad_value=0.5).clamp(0, 1)


def verdict(metrics: dict, flat: float) -> str:
    trained, random, difference = (metrics[f"top5_mass_{k}"] for k in ("trained", "random", "difference"))
    reading = "more" if difference > 0 else "no more"
    return (f"the trained D's last-layer filters put {trained:.1%} of their saliency in the top 5% of pixels against "
            f"{random:.1%} for a random D (a flat map gives {flat:.1%}): they look at {reading} localised structure "
            f"than untrained filters ({100 * difference:+.1f} points)")


class GuidedBackpropAnalysis(Analysis):
    name = "guided-backprop"
    description = ("Guided backprop of D's last-layer filters on their top held-out images, trained vs random D "
                   "(the paper's figure 5)")
    needs = ("discriminator", "heldout")
    options = {"filters": Option(6, "last-layer filters shown", min=1), "top": Option(4, "images per filter", min=1),
               "images": Option(1000, "held-out images searched", min=1),
               "batch_size": Option(256, "images per forward pass", min=1)}
    directions = {"*": None}  # how concentrated the filters' evidence is, described, not scored

    def run(self, ctx):
        import torch

        from ganlab import Discriminator

        o = ctx.options
        images, _ = ctx.split(ctx.heldout_split, limit=o["images"])
        if len(images) < o["top"]:
            raise GanlabError(f"guided-backprop.top={o['top']} but the held-out split has {len(images)} images; "
                              "lower --set guided-backprop.top")
        with torch.random.fork_rng(devices=[]):  # the seeded random D, without moving the caller's RNG
            torch.manual_seed(ctx.seed)
            random_d = Discriminator(ctx.gan.config)
        models = {"trained": ctx.gan.discriminator.eval(), "random": random_d.to(ctx.device).eval()}
        found = {name: explain_filters(D, images, o["filters"], o["top"], ctx.device, o["batch_size"])
                 for name, D in models.items()}
        n = found["trained"]["filters"]
        mass = {name: float(torch.nanmean(f["mass"])) for name, f in found.items()}
        per_filter = [(f["responses"].mean(1), torch.nanmean(f["mass"].view(-1, o["top"]), 1)) for f in found.values()]
        rows = [[i] + [round(float(v[i]), 4) for pair in per_filter for v in pair] for i in range(n)]
        flat = top_count(ctx.gan.config.image_size ** 2) / ctx.gan.config.image_size ** 2
        metrics = {"top5_mass_trained": mass["trained"], "top5_mass_random": mass["random"],
                   "top5_mass_difference": mass["trained"] - mass["random"], "filters": n, "images": len(images)}
        return Result(
            metrics=metrics, verdict=verdict(metrics, flat),
            problems=[f"the trained D's saliency is zero on every top image of its first {n} last-layer filters: "
                      "they do not respond to the input"] if math.isnan(mass["trained"]) else [],
            tables=[Table(f"Last-layer filters: mean response of the top {o['top']} images and top-5% saliency mass",
                          ["filter", "trained: response", "trained: top-5% mass", "random: response",
                           "random: top-5% mass"], rows)],
            images=[Image(f"{name} D: {n} filters x top {o['top']} images, then guided-backprop saliency",
                          filter_grid(found[name], o["top"])) for name in models],
            text=[f"Each row is one of the first {n} feature maps of D's last conv layer: its {o['top']} held-out "
                  "images with the largest response, then their guided-backprop saliency (white = most salient). "
                  f"Top-5% mass: share of saliency in the top 5% of pixels; a flat map gives "
                  f"{flat:.4f}, a map concentrated in a few pixels 1. Trained minus random > 0: "
                  "the trained filters look at more localised structure than the untrained ones."])


@hookimpl
def ganlab_register_analyses(register):
    register(GuidedBackpropAnalysis())
