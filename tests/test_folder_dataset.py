"""A user's own labelled images: layouts, the seeded held-out split, and the probe end to end on them."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import ganlab
from ganlab.cli import cli
from ganlab.errors import GanlabError
from ganlab.plugin import registry

CLASSES = ("circle", "cross", "square")


def _picture(kind: str, rng: np.random.Generator, size: int = 16) -> Image.Image:
    """A noisy RGB picture whose class is visible: a bright shape in a class-specific place."""
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    if kind == "circle":
        yy, xx = np.mgrid[:size, :size]
        image[(yy - 4) ** 2 + (xx - 4) ** 2 < 10] = 230
    elif kind == "cross":
        image[size // 2 - 1:size // 2 + 1, :] = 230
        image[:, size // 2 - 1:size // 2 + 1] = 230
    else:
        image[9:15, 9:15] = 230
    return Image.fromarray(image)


def _write_tree(root, per_class: dict[str, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    for kind, count in per_class.items():
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _picture(kind, rng).save(root / kind / f"{i:03d}.png")


def test_train_test_tree_is_labelled_with_a_held_out_split(tmp_path):
    _write_tree(tmp_path / "train", {c: 4 for c in CLASSES})
    _write_tree(tmp_path / "test", {c: 2 for c in CLASSES}, seed=1)
    layout = ganlab.dataset_source("folder").layout(tmp_path)
    assert layout.classes == CLASSES and layout.heldout == "test" and layout.splits == ("train", "test")
    images, labels = ganlab.load_split("folder", "test", data_root=tmp_path, image_size=16, progress=False)
    assert images.shape == (6, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_different_class_sets_are_a_clear_error(tmp_path):
    _write_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    _write_tree(tmp_path / "test", {"cat": 2, "cow": 2})
    with pytest.raises(GanlabError, match=r"different class folders \(only in train: dog; only in test: cow\)"):
        ganlab.dataset_source("folder").layout(tmp_path)


def test_class_folders_without_splits_get_a_seeded_stratified_split(tmp_path):
    _write_tree(tmp_path, {"a": 10, "b": 20, "c": 5})
    layout = ganlab.dataset_source("folder").layout(tmp_path)
    assert layout.classes == ("a", "b", "c") and layout.heldout == "test" and "all" in layout.splits
    train = ganlab.open_split("folder", "train", data_root=tmp_path, image_size=16)
    test = ganlab.open_split("folder", "test", data_root=tmp_path, image_size=16)
    whole = ganlab.open_split("folder", "all", data_root=tmp_path, image_size=16)
    train_idx, test_idx = set(train.base.indices), set(test.base.indices)
    assert not train_idx & test_idx and len(train_idx | test_idx) == len(whole) == 35
    # 20% of each class, as sklearn's stratified split would choose
    assert np.bincount([whole.base.targets[i] for i in test_idx]).tolist() == [2, 4, 1]
    again = ganlab.open_split("folder", "test", data_root=tmp_path, image_size=16)
    assert again.base.indices == test.base.indices  # seeded: the same every time


def test_folders_that_cannot_be_split_as_meant_are_one_line_errors(tmp_path):
    _write_tree(tmp_path / "mixed", {"cat": 4, "dog": 4})  # the classes were never moved into train/
    _write_tree(tmp_path / "mixed" / "test", {"cat": 2, "dog": 2})
    small = tmp_path / "small"
    _write_tree(small, {c: 2 for c in CLASSES})  # 20% of 6 images cannot hold one of each of 3 classes
    for root, words in ((tmp_path / "mixed", "beside a test/ folder but no train/ folder"),
                        (small, "6 images in 3 class folders are too few to hold out 20% of each class")):
        result = CliRunner().invoke(cli, ["train", "--dataset", "folder", "--data-root", str(root), "--epochs", "1",
                                          "--out", str(tmp_path / "run")])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "run").exists()


def test_a_class_named_all_is_a_class_in_a_folder_of_classes(tmp_path):
    _write_tree(tmp_path, {"all": 5, "none": 5})
    whole = ganlab.open_split("folder", "all", data_root=tmp_path, image_size=16)
    assert sorted(whole.base.targets) == [0] * 5 + [1] * 5


def test_unlabelled_folder_has_no_labels_and_no_held_out_split(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _picture("circle", rng).save(tmp_path / f"{i}.png")
    layout = ganlab.dataset_source("folder").layout(tmp_path)
    assert layout.classes is None and layout.heldout is None
    _, labels = ganlab.load_split("folder", data_root=tmp_path, image_size=16, progress=False)
    assert labels.tolist() == [-1, -1, -1]


def _train_on_pictures(root, per_class: int, width: int, epochs: int) -> CliRunner:
    """Writes root/pictures/{train,test}/<class>/ and trains root/run on it with the real CLI (cwd = root)."""
    _write_tree(root / "pictures" / "train", {c: per_class for c in CLASSES})
    _write_tree(root / "pictures" / "test", {c: per_class // 2 for c in CLASSES}, seed=1)
    registry.reset()
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "--dataset", "folder", "--data-root", "pictures", "--image-size", "16",
                                  "--ngf", str(width), "--ndf", str(width), "--nz", "8", "--epochs", str(epochs),
                                  "--batch-size", "32", "--out", "run", "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    return runner


def test_probe_runs_end_to_end_on_a_labelled_tree(tmp_path, monkeypatch):
    """`ganlab train --dataset folder` then `ganlab report`: svm-probe and d-score run, and the probe can read."""
    monkeypatch.chdir(tmp_path)
    runner = _train_on_pictures(tmp_path, per_class=40, width=8, epochs=2)
    settings = {"labels_per_class": "5,all", "draws": 2, "baselines": "pixels,random-d", "umap": "false",
                "C_grid": "0.001,0.01,0.1"}
    args = [a for k, v in settings.items() for a in ("--set", f"svm-probe.{k}={v}")]
    result = runner.invoke(cli, ["report", "run", "--only", "svm-probe,d-score", "--out", "report", "--quiet",
                                 "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["dataset"] == "folder"
    probe = metrics["components"]["svm-probe"]
    assert probe["status"] == "ok" and metrics["components"]["d-score"]["status"] == "ok"
    assert metrics["components"]["d-score"]["metrics"]["images"] == 60  # the held-out test/ folder
    # three easy classes: both the pixels and D's features separate them far above chance (1/3)
    assert probe["metrics"]["pixels.all.accuracy"] > 0.9 and probe["metrics"]["d.all.accuracy"] > 0.8
    assert "  svm-probe: ok" in result.stderr


def test_held_out_numbers_of_a_model_that_saw_the_held_out_images_are_flagged(tmp_path, monkeypatch):
    """Trained on a split that holds the test images: a problem (exit 1). Trained on a folder that has grown since
    (its seeded held-out split is drawn over the new count): a warning on the page, exit 0."""
    import shutil

    monkeypatch.chdir(tmp_path)
    _write_tree(tmp_path / "pictures", {c: 10 for c in CLASSES})
    runner = CliRunner()
    for split in ("all", "train"):
        trained = runner.invoke(cli, ["train", "--dataset", "folder", "--data-root", "pictures", "--split", split,
                                      "--image-size", "16", "--ngf", "4", "--ndf", "4", "--nz", "8", "--epochs", "1",
                                      "--out", f"run-{split}", "--device", "cpu"])
        assert trained.exit_code == 0, trained.output
    report = ["--only", "d-score", "--quiet", "--device", "cpu"]
    result = runner.invoke(cli, ["report", "run-all", *report, "--out", "r1"])
    assert result.exit_code == 1
    assert "were trained on the 'all' split, which holds the held-out 'test'" in result.output
    shutil.copytree(tmp_path / "pictures", tmp_path / "elsewhere")  # images it was not trained on: no problem
    assert runner.invoke(cli, ["report", "run-all", *report, "--data-root", "elsewhere", "--out", "r0"]).exit_code == 0
    assert runner.invoke(cli, ["report", "run-train", *report, "--out", "r2"]).exit_code == 0
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["warnings"] == []
    _write_tree(tmp_path / "pictures", {"circle": 12})  # two more circles: the seeded split is drawn anew
    assert runner.invoke(cli, ["report", "run-train", *report, "--out", "r3"]).exit_code == 0
    warnings = json.loads((tmp_path / "r3" / "metrics.json").read_text())["warnings"]
    assert warnings and "holds 25 images, 24 when G and D were trained" in warnings[0]


def test_features_cached_for_one_folder_are_never_used_for_another(tmp_path, monkeypatch):
    """Two folders with the same splits and counts but other pictures: the second report's numbers are its own."""
    import shutil

    monkeypatch.chdir(tmp_path)
    runner = _train_on_pictures(tmp_path, per_class=6, width=4, epochs=1)
    shutil.copytree(tmp_path / "pictures", tmp_path / "other")
    for path in (tmp_path / "other").rglob("*.png"):
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
    args = ["report", "run", "--only", "nearest-neighbours", "--set", "nearest-neighbours.samples=20", "--quiet",
            "--device", "cpu"]

    def metrics(out, *more):
        assert runner.invoke(cli, [*args, *more, "--out", out]).exit_code == 0
        return json.loads((tmp_path / out / "metrics.json").read_text())["components"]["nearest-neighbours"]["metrics"]

    first, warm = metrics("r1"), metrics("r2", "--data-root", "other")
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "fresh-cache"))
    assert warm == metrics("r3", "--data-root", "other") != first


