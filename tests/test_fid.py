"""FID as papers print it (pytorch-fid's network, its weights file, its resizing) and Inception Score, checked
against pytorch-fid and clean-fid themselves on a locally written, randomly initialised weights file: nothing is
downloaded. The file's BatchNorm statistics are recomputed on real pictures (scikit-learn's digits) so the
features are not degenerate; dims 64 (the first three convolutions) keep the covariances full-rank with 70 images a
side."""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("pytorch_fid")
from conftest import run_cli  # noqa: E402
from pytorch_fid import inception  # noqa: E402
from pytorch_fid.fid_score import calculate_fid_given_paths, get_activations, save_fid_stats  # noqa: E402

from ganlab import file_sha256  # noqa: E402
from ganlab.cli import cli  # noqa: E402

OFFICIAL = "pt_inception-2015-12-05-6726825d.pth"


def _digit_pictures(folder: Path, digits: range, count: int, size: int = 32) -> Path:
    """``count`` RGB PNGs of the given digits (the three channels differ, so colour matters)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    folder.mkdir(parents=True)
    chosen = data.images[np.isin(data.target, list(digits))][:count]
    for i, image in enumerate(chosen):
        grey = (image / 16 * 255).astype(np.uint8)
        rgb = np.stack([grey, grey[::-1], grey.T], -1)
        Image.fromarray(rgb).resize((size, size), Image.NEAREST).save(folder / f"{i:03d}.png")
    return folder


def _random_fid_weights(path: Path, pictures: Path) -> None:
    """pytorch-fid's architecture, randomly initialised, BatchNorm statistics recomputed on ``pictures``."""
    built = []
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: built.append(self)):
        inception.fid_inception_v3()
    net = built[0]
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    files = sorted(pictures.glob("*.png"))[:16]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    x = torch.nn.functional.interpolate(x.float() / 255, size=(299, 299), mode="bilinear") * 2 - 1
    net.train()
    with torch.no_grad():
        net(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.eval().state_dict(), path)


@pytest.fixture(scope="module")
def fid_world(tmp_path_factory):
    """Two picture folders and a torch hub cache holding FID weights, as pytorch-fid would find them."""
    root = tmp_path_factory.mktemp("fid")
    a = _digit_pictures(root / "a", range(0, 5), 70)
    b = _digit_pictures(root / "b", range(5, 10), 70)
    weights = root / "torch-home" / "hub" / "checkpoints" / OFFICIAL
    _random_fid_weights(weights, a)
    return {"root": root, "a": a, "b": b, "home": root / "torch-home", "sha": file_sha256(weights)}


@pytest.fixture
def world(fid_world, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fid_world["home"]))
    return fid_world


