"""Analysis ``forget-concept``: make G forget to draw something (the paper's section 6.2 and figure 6, where
dropping the maps that drew 52 boxed windows made the windows vanish or turn into other things).

The boxes on a bank of ``bank`` samples (z seeded with ``ctx.seed``) come from ``boxes`` (a JSON file
``{"sample index": [[x, y, w, h], ...]}`` in the generated image's pixels) or else from the ``detector`` run on the
bank upscaled to ``detect_size`` pixels. A logistic regression on one G layer's feature vectors tells locations
inside a box from ``negative_ratio`` times as many random ones outside; the maps weighted above ``threshold`` are
zeroed everywhere (a hook on that layer's ReLU) and ``show`` new samples (seed ``ctx.seed + 1``) are drawn with and
without them. ``layer = -2``: for the paper's 64 x 64 bedroom G the 16 x 16 layer with 256 maps, the only reading
of "second highest convolution layer" with room for the ~200 maps they dropped.

Metrics: ``maps_dropped`` of ``maps_total``; ``images_with_boxes``, ``positives`` and ``negatives`` (locations
fitted on); ``fit_accuracy``; ``pixel_change`` (mean |difference| of the new samples with and without the maps,
[0, 1] units); ``detections_before``/``_after`` (the share of new samples with a detection).
"""
import json
import math
from pathlib import Path
from typing import NamedTuple

from ganlab import Analysis, GanlabError, Image, Option, Result, Table, hookimpl

from . import generate


class ConceptFit(NamedTuple):
    weights: object  # numpy float C: the regression's weight per feature map (on standardised features)
    channels: object  # numpy int: the maps with weight > threshold, in increasing order
    positives: int
    negatives: int
    accuracy: float  # on the fitted locations


