"""Analysis ``guided-backprop``: what D's filters respond to (the paper's figure 5).

For the first ``filters`` feature maps of D's last conv layer (the last map of
``D(x, return_features=True)``, after its LeakyReLU, before the 1-logit conv), the ``top`` held-out real
images with the largest response (spatial max of the map) are shown beside their guided-backpropagation
maps (Springenberg et al. 2015, "Striving for simplicity") of that response with respect to the input.
This is done for the trained D and for a D of the same architecture at its random N(0, 0.02)
initialisation (``torch.manual_seed(seed)``); each model ranks the images by its own filters' responses.
One image grid per model: a row per filter, the top images first, then their saliency maps
(|gradient|, max over colour channels, divided by its own maximum: white = the most salient pixel).

Metrics (one map per filter and top image, averaged over all of them):

- ``top5_mass_trained`` / ``top5_mass_random``: the fraction of a saliency map's total mass held by its
  top 5% of pixels (``top_mass_fraction``). A perfectly flat map gives the floor
  ceil(0.05 * H * W) / (H * W), about 0.05 (0.0508 at 16x16 and 32x32), and pixel noise stays a little
  above it; a map whose mass sits in a few pixels gives 1. A filter that looks at a localised structure
  (a stroke, an edge, a part) has a high value; one that looks at diffuse texture or noise stays near the
  floor. The map can only be non-zero inside the
  receptive field of the most responsive location, which is the same for both models.
- ``top5_mass_difference``: trained minus random. Guided backprop is known to produce image-like maps
  even for random networks (Adebayo et al. 2018, "Sanity checks for saliency maps"), so read the
  difference against the random D rather than the absolute value: > 0 means the trained filters are
  more localised than the same architecture untrained.
"""
from __future__ import annotations

import functools

from ganlab import Analysis, GanlabError, Image, Result, Table, hookimpl

TOP_PIXELS = 0.05  # the share of pixels whose saliency mass the metric measures


@functools.cache
def _guided_function():
    """The autograd Function of a guided ReLU / LeakyReLU (built lazily: plugins import light)."""
    import torch
    import torch.nn.functional as F

    class GuidedActivation(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, negative_slope):
            ctx.save_for_backward(x)
            ctx.negative_slope = negative_slope
            return F.leaky_relu(x, negative_slope) if negative_slope else F.relu(x)  # never in place

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            local = torch.full_like(x, ctx.negative_slope).masked_fill_(x > 0, 1.0)  # the activation's derivative
            return grad.clamp(min=0) * local, None

    return GuidedActivation


def _guided_forward(negative_slope: float, input):
    return _guided_function().apply(input, negative_slope)


