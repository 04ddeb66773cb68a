"""latent-walk: the walk through several latent points, its interpolation and its jump metric."""
import numpy as np
import pytest
import torch

from ganlab import ModelConfig, RunContext
from ganlab.plugin import registry
from ganlab_plugins import latent_walk
from ganlab_plugins.latent_walk import LatentWalk, jump_ratio, walk, walk_steps


def _numpy_slerp(a, b, t):
    omega = np.arccos(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def test_walk_hits_every_waypoint_exactly():
    points = torch.randn(5, 3, 8, 1, 1)
    for mode in ("lerp", "slerp"):
        path = walk(points, 4, mode)
        assert path.shape == (4 * 4 + 1, 3, 8, 1, 1) and path.dtype == points.dtype
        assert torch.equal(path[::4], points)


def test_slerp_matches_numpy_and_keeps_equal_norms():
    g = torch.Generator().manual_seed(1)
    points = torch.randn(4, 2, 16, 1, 1, generator=g, dtype=torch.float64)
    points = 3 * points / points.flatten(2).norm(dim=2)[..., None, None, None]  # all of norm 3
    path = walk(points, 6, "slerp")
    assert torch.allclose(path.flatten(2).norm(dim=2), torch.full((19, 2), 3.0, dtype=torch.float64), atol=1e-9)
    for k in range(3):
        for j in range(7):
            expected = _numpy_slerp(points[k, 1].flatten().numpy(), points[k + 1, 1].flatten().numpy(), j / 6)
            np.testing.assert_allclose(path[6 * k + j, 1].flatten().numpy(), expected, atol=1e-10)


def test_lerp_is_linear_and_its_midpoint_the_average():
    a, b = torch.randn(3, 8, 1, 1), torch.randn(3, 8, 1, 1)
    assert torch.allclose(walk(torch.stack([a, b]), 2, "lerp")[1], (a + b) / 2, atol=1e-6)
    path = walk(torch.stack([a, b]), 4, "lerp")
    assert torch.allclose(path[1:] - path[:-1], ((b - a) / 4).expand(4, -1, -1, -1, -1), atol=1e-6)


def test_identical_and_opposite_points_give_no_nan():
    a = torch.randn(2, 8, 1, 1)
    for mode in ("lerp", "slerp"):
        same = walk(torch.stack([a, a, -a, torch.zeros_like(a)]), 5, mode)
        assert torch.isfinite(same).all()
        assert torch.allclose(same[:6], a.expand(6, -1, -1, -1, -1))  # standing still between equal points


def test_jump_ratio_by_hand():
    # one walk moves 1, 1, 5, 1, 1 along a line: median 1, largest 5 -> 5
    positions = torch.tensor([0.0, 1, 2, 7, 8, 9])
    frames = torch.stack([positions.view(-1, 1, 1, 1) * torch.ones(1, 1, 2, 2),  # RMS change = the move
                          torch.zeros(6, 1, 2, 2),  # never moves -> 1
                          torch.tensor([0.0, 0, 0, 4, 4, 4]).view(-1, 1, 1, 1).expand(6, 1, 2, 2)])  # only a jump
    steps = walk_steps(frames)
    assert steps[0].tolist() == [1, 1, 5, 1, 1]
    ratio, largest, median = jump_ratio(steps)
    assert ratio.tolist() == [5, 1, float("inf")] and largest.tolist() == [5, 0, 4]
    # an even number of steps: numpy's median averages the middle two
    ratio, _, median = jump_ratio(torch.tensor([[1.0, 2.0, 4.0, 10.0]], dtype=torch.float64))
    assert median.item() == np.median([1, 2, 4, 10]) == 3 and ratio.item() == pytest.approx(10 / 3)


class _LinearG(torch.nn.Module):
    """image = A z (a known function of z) on 1 x 4 x 4; records what it was given."""

    def __init__(self, nz):
        super().__init__()
        self.A = torch.randn(16, nz, generator=torch.Generator().manual_seed(3)) * 0.1
        self.seen = []

    def forward(self, z):
        self.seen.append(z.clone())
        return (z.flatten(1) @ self.A.T).view(-1, 1, 4, 4)


class _FakeGAN:
    def __init__(self, config, generator):
        self.config, self.generator = config, generator


def test_metrics_against_a_hand_computation_on_a_linear_generator(tmp_path):
    cfg = ModelConfig(image_size=16, channels=1, nz=6, latent="uniform")  # uniform: auto picks lerp
    G = _LinearG(cfg.nz)
    ctx = RunContext(gan=_FakeGAN(cfg, G), device=torch.device("cpu"), seed=5,
                     options={"rows": 3, "points": 9, "steps": 4, "mode": "auto"})
    result = LatentWalk().run(ctx)
    z = torch.cat(G.seen).flatten(1).numpy().reshape(3, 33, 6)  # 3 walks of 8 * 4 + 1 frames
    for k in range(8):  # lerp: straight lines at constant speed between the waypoints
        for j in range(5):
            expected = (1 - j / 4) * z[:, 4 * k] + j / 4 * z[:, 4 * (k + 1)]
            np.testing.assert_allclose(z[:, 4 * k + j], expected, atol=1e-5)
    frames = z @ G.A.numpy().T  # 3 x 33 x 16
    steps = np.sqrt(((frames[:, 1:] - frames[:, :-1]) ** 2).mean(2))
    ratios = steps.max(1) / np.median(steps, axis=1)
    ends = np.sqrt(((frames[:, 4::4] - frames[:, :-4:4]) ** 2).mean(2))  # 3 x 8 waypoint-to-waypoint changes
    assert result.metrics["max_step_over_median_step"] == pytest.approx(ratios.mean(), rel=1e-4)
    assert result.metrics["max_step_over_median_step_worst"] == pytest.approx(ratios.max(), rel=1e-4)
    assert result.metrics["max_step_over_endpoint_change"] == pytest.approx(0.25, rel=1e-4)  # linear G + lerp
    assert "(33 frames)" in result.tables[0].title
    assert ends.shape == (3, 8) and result.tables[0].rows[1][3] == pytest.approx(ratios[1], abs=1e-3)


def test_auto_walks_a_gaussian_latent_along_great_circles():
    """The default mode on a Gaussian z is slerp (numpy's formula, independent of the component's), not lerp."""
    cfg = ModelConfig(image_size=16, channels=1, nz=6, latent="normal")
    G = _LinearG(cfg.nz)
    ctx = RunContext(gan=_FakeGAN(cfg, G), device=torch.device("cpu"), seed=5,
                     options={"rows": 2, "points": 3, "steps": 4, "mode": "auto"})
    result = LatentWalk().run(ctx)
    z = torch.cat(G.seen).flatten(1).double().numpy().reshape(2, 9, 6)  # 2 walks of 2 * 4 + 1 frames
    for row in range(2):
        for k in range(2):
            for j in range(5):
                expected = _numpy_slerp(z[row, 4 * k], z[row, 4 * (k + 1)], j / 4)
                np.testing.assert_allclose(z[row, 4 * k + j], expected, atol=1e-5)
    straight = 0.5 * (z[0, 0] + z[0, 4])
    assert not np.allclose(z[0, 2], straight, atol=1e-3)  # a lerp midpoint would sit here
    assert "(slerp)" in result.images[0].title


def test_runs_in_a_report_with_the_grid_of_walks(tiny_run, tmp_path):
    from ganlab.report import make_report

    registry.reset()  # latent-walk comes from ganlab's own entry points
    data, _ = make_report(tiny_run / "last.pt", only=["latent-walk"], out=tmp_path / "r", device="cpu",
                          progress=False, settings={"latent-walk.rows": "3", "latent-walk.steps": "2"})
    result = data.components[0].result
    frames = (latent_walk.POINTS - 1) * 2 + 1  # 17 frames of 16 x 16 per walk, make_grid's 2-pixel padding
    assert result.images[0].image.shape == (3, 3 * 18 + 2, frames * 18 + 2)
    assert f"({frames} frames)" in result.tables[0].title and len(result.tables[0].rows) == 3
    assert 1 <= result.metrics["max_step_over_median_step"] <= result.metrics["max_step_over_median_step_worst"]
    assert 0 < result.metrics["max_step_over_endpoint_change"] <= 1