def load_boxes(path: str, bank: int) -> dict[int, list[tuple[float, float, float, float]]]:
    where = f"forget-concept's boxes file {path}"
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise GanlabError(f"forget-concept cannot read the boxes file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GanlabError(f"{where} is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise GanlabError(f"{where} must hold an object {{\"sample index\": [[x, y, w, h], ...]}}")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    boxes: dict[int, list] = {}
    for key, items in raw.items():
        try:
            index = int(key)
        except ValueError:
            raise GanlabError(f"{where}: key {key!r} is not a sample index") from None
        if not 0 <= index < bank:
            raise GanlabError(f"{where}: sample {index} is outside the bank of {bank} samples (indices 0.."
                              f"{bank - 1}); set forget-concept.bank")
        if not isinstance(items, list) or not all(isinstance(b, list) and len(b) == 4 and all(map(number, b))
                                                  and b[2] > 0 and b[3] > 0 for b in items):
            raise GanlabError(f"{where}: sample {key} needs a list of [x, y, width, height] with positive width "
                              "and height")
        boxes[index] = [tuple(float(v) for v in b) for b in items]
    return boxes


def box_masks(boxes, n: int, image_size: int, resolution: int):
    """Bool N x r x r: the layer's cells whose centre lies in a box, and at least the cell holding the box's
    centre. ``boxes``: {index: [(x, y, w, h), ...]} in pixels of an image_size image."""
    import numpy as np

    cell = image_size / resolution
    centres = (np.arange(resolution) + 0.5) * cell
    masks = np.zeros((n, resolution, resolution), dtype=bool)
    for index, image_boxes in boxes.items():
        for x, y, w, h in image_boxes:
            masks[index] |= ((centres >= y) & (centres < y + h))[:, None] & ((centres >= x) & (centres < x + w))
            cx, cy = x + w / 2, y + h / 2
            if 0 <= cx < image_size and 0 <= cy < image_size:
                masks[index, min(int(cy / cell), resolution - 1), min(int(cx / cell), resolution - 1)] = True
    return masks


def fit_concept_maps(features, boxes, image_size: int, *, negative_ratio: float = 1.0, C: float = 1.0,
                     threshold: float = 0.0, seed: int = 0) -> ConceptFit:
    """Logistic regression of "inside a box" on one layer's feature vectors (N x C x r x r maps): every location
    inside a box against ``negative_ratio`` times as many random ones outside, standardised (which keeps each
    weight's sign)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    maps = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
    n, channels, res, _ = maps.shape
    inside = box_masks(boxes, n, image_size, res).ravel()
    positive, outside = np.flatnonzero(inside), np.flatnonzero(~inside)
    if len(positive) == 0 or len(outside) == 0:
        raise ValueError(f"need locations inside and outside boxes, got {len(positive)} and {len(outside)}")
    count = min(len(outside), max(1, int(round(negative_ratio * len(positive)))))
    negative = np.random.default_rng(seed).choice(outside, size=count, replace=False)
    vectors = maps.transpose(0, 2, 3, 1).reshape(-1, channels)
    X = StandardScaler().fit_transform(vectors[np.concatenate([positive, negative])])
    y = np.r_[np.ones(len(positive)), np.zeros(count)]
    model = LogisticRegression(C=C, max_iter=5000).fit(X, y)
    weights = model.coef_[0]
    return ConceptFit(weights, np.flatnonzero(weights > threshold), len(positive), count, float(model.score(X, y)))


def activation_modules(G):
    """G's ReLU modules in forward order: the i-th one outputs ``G(z, return_features=True)[1][i]``."""
    from torch import nn

    return [m for m in G.modules() if isinstance(m, nn.ReLU)]


def generate_without(G, z, layer_index: int, channels):
    """G(z) with the given feature maps of feature layer ``layer_index`` zeroed everywhere (CPU, in [-1, 1])."""
    import torch

    drop = torch.as_tensor(list(channels), dtype=torch.long)
    handle = activation_modules(G)[layer_index].register_forward_hook(
        lambda _module, _inputs, output: output.index_fill(1, drop.to(output.device), 0))
    try:
        return generate(G, z, next(G.parameters()).device)
    finally:
        handle.remove()


def detect_boxes(detector, images, size: int = 0, progress=None) -> list[list[tuple[int, int, int, int]]]:
    """The detector's boxes on each image (G's output in [-1, 1]; upscaled to ``size`` first), in its own pixels."""
    import torch.nn.functional as F

    from ganlab import to_uint8

    side, images = images.shape[-1], images.detach().float().cpu()
    if size and size > side:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    arrays = [p[:, :, 0] if p.shape[2] == 1 else p for p in to_uint8(images).permute(0, 2, 3, 1).numpy()]
    scale = side / images.shape[-1]
    found = []
    for array in (progress or (lambda it, **kw: it))(arrays, desc=f"{detector.name} on {len(arrays)} samples",
                                                      total=len(arrays)):
        boxes = []
        for x, y, w, h in detector.detect(array):
            x0, y0 = max(0, round(x * scale)), max(0, round(y * scale))
            x1, y1 = min(side, round((x + w) * scale)), min(side, round((y + h) * scale))
            if x1 > x0 and y1 > y0:
                boxes.append((x0, y0, x1 - x0, y1 - y0))
        found.append(boxes)
    return found


def outline(images, boxes):
    rgb = ((images.float() + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1).clone()
    red = rgb.new_tensor([1.0, 0.0, 0.0]).view(3, 1)
    height, width = rgb.shape[-2:]
    for image, image_boxes in zip(rgb, boxes):
        for x, y, w, h in image_boxes:
            x0, y0 = min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)
            x1, y1 = min(max(math.ceil(x + w) - 1, x0), width - 1), min(max(math.ceil(y + h) - 1, y0), height - 1)
            image[:, y0:y1 + 1, x0] = image[:, y0:y1 + 1, x1] = red
            image[:, y0, x0:x1 + 1] = image[:, y1, x0:x1 + 1] = red
    return rgb


def bank_to_annotate(bank, source: str, image_size: int) -> Result:
    from torchvision.utils import make_grid

    return Result(metrics={"images_with_boxes": 0},
                  verdict=f"no box on any of the {len(bank)} bank samples (from {source}): no concept to forget, "
                          "no map dropped",
                  images=[Image(f"the bank of {len(bank)} samples",
                                make_grid(bank, nrow=10, normalize=True, value_range=(-1, 1)))],
                  text=[f"No positives: {source} gave no box on the {len(bank)} bank samples, so there is no concept "
                        "to forget and nothing was dropped.",
                        f"Draw boxes on the bank shown here (sample i is row i // 10, column i % 10, {image_size} x "
                        f"{image_size} pixels each) and give them as --set forget-concept.boxes=FILE.json with "
                        "{\"sample index\": [[x, y, width, height], ...]}, or name another detector with --set "
                        "forget-concept.detector=NAME."])


class ForgetConcept(Analysis):
    name = "forget-concept"
    description = "Drop the G feature maps that draw a boxed concept (the paper's 'forgetting windows', sec. 6.2)"
    options = {
        "boxes": Option("", "a JSON file of boxes per sample index, used instead of the detector"),
        "detector": Option("haar-face", "the registered detector that boxes the concept", of="detectors"),
        "bank": Option(150, "samples drawn to find feature maps that fire inside boxes", min=1),
        "detect_size": Option(256, "pixels the samples are upscaled to before detection (0 = as generated)", min=0),
        "layer": Option(-2, "the generator layer whose feature maps are dropped (negative counts from the end)"),
        "negative_ratio": Option(1.0, "feature-map activations outside boxes per one inside (must be > 0)"),
        "C": Option(1.0, "inverse regularisation of the logistic regression that picks maps (must be > 0)"),
        "threshold": Option(0.0, "a map is dropped when its logistic-regression weight is above this"),
        "show": Option(64, "samples shown before and after", min=1)}
    directions = {"*": None}  # what the concept's removal did, not a score of the GAN

    def run(self, ctx):
        import torch

        from ganlab import sample_latent

        o, cfg, G = ctx.options, ctx.gan.config, ctx.gan.generator.eval()
        if o["negative_ratio"] <= 0 or o["C"] <= 0:
            raise GanlabError("forget-concept needs negative_ratio > 0 and C > 0")
        detector = ctx.detectors.get(o["detector"]) if o["detector"] else None
        if not o["boxes"] and detector is None:
            known = ", ".join(sorted(ctx.detectors)) or "none registered"
            raise GanlabError(f"forget-concept has no boxes: set forget-concept.boxes=FILE.json or "
                              f"forget-concept.detector to a registered detector ({known})")
        z = sample_latent(cfg, o["bank"], torch.Generator().manual_seed(ctx.seed))
        with torch.no_grad():
            outputs = [G(chunk.to(ctx.device), return_features=True) for chunk in z.split(64)]
        bank, depth = torch.cat([images.cpu() for images, _ in outputs]), len(outputs[0][1])
        if not -depth <= o["layer"] < depth:
            raise GanlabError(f"forget-concept.layer must index G's {depth} feature layers (-{depth} .. {depth - 1})")
        layer = o["layer"] % depth
        features = torch.cat([maps[layer].cpu() for _, maps in outputs])
        if o["boxes"]:
            boxes, source = load_boxes(o["boxes"], o["bank"]), f"the boxes in {o['boxes']}"
        else:
            boxes = dict(enumerate(detect_boxes(detector, bank, o["detect_size"], ctx.progress)))
            source = f"the {detector.name} detector"
        if not any(boxes.values()):
            return bank_to_annotate(bank, source, cfg.image_size)
        try:
            fit = fit_concept_maps(features, boxes, cfg.image_size, negative_ratio=o["negative_ratio"], C=o["C"],
                                   threshold=o["threshold"], seed=ctx.seed)
        except ValueError as exc:
            raise GanlabError(f"forget-concept cannot fit: {exc}; draw smaller boxes or use a lower layer") from None
        res = features.shape[-1]
        where = f"G's feature layer {layer} of {depth} ({features.shape[1]} maps at {res} x {res})"
        return self.forget(ctx, fit, layer, bank, boxes, detector, where, source)

    @staticmethod
    def forget(ctx, fit, layer, bank, boxes, detector, where: str, source: str) -> Result:
        import torch
        from torchvision.utils import make_grid

        from ganlab import sample_latent

        o, G = ctx.options, ctx.gan.generator
        boxed = sorted(i for i, b in boxes.items() if b)
        shown = sample_latent(ctx.gan.config, o["show"], torch.Generator().manual_seed(ctx.seed + 1))
        before, after = generate(G, shown, ctx.device), generate_without(G, shown, layer, fit.channels.tolist())
        metrics = {"maps_dropped": len(fit.channels), "maps_total": len(fit.weights), "images_with_boxes": len(boxed),
                   "positives": fit.positives, "negatives": fit.negatives, "fit_accuracy": fit.accuracy,
                   "pixel_change": ((after - before).abs().mean() / 2).item()}
        nrow = max(1, int(len(shown) ** 0.5))
        images = [Image("bank samples with their boxes",
                        make_grid(outline(bank[boxed[:32]], [boxes[i] for i in boxed[:32]]), nrow=8)),
                  Image("new samples, all feature maps", make_grid(before, nrow=nrow, normalize=True,
                                                                   value_range=(-1, 1))),
                  Image(f"the same z without the {len(fit.channels)} dropped maps",
                        make_grid(after, nrow=nrow, normalize=True, value_range=(-1, 1)))]
        tables = [Table("highest regression weights (standardised features)", ["map", "weight", "dropped"],
                        [[int(c), round(float(fit.weights[c]), 4), bool(fit.weights[c] > o["threshold"])]
                         for c in fit.weights.argsort()[::-1][:10]])]
        text = [f"Fitted on {where}: {fit.positives} locations inside {source} on {len(boxed)} of {len(bank)} bank "
                f"samples against {fit.negatives} random locations outside them (fit accuracy {fit.accuracy:.3f}); the "
                f"{len(fit.channels)} maps with a weight above {o['threshold']} were zeroed at all locations."]
        dropped = f"the {len(fit.channels)} of {len(fit.weights)} maps tied to them"
        verdict = (f"{source} cover {len(boxed)} of {len(bank)} bank samples; dropping {dropped} changes new samples' "
                   f"pixels by {metrics['pixel_change']:.3f} on average ([0, 1] units)")
        if detector is not None:
            hits = [detect_boxes(detector, x, o["detect_size"], ctx.progress) for x in (before, after)]
            rows = [[label, len(shown), sum(1 for b in h if b), sum(len(b) for b in h)]
                    for label, h in zip(("all feature maps", "without the dropped maps"), hits)]
            metrics.update(detections_before=rows[0][2] / len(shown), detections_after=rows[1][2] / len(shown))
            tables.append(Table(f"{detector.name} on the {len(shown)} new samples",
                                ["generator", "samples", "with a detection", "boxes"], rows))
            verdict = (f"{detector.name} fired on {len(boxed)} of {len(bank)} bank samples; on {len(shown)} new "
                       f"samples it fires on {rows[0][2]} with all maps and on {rows[1][2]} without {dropped}")
        elif o["detector"]:
            text.append(f"No detector {o['detector']!r} is registered, so detections were not counted.")
        return Result(metrics=metrics, tables=tables, images=images, text=text, verdict=verdict)


@hookimpl
def ganlab_register_analyses(register):
    register(ForgetConcept())