def _fid(args, world, code=0) -> dict:
    result = CliRunner().invoke(cli, ["fid", *map(str, args), "--weights-sha256", world["sha"], "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]) if code == 0 else result


def _relative(x: float, y: float) -> float:
    return abs(x - y) / abs(y)


@pytest.fixture(scope="module")
def theirs(fid_world, tmp_path_factory):
    """pytorch-fid's own statistics files of both folders (dims 64) and the FID between them."""
    out = tmp_path_factory.mktemp("pytorch-fid")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(fid_world["home"]))
        for side in ("a", "b"):
            save_fid_stats([str(fid_world[side]), str(out / f"{side}.npz")], 50, "cpu", 64, num_workers=0)
        fid = calculate_fid_given_paths([str(out / "a.npz"), str(out / "b.npz")], 50, "cpu", 64, num_workers=0)
    return {"a": out / "a.npz", "b": out / "b.npz", "fid": fid}


def test_fid_equals_pytorch_fid_and_statistics_files_go_both_ways(world, theirs, tmp_path):
    ours = _fid([world["a"], world["b"], "--dims", 64, "--save-stats", tmp_path / "a.npz"], world)
    assert _relative(ours["fid"], theirs["fid"]) < 1e-4 and theirs["fid"] > 0.1
    assert ours["network"] == "pytorch-fid pt_inception-2015-12-05" and ours["weights_sha256"] == world["sha"]
    assert (ours["dims"], ours["resize"], ours["num_a"], ours["num_b"]) == (64, "pytorch-fid", 70, 70)
    assert ours["kid"] > 0  # both sides had images, so KID is given beside FID
    # pytorch-fid reads ganlab's statistics file, and ganlab reads pytorch-fid's (as for the published CIFAR-10
    # and LSUN reference statistics)
    crossed = calculate_fid_given_paths([str(tmp_path / "a.npz"), str(theirs["b"])], 50, "cpu", 64, num_workers=0)
    assert _relative(crossed, theirs["fid"]) < 1e-4
    both = _fid([theirs["a"], theirs["b"], "--dims", 64], world)
    assert _relative(both["fid"], theirs["fid"]) < 1e-4 and both["num_b"] is None and "kid" not in both


def _official(world):
    """The weights file the tests wrote where pytorch-fid looks for its download."""
    return torch.load(world["home"] / "hub" / "checkpoints" / OFFICIAL, weights_only=True)


def test_clean_fid_resizing_matches_clean_fid_with_the_same_network(world, theirs):
    cleanfid = pytest.importorskip("cleanfid.fid")
    ours = _fid([world["a"], world["b"], "--dims", 64, "--resize", "clean-fid"], world)
    with mock.patch.object(inception, "load_state_dict_from_url",
                           lambda *a, **k: _official(world)):
        net = inception.InceptionV3([0]).eval()

    def features(batch):  # clean-fid hands over 299 x 299 pixels in 0..255
        return torch.nn.functional.adaptive_avg_pool2d(net(batch / 255)[0], 1).flatten(1)

    expected = cleanfid.compute_fid(str(world["a"]), str(world["b"]), mode="clean", custom_feat_extractor=features,
                                    device=torch.device("cpu"), num_workers=0, verbose=False)
    assert _relative(ours["fid"], expected) < 1e-3 and ours["resize"] == "clean-fid"
    assert _relative(ours["fid"], theirs["fid"]) > 1e-3  # the filter matters, which is why it is named


def _inception_score_by_hand(probabilities: np.ndarray, splits: int) -> tuple[float, float]:
    """The original protocol written with scipy's KL divergence."""
    from scipy.stats import entropy

    n, scores = len(probabilities), []
    for i in range(splits):
        part = probabilities[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([entropy(p, marginal) for p in part])))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_equals_an_independent_computation(world):
    from ganlab_plugins.quality import fid

    files = sorted(world["a"].glob("*.png"))[:10] + sorted(world["b"].glob("*.png"))[:10]
    with mock.patch.object(inception, "load_state_dict_from_url",
                           lambda *a, **k: _official(world)):
        pool = get_activations(files, inception.InceptionV3([3]), 50, 2048, "cpu", num_workers=0)
    fc = _official(world)["fc.weight"].double().numpy()
    probabilities = torch.softmax(torch.from_numpy(pool @ fc.T), 1).numpy()
    expected = _inception_score_by_hand(probabilities, 5)
    images = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1) for f in files])
    logits = fid.network(sha256=world["sha"]).run(images, logits=True)["logits"]
    assert np.allclose(fid.inception_score(logits, 5), expected, rtol=1e-5)
    assert expected[0] > 1.0001  # the random network still tells pictures apart a little


def test_inception_score_of_known_distributions():
    from ganlab_plugins.quality.fid import inception_score

    assert inception_score(np.zeros((50, 1008)), 10) == pytest.approx((1.0, 0.0))  # every class equally likely
    confident = np.full((100, 1008), -50.0)
    confident[np.arange(100), np.arange(100) % 20] = 50  # 20 classes, 5 images each, certain predictions
    assert inception_score(confident, 5)[0] == pytest.approx(20, rel=1e-6)