def test_report_from_another_folder_finds_the_data(tmp_path, monkeypatch):
    """The data root is recorded as an absolute path, so a report started elsewhere still finds the images."""
    monkeypatch.chdir(tmp_path)
    runner = _train_on_pictures(tmp_path, per_class=8, width=4, epochs=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(cli, ["report", str(tmp_path / "run"), "--only", "d-score", "--out", "r", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((elsewhere / "r" / "metrics.json").read_text())["components"]["d-score"]["status"] == "ok"


def _grey_copy(source, target):
    """The same tree with each picture grey: half as one-channel PNGs, half as RGB files with equal channels."""
    for i, path in enumerate(sorted(source.rglob("*.png"))):
        grey = Image.open(path).convert("L")
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        (grey if i % 2 else grey.convert("RGB")).save(out)


@pytest.mark.parametrize("colour, flags, channels", [("grey", [], 1), ("colour", [], 3),
                                                     ("grey", ["--channels", "3"], 3)])
def test_a_folder_of_grey_images_trains_a_grey_model_unless_told(tmp_path, monkeypatch, colour, flags, channels):
    monkeypatch.chdir(tmp_path)
    _write_tree(tmp_path / "colour" / "train", {c: 3 for c in CLASSES})
    _grey_copy(tmp_path / "colour", tmp_path / "grey")
    result = CliRunner().invoke(cli, ["train", "--dataset", "folder", "--data-root", colour, "--image-size", "16",
                                      "--ngf", "4", "--ndf", "4", "--nz", "4", "--epochs", "1", "--batch-size", "8",
                                      "--out", "run", "--device", "cpu", *flags])
    assert result.exit_code == 0, result.output
    gan = ganlab.load(tmp_path / "run" / "last.pt")
    assert gan.config.channels == channels
    assert gan.sample(2, seed=0).shape[1] == channels
