"""ganlab faces: face crops from a folder of photos, as a folder dataset; unreadable files listed, never fatal."""
import json
import os

import click
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

import ganlab
from ganlab.cli import GanlabGroup
from ganlab_plugins import faces

ASTRONAUT_FACE = (176, 65, 98, 98)  # what OpenCV's cascade finds in skimage's astronaut (x, y, w, h)


def _cli():
    group = GanlabGroup()
    faces.ganlab_register_commands(group)
    return group


def _run(*args):
    return CliRunner().invoke(_cli(), ["faces", *map(str, args)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut (one face), coffee/chelsea/rocket (none), a corrupt and an empty file, a symlink loop."""
    src = tmp_path_factory.mktemp("photos")
    (src / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()).save(src / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(src / "sub" / "coffee.jpg", quality=95)
    Image.fromarray(skimage.data.chelsea()).save(src / "sub" / "deeper" / "chelsea.PNG")
    Image.fromarray(skimage.data.rocket()).save(src / "rocket.JPEG", quality=95)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image, and not named like one: ignored")
    os.symlink(src, src / "sub" / "deeper" / "loop")  # back to the top: walked once, never forever
    return src


def test_square_crop_is_centred_moved_inside_and_shrunk_to_fit():
    assert faces.square_crop((10, 20, 30, 50), 200, 200) == (0, 20, 50)  # 50 wide around x = 25 -> starts at 0
    assert faces.square_crop((100, 100, 40, 20), 200, 200) == (100, 90, 40)  # centre (120, 110), side 40
    assert faces.square_crop((180, 180, 40, 40), 200, 200) == (160, 160, 40)  # moved back inside
    assert faces.square_crop((0, 0, 300, 120), 200, 100) == (100, 0, 100)  # centre x 150; shrunk to 100


def test_walk_finds_every_image_once_despite_a_symlink_loop(photos):
    found = [p.relative_to(photos).as_posix() for p in faces.find_images(photos)]
    assert sorted(found) == ["astronaut.png", "empty.jpg", "rocket.JPEG", "sub/broken.png", "sub/coffee.jpg",
                             "sub/deeper/chelsea.PNG"]


def test_faces_finds_the_astronaut_only_and_lists_unreadable_files(photos, tmp_path):
    out = tmp_path / "crops"
    result = _run(photos, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == \
        "4 images read, 1 faces kept, 0 faces too small (< 64 px), 2 unreadable files"
    index = json.loads((out / "index.json").read_text())
    assert index["counts"] == {"images_read": 4, "faces_kept": 1, "faces_too_small": 0, "unreadable": 2}
    assert sorted(u["file"] for u in index["unreadable"]) == ["empty.jpg", "sub/broken.png"]
    assert all(u["reason"] for u in index["unreadable"])
    [(name, entry)] = index["crops"].items()
    assert entry["source"] == "astronaut.png" and tuple(entry["box"]) == ASTRONAUT_FACE
    assert entry["square"] == [176, 65, 98]
    # The crop, against the test's own: the detector's (square) box cut out with PIL and resized to 64.
    expected = Image.fromarray(skimage.data.astronaut()).crop((176, 65, 274, 163)).resize((64, 64), Image.LANCZOS)
    crop = Image.open(out / name)
    assert crop.size == (64, 64) and crop.mode == "RGB"
    assert np.array_equal(np.asarray(crop), np.asarray(expected))
    assert sorted(p.name for p in out.iterdir()) == sorted([".ganlab", name, "index.json"])
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no staging folder left

    # The output is an unlabelled folder dataset that training reads.
    layout = ganlab.dataset_source("folder").layout(out)
    assert layout.classes is None and layout.splits == ("train",)
    data = ganlab.open_split("folder", "train", data_root=out, image_size=32, channels=3)
    assert len(data) == 1 and data[0][0].shape == (3, 32, 32) and data[0][1] == -1


def test_min_size_counts_small_faces_and_size_sets_the_crop(photos, tmp_path):
    result = _run(photos, tmp_path / "a", "--min-size", 99)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == \
        "4 images read, 0 faces kept, 1 faces too small (< 99 px), 2 unreadable files"
    assert json.loads((tmp_path / "a" / "index.json").read_text())["crops"] == {}
    result = _run(photos, tmp_path / "b", "--min-size", 98, "--size", 40)
    assert result.exit_code == 0, result.output
    [png] = (tmp_path / "b").glob("*.png")
    assert Image.open(png).size == (40, 40)


def test_a_previous_run_is_kept_unless_overwrite(photos, tmp_path):
    out = tmp_path / "crops"
    assert _run(photos, out).exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    again = _run(photos, out, "--size", 32)
    assert again.exit_code == 1 and "--overwrite" in again.output and len(again.output.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before
    replaced = _run(photos, out, "--size", 32, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    [png] = out.glob("*.png")
    assert Image.open(png).size == (32, 32)
    assert json.loads((out / "index.json").read_text())["size"] == 32

    Image.new("RGB", (8, 8)).save(out / "mine.png")  # not written by faces: never deleted, even with --overwrite
    refused = _run(photos, out, "--overwrite")
    assert refused.exit_code == 1 and "mine.png, which ganlab did not write" in refused.output
    assert (out / "mine.png").exists()


def test_unknown_detector_and_sub_folders_are_one_line_errors(photos, tmp_path):
    result = _run(photos, tmp_path / "x", "--detector", "no-such-detector")
    assert result.exit_code == 1 and "no-such-detector" in result.output and not (tmp_path / "x").exists()
    (tmp_path / "y" / "class_a").mkdir(parents=True)
    result = _run(photos, tmp_path / "y")
    assert result.exit_code == 1 and "is not a ganlab faces folder" in result.output and "class_a" in result.output


def _face_free_pictures():
    """scikit-learn's and skimage's sample pictures that hold no human face, as uint8 RGB or grey."""
    from sklearn.datasets import load_sample_images

    found = dict(zip(("china", "flower"), load_sample_images().images))
    for name in ("coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel", "text", "page", "moon",
                 "hubble_deep_field", "immunohistochemistry", "logo", "clock", "colorwheel", "retina", "cell"):
        image = getattr(skimage.data, name)()
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
        found[name] = image[:, :, :3] if image.ndim == 3 else image
    return found


def test_the_face_detector_finds_no_face_where_there_is_none():
    detector = ganlab.detector("haar-face")
    found = {name: detector.detect(image) for name, image in _face_free_pictures().items()}
    assert {name: boxes for name, boxes in found.items() if boxes} == {}  # _default finds two in flower.jpg


def test_the_face_detector_keeps_finding_real_faces():
    """skimage's LFW subset (the first 100 are faces, 25 px): padded and enlarged as a photo's face would be."""
    import cv2

    detector = ganlab.detector("haar-face")
    faces = skimage.data.lfw_subset()[:100]
    enlarged = [cv2.resize(cv2.copyMakeBorder((255 * f).astype(np.uint8), 12, 12, 12, 12, cv2.BORDER_REPLICATE),
                           (147, 147)) for f in faces]
    assert sum(bool(detector.detect(face)) for face in enlarged) >= 95
    assert detector.detect(skimage.data.astronaut()) == [ASTRONAUT_FACE]


def test_the_command_registers_on_a_click_group():
    group = click.Group()
    faces.ganlab_register_commands(group)
    assert "faces" in group.commands