def guided_backprop(module, inputs, target=None, *, layer=None):
    """Guided-backpropagation attribution of ``target`` with respect to ``inputs`` (same shape as ``inputs``).

    Guided backprop (Springenberg et al. 2015) is the gradient with every rectifier's backward pass changed:

    - ``nn.ReLU``: the standard guided rule, ``grad_in = grad_out * (grad_out > 0) * (input > 0)``
      (what ``captum.attr.GuidedBackprop`` computes);
    - ``nn.LeakyReLU``: only positive incoming gradients pass, through LeakyReLU's own derivative,
      ``grad_in = max(grad_out, 0) * (1 if input > 0 else negative_slope)``. Captum overrides only
      ``nn.ReLU``, so on a LeakyReLU network (such as D) it silently returns the plain gradient.

    Only activation *modules* are changed; ``F.relu`` called inside a ``forward`` and any other activation
    keep their ordinary gradient. While this runs, each ReLU/LeakyReLU module's ``forward`` is replaced by an
    out-of-place call to a custom ``autograd.Function`` (so ``inplace=True`` modules work, unlike with full
    backward hooks); the replacement and any forward hook are removed afterwards, also on error. Gradients are
    taken with ``torch.autograd.grad`` with respect to a copy of ``inputs`` only: parameters' ``.grad`` and
    ``requires_grad`` are untouched. The module's train/eval mode is left as it is: use eval mode, or
    BatchNorm in training mode will update its running statistics and mix the samples of the batch.

    ``target`` says what to backpropagate, one number per sample (the per-sample numbers are summed, so
    each sample gets the gradient of its own number in eval mode):

    - ``None``: the output itself (N, or N x 1);
    - an int, or one int per sample: ``output[:, target]`` (as in Captum);
    - a callable ``target(output) -> N`` (or a scalar), e.g. ``channel_max(channels)``.

    With ``layer`` (a submodule of ``module``), ``output`` is that layer's output in the forward pass
    (the last one if it is called several times) instead of the module's.
    """
    import torch
    from torch import nn

    patched, handles, captured = [], [], {}
    try:
        for m in module.modules():
            if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                slope = float(m.negative_slope) if isinstance(m, nn.LeakyReLU) else 0.0
                patched.append((m, m.__dict__.get("forward")))
                m.forward = functools.partial(_guided_forward, slope)
        if layer is not None:
            handles.append(layer.register_forward_hook(lambda _m, _args, out: captured.__setitem__("out", out)))
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            output = module(x)
            if layer is not None:
                if "out" not in captured:
                    raise ValueError("guided_backprop: `layer` was not called in the module's forward pass")
                output = captured["out"]
            value = _per_sample(output, target, len(x))
            (grad,) = torch.autograd.grad(value.sum(), x)
        return grad
    finally:
        for handle in handles:
            handle.remove()
        for m, previous in reversed(patched):
            if previous is None:
                del m.forward
            else:
                m.forward = previous


def _per_sample(output, target, n: int):
    import torch

    if callable(target):
        value = target(output)
    else:
        if not isinstance(output, torch.Tensor):
            raise ValueError("guided_backprop: the output is not a tensor; give `target` as a callable or a `layer`")
        if target is None:
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


def saliency_map(gradients):
    """N x C x H x W gradients -> N x H x W saliency: |gradient|, max over channels."""
    return gradients.abs().amax(1)


def top_count(pixels: int, fraction: float = TOP_PIXELS) -> int:
    """How many pixels "the top ``fraction``" of ``pixels`` is: ceil(fraction * pixels), at least 1."""
    import math

    return max(1, math.ceil(round(fraction * pixels, 9)))


def top_mass_fraction(saliency, fraction: float = TOP_PIXELS):
    """Per map (N x H x W, non-negative): the share of its total mass in its top ceil(fraction * H * W) pixels.

    A flat map gives k / (H * W) (about ``fraction``); a map with all its mass in at most k pixels gives 1;
    an all-zero map gives NaN.
    """
    import torch

    flat = saliency.flatten(1).double()
    k = top_count(flat.shape[1], fraction)
    total = flat.sum(1)
    top = flat.topk(k, dim=1).values.sum(1)
    return torch.where(total > 0, top / total.clamp(min=torch.finfo(torch.float64).tiny), float("nan")).float()


def explain_filters(D, images, n_filters: int, top: int, device, batch_size: int = 256) -> dict:
    """Top images (uint8 -> [-1, 1]) of D's first ``n_filters`` last-layer maps and their guided-backprop saliency.

    Returns ``filters`` (the number used), ``indices`` (filters x top, into ``images``), ``responses``
    (filters x top), ``images`` (filters*top x C x H x W in [-1, 1]), ``saliency`` (filters*top x H x W)
    and ``mass`` (filters*top top-5% mass fractions), filter by filter.
    """
    import torch
    from torch import nn

    from ganlab import to_unit_range

    activations = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    if not activations:
        raise ValueError("guided-backprop needs a discriminator with LeakyReLU layers")
    with torch.no_grad():
        responses = torch.cat([D(to_unit_range(chunk).to(device), return_features=True)[1][-1][:, :n_filters]
                               .amax((2, 3)).float().cpu() for chunk in images.split(batch_size)])
    n_filters = responses.shape[1]
    values, indices = responses.topk(top, dim=0)  # top x filters
    values, indices = values.T.contiguous(), indices.T.contiguous()
    x = to_unit_range(images[indices.flatten()])
    channels = torch.arange(n_filters).repeat_interleave(top)
    grads = guided_backprop(D, x.to(device), channel_max(channels.to(device)), layer=activations[-1])
    saliency = saliency_map(grads.float()).cpu()
    return {"filters": n_filters, "indices": indices, "responses": values, "images": x, "saliency": saliency,
            "mass": top_mass_fraction(saliency)}


