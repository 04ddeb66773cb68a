"""ganlab dedup and hash-collisions: the paper's autoencoder hash finds planted duplicates; copying samples collide."""
import json

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

import ganlab
from ganlab import GanlabError
from ganlab.cli import GanlabGroup
from ganlab.data.datasets import read_exclusion_list
from ganlab.plugin import registry
from ganlab.plugin.options import resolve_options
from ganlab.report import make_report
from ganlab_plugins.memorisation import autoencoder as ae
from ganlab_plugins.memorisation import dedup, duplicates

DISTINCT = 60
EXACT = (3, 17, 42)  # planted as exact copies
NOISY = (8, 25, 50)  # planted with +-2 grey levels of uniform noise on every value
PAIRS = [(orig, DISTINCT + k) for k, orig in enumerate(EXACT + NOISY)]


pytestmark = pytest.mark.usefixtures("one_thread")  # the autoencoder's small products


def shapes_image(i: int, size: int = 32) -> np.ndarray:
    """A structured picture: 1-3 ellipses, boxes or triangles on a plain ground, drawn at 4x and downsampled."""
    rng = np.random.default_rng(1000 + i)
    big = size * 4
    image = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        kind = rng.integers(0, 3)
        x0, y0 = (int(v) for v in rng.integers(0, big * 3 // 4, 2))
        w, h = (int(v) for v in rng.integers(big // 5, big // 2, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [x0, y0, x0 + w, y0 + h]
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=colour)
    return np.asarray(image.resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A flat folder dataset: 60 distinct pictures, then 3 exact and 3 noisy copies (file order = position)."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    pictures = [shapes_image(i) for i in range(DISTINCT)]
    copies = [pictures[i] for i in EXACT]
    copies += [np.clip(pictures[i].astype(int) + rng.integers(-2, 3, pictures[i].shape), 0, 255).astype(np.uint8)
               for i in NOISY]
    for position, picture in enumerate(pictures + copies):
        Image.fromarray(picture).save(root / f"img_{position:03d}.png")
    return root


def _cli() -> GanlabGroup:
    group = GanlabGroup()
    dedup.ganlab_register_commands(group)
    return group


@pytest.fixture(scope="module")
def deduped(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("dedup") / "out"
    result = CliRunner().invoke(_cli(), ["dedup", "--dataset", "folder", "--data-root", str(planted), "--out",
                                         str(out), "--device", "cpu", "--seed", "0"])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def _numpy_hashes(state, images_uint8):
    """The hash computed independently: numpy float64 pre-activations of the saved weights, > 0, packed to hex."""
    x = images_uint8.reshape(len(images_uint8), -1).numpy().astype(np.float64) / 127.5 - 1
    h = x @ state["0.weight"].numpy().astype(np.float64).T + state["0.bias"].numpy().astype(np.float64)
    return [row.tobytes().hex() for row in np.packbits((h > 0).astype(np.uint8), axis=1)]


def test_dedup_groups_every_planted_pair_and_nothing_else(deduped, planted):
    out, output = deduped
    report = json.loads((out / "duplicates.json").read_text())
    assert report["dataset"] == "folder" and report["split"] == "train" and report["count"] == DISTINCT + 6
    assert sorted(map(sorted, report["groups"])) == sorted(map(list, PAIRS))
    assert output.splitlines()[0] == "66 images hashed, 6 duplicate groups, 6 images excluded"
    # Each group's bits, recomputed from the saved weights with numpy, are the hash of both of its images.
    state = torch.load(out / "autoencoder.pt", weights_only=True)
    assert set(state) == {"0.weight", "0.bias", "3.weight", "3.bias"} and state["0.weight"].shape == (128, 3072)
    images, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    hashes = _numpy_hashes(state, images)
    for group, bits in zip(report["groups"], report["bits"]):
        assert len(bits) == 32 and {hashes[p] for p in group} == {bits}
    assert len(set(hashes)) == DISTINCT  # every distinct picture has a hash of its own
    grid = Image.open(out / "groups.png")
    assert grid.size == (2 + 2 * 34, 2 + 6 * 34)  # 6 groups of 2, 32-pixel tiles with 2-pixel gaps


def test_the_exclusion_list_removes_one_of_each_pair_from_training(deduped, planted):
    out, _ = deduped
    text = (out / "exclude.txt").read_text()
    assert text.startswith("#")
    excluded = read_exclusion_list(out / "exclude.txt")
    assert excluded == {copy for _, copy in PAIRS}  # the first of each group (the original) is kept
    everything, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    kept, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False,
                                exclude=excluded)
    assert len(kept) == len(everything) - len(excluded) == DISTINCT
    assert torch.equal(kept, everything[:DISTINCT])


def test_identical_images_hash_identically_whatever_the_batch(deduped, planted):
    out, _ = deduped
    model = ae.load_autoencoder(out / "autoencoder.pt")
    images, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    together = ae.code_bits(model, images)
    alone = torch.cat([ae.code_bits(model, images[i:i + 1]) for i in range(len(images))])
    assert torch.equal(together, alone)
    assert torch.equal(ae.code_bits(model, images[[5, 5, 5]]), together[[5, 5, 5]])


def test_hash_input_resizes_like_the_dataset_path():
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    ours = ae.hash_input(torch.from_numpy(picture).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    pil = np.asarray(Image.fromarray(picture).resize((32, 32), Image.BILINEAR))  # what load_split does (antialiased)
    assert np.abs(ours.astype(int) - pil.astype(int)).max() <= 2
    grey = torch.from_numpy(rng.integers(0, 256, (2, 1, 32, 32)).astype(np.uint8))
    assert torch.equal(ae.hash_input(grey), grey.expand(-1, 3, -1, -1))  # 32x32 grey: repeated, not resampled


def test_hash_collisions_of_copies_and_of_noise(deduped, planted):
    out, _ = deduped
    model = ae.load_autoencoder(out / "autoencoder.pt")
    train, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    copies = duplicates.hash_collisions(model, train[order], train)
    assert copies["collision_rate"] == 1.0 and copies["collides"].all()
    assert copies["copy_rate"] == 1.0 and copies["train_copy_rate"] == pytest.approx(12 / 66)
    # Each copy's partner is the training image itself, or its planted twin (0 or <= 2 grey levels apart).
    twin = {a: b for pair in PAIRS for a, b in (pair, pair[::-1])}
    assert all(int(p) in (int(i), twin.get(int(i))) for p, i in zip(copies["partner"], order))
    assert torch.equal(ae.code_bits(model, train[copies["partner"]]), ae.code_bits(model, train[order]))
    assert copies["train_collision_rate"] == pytest.approx(12 / 66)  # the 6 planted pairs
    noise = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    found = duplicates.hash_collisions(model, noise, train)
    assert found["collision_rate"] == 0.0 and (found["partner"] == -1).all() and found["copy_rate"] == 0.0


def test_a_collision_far_apart_in_pixels_is_not_a_copy(deduped, planted):
    out, _ = deduped
    model = ae.load_autoencoder(out / "autoencoder.pt")
    train, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    shifted = (train[:10].int() + 12).clamp(0, 255).to(torch.uint8)  # about 12 grey levels brighter
    bits = ae.code_bits(model, shifted)
    collide = [ae.hex_hashes(bits)[i] == ae.hex_hashes(ae.code_bits(model, train[:10]))[i] for i in range(10)]
    found = duplicates.hash_collisions(model, shifted, train, max_rms=0.04)
    rms = (shifted.double() - train[:10].double()).div(255).pow(2).flatten(1).mean(1).sqrt()
    assert (rms > 0.04).all()  # independently: every shifted image is further than the bound from its original
    assert sum(collide) >= 1  # the hash does not see a 12-level brightness shift on some of them (2 of 10 here)
    assert found["copy_rate"] == 0.0 and found["collision_rate"] >= sum(collide) / 10
    loose = duplicates.hash_collisions(model, shifted, train, max_rms=1.0)
    assert loose["copy_rate"] == loose["collision_rate"]


class _FakeGAN:
    """What the evaluator uses of a LoadedGAN: sample(n, seed) in [-1, 1] and meta (the training split)."""

    def __init__(self, images):
        self.images, self.meta = images, {"dataset": {"name": "folder", "split": "train"}}

    def sample(self, n, seed=0):
        pick = torch.randint(0, len(self.images), (n,), generator=torch.Generator().manual_seed(seed))
        return self.images[pick]


def _context(gan, planted, tmp_path, **options):
    settings = {f"hash-collisions.{k}": v for k, v in options.items()}
    return ganlab.RunContext(gan=gan, device=torch.device("cpu"), seed=0, cache=ganlab.Cache(tmp_path / "cache"),
                             options=resolve_options(dedup.HashCollisions(), settings),
                             dataset="folder", data_root=planted, quiet=True)


def test_evaluator_with_dedups_autoencoder(deduped, planted, tmp_path):
    out, _ = deduped
    train, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    copier = _FakeGAN(ganlab.to_unit_range(train))
    result = dedup.HashCollisions().run(_context(copier, planted, tmp_path, autoencoder=str(out / "autoencoder.pt"),
                                                 samples=50))
    assert result.metrics["collision_rate"] == 1.0 and result.metrics["samples"] == 50
    assert result.metrics["train_collision_rate"] == pytest.approx(12 / 66)
    assert result.images and result.images[0].image.shape[0] == 3
    noise = _FakeGAN(torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1)
    result = dedup.HashCollisions().run(_context(noise, planted, tmp_path, autoencoder=str(out / "autoencoder.pt")))
    assert result.metrics["collision_rate"] == 0.0 and not result.images


def test_evaluator_trains_and_caches_its_own_autoencoder(planted, tmp_path, monkeypatch):
    train, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    rgb = _FakeGAN(ganlab.to_unit_range(train))
    assert dedup.HashCollisions().run(_context(rgb, planted, tmp_path, samples=30)).metrics["collision_rate"] == 1.0
    assert len(list((tmp_path / "cache" / "hash-collisions").glob("*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached autoencoder should have been used")

    monkeypatch.setattr(ae, "train_autoencoder", no_training)
    again = dedup.HashCollisions().run(_context(rgb, planted, tmp_path, samples=30))
    assert again.metrics["collision_rate"] == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_planted_pairs_hash_together_and_the_bits_match_the_cpu(planted, tmp_path):
    images, _ = ganlab.load_split("folder", "train", data_root=planted, image_size=32, channels=3, progress=False)
    model, _ = ae.train_autoencoder(images, seed=0, device="cuda")
    bits = ae.code_bits(model, images, device="cuda")
    assert sorted(map(sorted, ae.duplicate_groups(ae.hex_hashes(bits)))) == sorted(map(list, PAIRS))
    assert torch.equal(bits, ae.code_bits(model, images))
    copier = _FakeGAN(ganlab.to_unit_range(images))
    context = _context(copier, planted, tmp_path, samples=40)
    context.device = torch.device("cuda")
    assert dedup.HashCollisions().run(context).metrics["collision_rate"] == 1.0


def test_limit_reads_the_subset_that_training_uses_and_positions_skip_unreadable_files(tmp_path):
    read = {}
    subset, _ = ganlab.load_split("digits", "train", channels=3, limit=50, progress=False, report=read)
    everything, _ = ganlab.load_split("digits", "train", channels=3, progress=False)
    assert torch.equal(everything[read["positions"]], subset) and read["unreadable"] == []
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(4):
        Image.fromarray(shapes_image(i)).save(pictures / f"img_{i}.png")
    Image.fromarray(shapes_image(1)).save(pictures / "img_4.png")  # a copy of img_1, after the unreadable file
    (pictures / "img_2.png").write_bytes(b"not a picture")
    out = tmp_path / "dedup"
    result = CliRunner().invoke(_cli(), ["dedup", "--dataset", "folder", "--data-root", str(pictures), "--out",
                                         str(out), "--epochs", "1", "--device", "cpu", "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image of 5 in folder/train (first: " in result.stderr
    report = json.loads((out / "duplicates.json").read_text())
    assert report["unreadable"] == [2] and report["count"] == 4 and report["groups"] == [[1, 4]]
    assert read_exclusion_list(out / "exclude.txt") == {4}  # a position in the folder, counting the unreadable one
    result = CliRunner().invoke(_cli(), ["dedup", "--dataset", "folder", "--data-root", str(pictures), "--out",
                                         str(tmp_path / "again"), "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 1 and "--skip-bad-images" in result.output


def test_a_bad_autoencoder_file_is_a_one_line_error(tmp_path):
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(GanlabError, match="not a 3072-128-3072"):
        ae.load_autoencoder(tmp_path / "wrong.pt")
    with pytest.raises(GanlabError, match="no autoencoder"):
        ae.load_autoencoder(tmp_path / "missing.pt")


def test_in_a_report_on_a_real_checkpoint(tiny_run, deduped, tmp_path):
    out, _ = deduped
    registry.reset()  # hash-collisions is a built-in: it loads through its entry point
    try:
        make_report(tiny_run, only=["hash-collisions"], out=tmp_path / "r", device="cpu", progress=False,
                    settings={"hash-collisions.autoencoder": str(out / "autoencoder.pt"),
                              "hash-collisions.samples": "64", "hash-collisions.train_limit": "300"})
    finally:
        registry.reset()
    entry = json.loads((tmp_path / "r" / "metrics.json").read_text())["components"]["hash-collisions"]
    assert entry["status"] == "ok", entry
    metrics = entry["metrics"]
    assert metrics["samples"] == 64 and metrics["train_images"] == 300
    # The same numbers from the public pieces: G's 16x16 grey samples resized to 32x32 RGB, digits read at 32x32 RGB.
    gan = ganlab.load(tiny_run / "last.pt")
    samples = ae.hash_input(ganlab.to_uint8(gan.sample(64, seed=0)))
    assert samples.shape == (64, 3, 32, 32) and torch.equal(samples[:, 0], samples[:, 2])
    train, _ = ganlab.load_split("digits", "train", image_size=32, channels=3, limit=300, progress=False)
    found = duplicates.hash_collisions(ae.load_autoencoder(out / "autoencoder.pt"), samples, train)
    for name in ("collision_rate", "train_collision_rate", "copy_rate", "train_copy_rate",
                 "sample_self_collision_rate", "bits_used"):
        assert metrics[name] == pytest.approx(found[name]), name


def test_commands_and_evaluator_register():
    group = click.Group()
    dedup.ganlab_register_commands(group)
    assert "dedup" in group.commands
    registered = []
    dedup.ganlab_register_evaluators(registered.append)
    assert [c.name for c in registered] == ["hash-collisions"] and registered[0].needs == ("train_set",)


def test_confirmation_splits_hash_groups_by_pixel_rms():
    # Images 0, 1, 2 form a chain (0-1 and 1-2 within the bound, 0-2 not): one confirmed group. Image 3 is far.
    flat = torch.zeros(5, 3, 32, 32, dtype=torch.uint8)
    flat[1] += 8  # RMS 8/255 = 0.031 from image 0
    flat[2] += 16  # 0.031 from image 1, 0.063 from image 0
    flat[3] += 200
    flat[4] += 9  # in another hash group with image 3 only: 191/255 apart
    assert duplicates.confirm_groups(flat, [[0, 1, 2, 3], [3, 4]], 0.04) == [[0, 1, 2]]
    assert duplicates.confirm_groups(flat, [[0, 2]], 0.04) == []
    assert duplicates.confirm_groups(flat, [[0, 2], [3, 4]], 1.0) == [[0, 2], [3, 4]]
    # 8/255 is the bound itself: linked at 0.0314, split just below it.
    assert duplicates.confirm_groups(flat, [[0, 1]], 8 / 255) == [[0, 1]]
    assert duplicates.confirm_groups(flat, [[0, 1]], 7.9 / 255) == []


def test_on_digits_the_hash_alone_groups_different_digits_and_confirmation_removes_them(tmp_path):
    group = GanlabGroup()
    dedup.ganlab_register_commands(group)
    result = CliRunner().invoke(group, ["dedup", "--dataset", "digits", "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "duplicates.json").read_text())
    assert report["hash_groups"] > 10 and report["groups"] == [] and report["excluded"] == 0
    assert "--max-rms 1 keeps" in result.stdout


def test_confirmation_in_blocks_equals_the_whole_matrix():
    rng = np.random.default_rng(5)
    base = torch.from_numpy(rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    copies = (base.int() + torch.from_numpy(rng.integers(-3, 4, (6, 3, 32, 32)))).clamp(0, 255).to(torch.uint8)
    images = torch.cat([base, copies])  # image i and i + 6 are near copies, the rest far apart
    groups = [list(range(12)), [0, 3]]
    whole = duplicates.confirm_groups(images, groups, 0.04)
    assert whole == [[0, 6], [1, 7], [2, 8], [3, 9], [4, 10], [5, 11]]
    assert duplicates.confirm_groups(images, groups, 0.04, block=5) == whole
