"""The haar-face detector and the forget-concept analysis (the paper's section 6.2, forgetting to draw windows).

The analysis is checked on a generator with a planted unit: two maps of the 4x4 layer fire only at its
top-left cell (one for z[0] > 0, one for z[0] < 0) and, through one map of the 8x8 layer, paint a bright
7 x 7 square in the image's top-left corner; everything else stays near grey (0).
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ganlab
from ganlab import GanlabError
from ganlab.plugin.components import check_result
from ganlab_plugins import detectors as detectors_plugin
from ganlab_plugins import forget_concept as fc

PLANTED, HIDDEN = (3, 7), 5  # maps of feature layer 0 (4x4) and 1 (8x8)
SQUARE = (0, 0, 7, 7)


def _planted_generator():
    torch.manual_seed(0)
    cfg = ganlab.ModelConfig(image_size=16, channels=1, nz=8, ngf=8)
    G = ganlab.Generator(cfg).eval()
    k1, k2 = PLANTED
    with torch.no_grad():
        w = G.main[0].weight  # nz x 16 x 4 x 4: z -> 4x4 layer
        w[:, [k1, k2]] = 0
        w[0, k1, 0, 0], w[0, k2, 0, 0] = 4.0, -4.0
        w = G.main[3].weight  # 16 x 8 x 4 x 4: 4x4 -> 8x8; the planted maps feed only HIDDEN, and it only them
        w[[k1, k2]] = 0
        w[:, HIDDEN] = 0
        w[[k1, k2], HIDDEN] = 2.0
        G.main[6].weight[HIDDEN] = 2.0  # 8x8 -> image
    return cfg, G


def _square_brightness(images):
    x, y, w, h = SQUARE
    return images[:, 0, y:y + h, x:x + w].mean((1, 2))


class BrightSquare(ganlab.Detector):
    """Reports SQUARE (scaled to the image it is given) when that corner is bright, like an annotator would."""

    name = "bright-square"
    description = "the planted square"

    def __init__(self, fire=True):
        self.fire = fire

    def detect(self, image):
        s = image.shape[1] / 16
        x, y, w, h = (round(v * s) for v in SQUARE)
        if self.fire and image[y:y + h, x:x + w].mean() > 191:  # > 0.5 in G's [-1, 1]
            return [(x, y, w, h)]
        return []


def _context(G, cfg, tmp_path, detectors=None, **options):
    defaults = {name: getattr(value, "default", value) for name, value in fc.ForgetConcept.options.items()}
    return ganlab.RunContext(gan=SimpleNamespace(config=cfg, generator=G), device=torch.device("cpu"), seed=0,
                             options={**defaults, **options}, detectors=detectors or {})


# --- haar-face -------------------------------------------------------------------------------------------

def test_haar_finds_the_astronauts_face_and_only_it():
    from skimage import data

    boxes = detectors_plugin.HaarFace().detect(data.astronaut())
    assert len(boxes) == 1 and all(type(v) is int for v in boxes[0])
    x, y, w, h = boxes[0]
    # her face (looked at by hand) spans about x 180-270, y 40-140 of the 512 x 512 image
    assert 180 <= x + w / 2 <= 270 and 40 <= y + h / 2 <= 140 and 60 <= w <= 130


def test_haar_finds_no_face_on_photos_without_one():
    from skimage import data

    haar = detectors_plugin.HaarFace()
    for image in (data.coffee(), data.chelsea(), data.rocket(), data.camera()):
        assert haar.detect(image) == []


def test_haar_works_on_grey_images():
    from skimage import data
    from skimage.color import rgb2gray

    haar = detectors_plugin.HaarFace()
    grey = (rgb2gray(data.astronaut()) * 255).round().astype(np.uint8)
    for image in (grey, grey[:, :, None]):
        (x, y, w, h), = haar.detect(image)
        assert 180 <= x + w / 2 <= 270 and 40 <= y + h / 2 <= 140
    assert haar.detect(grey[:20, :20]) == []  # smaller than the cascade's window


def test_haar_says_what_to_install_without_cascades(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(GanlabError, match="opencv-python-headless<5"):
        detectors_plugin.HaarFace().detect(np.zeros((64, 64), np.uint8))


def test_detect_boxes_upscales_small_samples_and_scales_the_boxes_back():
    import torch.nn.functional as F
    from skimage import data

    haar = detectors_plugin.HaarFace()
    full = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    small = F.interpolate(full, size=(64, 64), mode="bilinear", antialias=True).clamp(-1, 1)
    assert fc.detect_boxes(haar, small, size=0) == [[]]  # a 12-pixel face is below the 24-pixel window
    (found,), = fc.detect_boxes(haar, small, size=256)
    (reference,), = (np.array(b) / 8 for b in [haar.detect(data.astronaut())])  # the full-size box, scaled
    centre = np.array([found[0] + found[2] / 2, found[1] + found[3] / 2])
    assert np.abs(centre - (reference[:2] + reference[2:] / 2)).max() <= 2.5
    assert abs(found[2] - reference[2]) <= 3


# --- the pieces of forget-concept ------------------------------------------------------------------------

def test_box_masks_by_hand():
    masks = fc.box_masks({0: [(0, 0, 7, 7)], 2: [(9, 9, 1, 1)], 3: [(4, 8, 8, 4), (100, 100, 5, 5)]}, 4, 16, 4)
    expected = np.zeros((4, 4, 4), bool)
    expected[0, :2, :2] = True  # cell centres at 2, 6, 10, 14 px: 2 and 6 lie in [0, 7)
    expected[2, 2, 2] = True  # no centre inside: the cell holding the box's centre (9.5, 9.5)
    expected[3, 2, 1:3] = True  # x [4, 12) holds centres 6, 10; y [8, 12) holds 10; off-image box: nothing
    assert (masks == expected).all()


def test_load_boxes_reads_and_checks_the_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"3": [[1, 2, 3, 4]], "0": []}))
    assert fc.load_boxes(str(path), 10) == {3: [(1.0, 2.0, 3.0, 4.0)], 0: []}
    for bad, message in (({"10": [[0, 0, 1, 1]]}, "outside the bank of 10"), ({"x": []}, "not a sample index"),
                         ({"1": [[0, 0, 0, 1]]}, "positive width"), ([1], "must hold an object")):
        path.write_text(json.dumps(bad))
        with pytest.raises(GanlabError, match=message):
            fc.load_boxes(str(path), 10)
    with pytest.raises(GanlabError, match="cannot read"):
        fc.load_boxes(str(tmp_path / "missing.json"), 10)


def test_activation_modules_are_the_feature_layers():
    cfg, G = _planted_generator()
    z = ganlab.sample_latent(cfg, 4, torch.Generator().manual_seed(1))
    seen = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.clone())) for m in fc.activation_modules(G)]
    with torch.no_grad():
        _, features = G(z, return_features=True)
    for handle in handles:
        handle.remove()
    assert len(seen) == len(features) == 2 and all(torch.equal(a, b) for a, b in zip(seen, features))


def test_planted_square_is_found_dropped_and_gone():
    cfg, G = _planted_generator()
    z = ganlab.sample_latent(cfg, 150, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images, features = G(z, return_features=True)
    brightness = _square_brightness(images)
    outside = images[:, 0, 8:, 8:]
    assert (brightness > 0.5).float().mean() > 0.9 and outside.abs().max() < 0.05  # the square is drawn
    boxes = {i: [SQUARE] for i in range(len(z)) if brightness[i] > 0.5}
    fit = fc.fit_concept_maps(features[0], boxes, 16, seed=0)
    assert fit.positives == 4 * len(boxes) and fit.negatives == fit.positives  # 2 x 2 cells per box, balanced
    assert all(fit.weights[k] > 0 and k in fit.channels for k in PLANTED)
    assert set(np.argsort(fit.weights)[-2:]) == set(PLANTED)  # the strongest evidence of all maps
    assert set(fit.channels) == set(np.flatnonzero(fit.weights > 0))
    after = fc.generate_without(G, z, 0, fit.channels.tolist())
    assert brightness.mean() > 0.9 and _square_brightness(after).abs().max() < 0.05
    # the same by hand: zero those maps after layer 0's ReLU and run the rest of G
    x, relus = z, 0
    with torch.no_grad():
        for layer in G.main:
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                if relus == 0:
                    x[:, fit.channels] = 0
                relus += 1
    assert torch.allclose(after, x, atol=1e-6)
    assert not G.main[2]._forward_hooks  # the hook is gone
    assert torch.equal(G(z[:5]), images[:5])


# --- the component ---------------------------------------------------------------------------------------

def test_component_with_a_detector_forgets_the_square(tmp_path):
    cfg, G = _planted_generator()
    ctx = _context(G, cfg, tmp_path, {"bright-square": BrightSquare()}, detector="bright-square", bank=60,
                   show=32)
    result = check_result(fc.ForgetConcept().run(ctx), "forget-concept")
    shown = ganlab.sample_latent(cfg, 32, torch.Generator().manual_seed(1))  # seed + 1, as documented
    with torch.no_grad():
        expected = (_square_brightness(G(shown)) > 0.5).float().mean().item()
    m = result.metrics
    assert m["detections_before"] == pytest.approx(expected) and expected > 0.8
    assert m["detections_after"] == 0 < m["detections_before"]
    assert 2 <= m["maps_dropped"] <= m["maps_total"] == 16 and m["positives"] == 4 * m["images_with_boxes"]
    assert m["images_with_boxes"] > 50 and 0 < m["pixel_change"] < 1
    assert len(result.images) == 3 and result.tables[1].rows[1][2] == 0
    assert {row[0] for row in result.tables[0].rows[:2]} == set(PLANTED)
    assert result.verdict == (f"bright-square fired on {m['images_with_boxes']} of 60 bank samples; on 32 new samples "
                              f"it fires on {round(32 * expected)} with all maps and on 0 without the "
                              f"{m['maps_dropped']} of 16 maps tied to them")


def test_component_without_positives_explains_instead_of_dropping(tmp_path):
    cfg, G = _planted_generator()
    ctx = _context(G, cfg, tmp_path, {"bright-square": BrightSquare(fire=False)}, detector="bright-square", bank=20)
    result = check_result(fc.ForgetConcept().run(ctx), "forget-concept")
    assert result.metrics == {"images_with_boxes": 0}
    assert result.verdict == ("no box on any of the 20 bank samples (from the bright-square detector): no concept to "
                              "forget, no map dropped")
    assert "No positives" in result.text[0] and "forget-concept.boxes" in result.text[1]
    assert result.images[0].image.shape[-1] == 2 + 10 * 18  # the bank, 10 per row, to annotate
    with pytest.raises(GanlabError, match="no boxes"):
        fc.ForgetConcept().run(_context(G, cfg, tmp_path, detector="nothing-registered"))
    for bad in ({"negative_ratio": 0.0}, {"C": -1.0}):  # strict bounds, which an Option's min cannot say
        with pytest.raises(GanlabError, match="needs negative_ratio > 0 and C > 0"):
            fc.ForgetConcept().run(_context(G, cfg, tmp_path, detector="nothing-registered", **bad))
    with pytest.raises(GanlabError, match="must index G's 2 feature layers"):
        fc.ForgetConcept().run(_context(G, cfg, tmp_path, {"bright-square": BrightSquare()}, detector="bright-square",
                                        bank=4, layer=2))


def test_component_in_a_report_with_a_boxes_file(tiny_run, tmp_path):
    from ganlab.plugin import registry
    from ganlab.report import make_report

    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"0": [[0, 0, 8, 8]], "3": [[4, 4, 8, 8]]}))
    try:
        registry.reset()  # forget-concept is a built-in: it loads through its entry point
        data, out = make_report(tiny_run, only=["forget-concept"], out=tmp_path / "r", device="cpu",
                                progress=False, settings={"forget-concept.boxes": str(path),
                                                          "forget-concept.detector": "", "forget-concept.bank": 20})
    finally:
        registry.reset()
    run, = data.components
    assert run.status == "ok", run.error
    m = run.result.metrics
    # layer -2 of the 16x16 G is 4x4 with ngf * 2 = 16 maps; each 8 x 8 box covers 2 x 2 cells
    assert m["maps_total"] == 16 and m["positives"] == 8 and m["negatives"] == 8 and m["images_with_boxes"] == 2
    assert 0 <= m["maps_dropped"] <= 16 and "detections_before" not in m
    assert run.result.verdict == (f"the boxes in {path} cover 2 of 20 bank samples; dropping the {m['maps_dropped']} "
                                  f"of 16 maps tied to them changes new samples' pixels by {m['pixel_change']:.3f} on "
                                  "average ([0, 1] units)")
    saved = json.loads((out / "metrics.json").read_text())["components"]["forget-concept"]
    assert saved["status"] == "ok"