def filter_grid(found: dict, top: int):
    """Rows = filters; columns = the top images (display range) then their max-normalised saliency maps."""
    import torch
    from torchvision.utils import make_grid

    images = ((found["images"] + 1) / 2).clamp(0, 1)
    sal = found["saliency"]
    sal = sal / sal.flatten(1).amax(1).clamp(min=1e-30).view(-1, 1, 1)
    sal = sal.unsqueeze(1).expand(-1, images.shape[1], -1, -1)
    rows = [torch.cat([images[f * top:(f + 1) * top], sal[f * top:(f + 1) * top]]) for f in range(found["filters"])]
    return make_grid(torch.cat(rows), nrow=2 * top, padding=2, pad_value=0.5).clamp(0, 1)


class GuidedBackpropAnalysis(Analysis):
    name = "guided-backprop"
    description = ("Guided backprop of D's last-layer filters on their top held-out images, trained vs random D "
                   "(the paper's figure 5)")
    needs = ("discriminator", "heldout")
    options = {"filters": 6, "top": 4, "images": 1000, "batch_size": 256}
    cheap = False
    directions = {"*": None}  # how concentrated the filters' evidence is, described, not scored

    def run(self, ctx):
        import torch

        from ganlab import Discriminator

        o = ctx.options
        if o["filters"] < 1 or o["top"] < 1 or o["images"] < 1 or o["batch_size"] < 1:
            raise GanlabError("guided-backprop needs filters, top, images and batch_size >= 1 "
                              f"(got {o['filters']}, {o['top']}, {o['images']}, {o['batch_size']})")
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
        per_filter = {name: (f["responses"].mean(1), torch.nanmean(f["mass"].view(-1, o["top"]), 1))
                      for name, f in found.items()}
        rows = [[i] + [round(float(v[i]), 4) for name in models for v in per_filter[name]] for i in range(n)]
        table = Table(f"Last-layer filters: mean response of the top {o['top']} images and top-5% saliency mass",
                      ["filter", "trained: response", "trained: top-5% mass", "random: response",
                       "random: top-5% mass"], rows)
        pixels = ctx.gan.config.image_size ** 2
        floor = top_count(pixels) / pixels
        grids = [Image(f"{name} D: {n} filters x top {o['top']} images, then guided-backprop saliency",
                       filter_grid(found[name], o["top"])) for name in models]
        return Result(
            metrics={"top5_mass_trained": mass["trained"], "top5_mass_random": mass["random"],
                     "top5_mass_difference": mass["trained"] - mass["random"], "filters": n,
                     "images": len(images)},
            tables=[table], images=grids,
            text=[f"Each row is one of the first {n} feature maps of D's last conv layer: its {o['top']} held-out "
                  "images with the largest response, then their guided-backprop saliency (white = most salient). "
                  f"Top-5% mass: share of saliency in the top 5% of pixels; a flat map gives {floor:.4f}, a "
                  "map concentrated in a few pixels 1. Trained minus random > 0: the trained filters look at "
                  "more localised structure than the untrained ones."])


@hookimpl
def ganlab_register_analyses(register):
    register(GuidedBackpropAnalysis())