def test_a_checkpoint_side_draws_its_samples_with_the_seed(world, tiny_run, tmp_path):
    import ganlab

    drawn = ganlab.to_uint8(ganlab.load(tiny_run / "last.pt").sample(40, seed=3))
    folder = tmp_path / "drawn"
    folder.mkdir()
    for i, image in enumerate(drawn):
        Image.fromarray(image.expand(3, -1, -1).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    ours = _fid([tiny_run / "last.pt", world["a"], "--num-samples", 40, "--seed", 3, "--dims", 64], world)
    theirs = calculate_fid_given_paths([str(folder), str(world["a"])], 50, "cpu", 64, num_workers=0)
    assert _relative(ours["fid"], theirs) < 1e-4 and (ours["num_a"], ours["seed"]) == (40, 3)
    assert any("fewer than the 64 feature dimensions" in w and "KID" in w for w in ours["warnings"])


def test_bad_weights_and_statistics_are_one_line_each(world, tmp_path):
    a, b = world["a"], world["b"]
    np.savez(tmp_path / "wide.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    np.savez(tmp_path / "other.npz", mean=np.zeros(64))
    np.savez(tmp_path / "negative.npz", mu=np.zeros(64), sigma=-np.eye(64))  # FID 0 against the identity
    np.savez(tmp_path / "infinite.npz", mu=np.full(64, np.inf), sigma=np.eye(64))
    np.savez(tmp_path / "counts.npz", mu=np.zeros(64), sigma=np.eye(64), count=np.array([1, 2]))
    (tmp_path / "exists.npz").write_bytes(b"mine")
    cases = [
        ([a, b, "--weights", tmp_path / "nothing.pth"], "no such weights file"),
        ([a, tmp_path / "wide.npz", "--dims", "64"], "statistics of 2048 features, but --dims is 64"),
        ([a, tmp_path / "other.npz"], "need arrays 'mu' and 'sigma'"),
        ([a, tmp_path / "negative.npz", "--dims", "64"], "'sigma' is not a covariance matrix"),
        ([a, tmp_path / "infinite.npz", "--dims", "64"], "'mu' or 'sigma' holds NaN or infinite values"),
        ([a, tmp_path / "counts.npz", "--dims", "64"], "'count' holds 2 values, not one"),
        ([a, b, "--save-stats", tmp_path / "exists.npz"], "exists; remove it or choose another --save-stats file"),
        ([a, tmp_path / "absent"], "no such file or folder"),
    ]
    for args, message in cases:
        result = _fid(args, world, code=1)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert (tmp_path / "exists.npz").read_bytes() == b"mine"
    line = run_cli(["fid", a, b, "--weights-sha256", "0" * 64], tmp_path, env={"TORCH_HOME": str(world["home"])})
    assert f"its SHA-256 is {world['sha']}, not the expected {'0' * 64}" in line
    result = CliRunner().invoke(cli, ["fid", str(a), str(b)], env={"TORCH_HOME": str(tmp_path / "empty-home")})
    assert result.exit_code == 1 and "no FID Inception weights at" in result.output and "--download" in result.output


def test_sample_quality_and_inception_score_in_a_report(world, tiny_run, tmp_path):
    from ganlab.report import make_report

    settings = {"sample-quality.spaces": ["fid-inception"], "sample-quality.fid_dims": 64,
                "sample-quality.fid_weights_sha256": world["sha"], "sample-quality.n": 40,
                "sample-quality.reference": False, "inception-score.n": 20,
                "inception-score.fid_weights_sha256": world["sha"]}
    _, out = make_report(tiny_run / "last.pt", out=tmp_path / "r", only=["sample-quality", "inception-score"],
                         settings=settings, progress=False, device="cpu")
    saved = json.loads((out / "metrics.json").read_text())["components"]
    quality, score = saved["sample-quality"], saved["inception-score"]
    assert quality["status"] == "ok" and quality["metrics"]["fid-inception.fd"] > 0
    assert score["status"] == "ok" and score["metrics"]["is_mean"] >= 1 and score["metrics"]["images"] == 20
    page = (out / "index.html").read_text()
    assert f"weights SHA-256 {world['sha']}, resize pytorch-fid, 64 dims, 40 images per set, seed 0" in page
    assert "Inception Score" in page


def test_without_weights_the_fid_space_and_inception_score_say_why(tiny_run, tmp_path, monkeypatch):
    from ganlab.report import make_report

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    _, out = make_report(tiny_run / "last.pt", out=tmp_path / "r", only=["inception-score"], progress=False,
                         device="cpu")
    saved = json.loads((out / "metrics.json").read_text())["components"]["inception-score"]
    assert saved["status"] == "skipped" and "no FID Inception weights" in saved["reason"]
