"""Analysis ``latent-walk``: the paper's walk in latent space (section 6.1, figure 4).

Each row of the image grid is one walk through ``points`` (9, as in the paper) random latent points, with
``steps`` frames from each point to the next, so a row has ``(points - 1) * steps + 1`` frames and every waypoint
is one of them. Gaussian z is walked along great circles (slerp keeps the norm typical of the prior; a straight
line cuts through the unusually short middle of the ball) and uniform z along straight lines (lerp); ``mode``
overrides this. The paper took smooth walks as evidence that G has not memorised its training set: a memorising G
would stay on one training image and then jump to another, while smooth semantic changes suggest a structure.

Metrics (a "step" is the RMS pixel change between neighbouring frames, in G's [-1, 1] units):

- ``max_step_over_median_step``: per walk, the largest step divided by the walk's median step, then the
  mean over walks. About 1 to 3 for a smooth walk; a jump shows up as a large ratio. A walk whose frames
  never change scores 1; one whose median step is 0 but that does change somewhere scores inf.
- ``max_step_over_median_step_worst``: the same ratio for the worst walk.
- ``max_step_over_endpoint_change``: per pair of neighbouring waypoints, the largest step between them
  divided by the change from one waypoint's image to the next; the mean over pairs and walks. Smooth
  walks give about 1 / ``steps``; 1 means the whole change happened in one step.

The table gives each walk's median and largest step, their ratio, and where the largest step is.
"""
from __future__ import annotations

from ganlab import Analysis, Image, Option, Result, Table, hookimpl

POINTS = 9  # waypoints per walk, as in the paper's figure 4
_EPS = 1e-6  # below this sin(angle), slerp is replaced by lerp (identical or opposite points)


def _segment(a, b, t, mode: str):
    """Points at fractions t (T) of the way from a to b (each N x ...) -> T x N x ... (float64), a and b exactly hit."""
    import torch

    shape = a.shape
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    t = t.double().view(-1, 1, 1)
    path = (1 - t) * a + t * b
    if mode == "slerp":
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
        omega = torch.arccos(cos.clamp(-1, 1)).view(1, -1, 1)
        sin = torch.sin(omega)
        ok = sin > _EPS  # identical (or zero, or opposite) points: the great circle is undefined, use the line
        safe = torch.where(ok, sin, torch.ones_like(sin))
        great = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe
        path = torch.where(ok, great, path)
    elif mode != "lerp":
        raise ValueError(f"mode must be lerp or slerp, not {mode!r}")
    path[t.view(-1) == 0] = a  # waypoints exactly, whatever the rounding
    path[t.view(-1) == 1] = b
    return path.view(-1, *shape)  # float64


def interpolate(z0, z1, steps: int, mode: str):
    """steps points from z0 to z1 (N x nz x 1 x 1 each) -> steps x N x nz x 1 x 1, endpoints included."""
    import torch

    return _segment(z0, z1, torch.linspace(0, 1, steps, dtype=torch.float64), mode).to(z0.dtype)


def walk(points, steps: int, mode: str):
    """A walk through ``points`` (P x N x ...) with ``steps`` frames from each point to the next.

    Returns ((P - 1) * steps + 1) x N x ...; frame ``k * steps`` is ``points[k]`` exactly. slerp keeps the
    norm when neighbouring points have equal norms; lerp moves along straight lines at constant speed.
    """
    import torch

    if len(points) < 2 or steps < 1:
        raise ValueError("a walk needs at least 2 points and 1 step between them")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    pieces = [_segment(points[k], points[k + 1], t, mode)[:-1] for k in range(len(points) - 1)]
    return torch.cat([*pieces, points[-1:].double()]).to(points.dtype)


def walk_steps(frames):
    """RMS change between neighbouring frames: rows x T x ... -> rows x (T - 1)."""
    flat = frames.reshape(frames.shape[0], frames.shape[1], -1).double()
    return (flat[:, 1:] - flat[:, :-1]).pow(2).mean(2).sqrt()


def jump_ratio(steps):
    """Per walk (rows x S step sizes): largest step / median step (1 if nothing moves, inf if only a jump does)."""
    import torch

    largest = steps.max(1).values
    median = torch.quantile(steps, 0.5, dim=1)  # numpy's median (mean of the middle two for an even count)
    ratio = largest / torch.where(median > 0, median, torch.ones_like(median))
    ratio = torch.where(median > 0, ratio, torch.where(largest > 0, torch.full_like(ratio, float("inf")),
                                                       torch.ones_like(ratio)))
    return ratio, largest, median


class LatentWalk(Analysis):
    name = "latent-walk"
    description = "Walks through random latent points (the paper's figure 4): sharp jumps would suggest memorisation"
    options = {"rows": Option(6, "walks (grid rows)", min=1),
               "points": Option(POINTS, "random points per walk", min=2),
               "steps": Option(10, "frames from one point to the next", min=1),
               "mode": Option("auto", "auto: slerp for Gaussian z, lerp for uniform z",
                              choices=("auto", "slerp", "lerp"))}
    cheap = True
    directions = {"max_step_over_*": "lower"}  # smooth walks; a large ratio marks a jump

    def run(self, ctx):
        import torch
        from torchvision.utils import make_grid

        from ganlab import sample_latent

        rows, points, steps, mode = (ctx.options[k] for k in ("rows", "points", "steps", "mode"))
        cfg = ctx.gan.config
        if mode == "auto":
            mode = "slerp" if cfg.latent == "normal" else "lerp"
        gen = torch.Generator().manual_seed(ctx.seed)
        waypoints = sample_latent(cfg, rows * points, gen).view(rows, points, cfg.nz, 1, 1).transpose(0, 1)
        path = walk(waypoints, steps, mode).transpose(0, 1).reshape(-1, cfg.nz, 1, 1)  # walk by walk
        G = ctx.gan.generator.eval()
        with torch.no_grad():
            frames = torch.cat([G(chunk.to(ctx.device)).float().cpu() for chunk in path.split(256)])
        length = (points - 1) * steps + 1
        by_row = frames.view(rows, length, *frames.shape[1:])
        step = walk_steps(by_row)
        ratio, largest, median = jump_ratio(step)
        at = step.argmax(1)
        ends = walk_steps(by_row[:, ::steps])  # change from each waypoint's image to the next
        per_pair = step.view(rows, points - 1, steps).max(2).values / ends.clamp(min=1e-8)
        table = Table(f"Each walk ({length} frames): RMS pixel change per step ([-1, 1] units)",
                      ["walk", "median step", "largest step", "largest / median", "largest step between frames"],
                      [[r + 1, round(median[r].item(), 5), round(largest[r].item(), 5), round(ratio[r].item(), 3),
                        f"{at[r].item()} and {at[r].item() + 1}"] for r in range(rows)])
        grid = make_grid(frames, nrow=length, normalize=True, value_range=(-1, 1))
        return Result(metrics={"max_step_over_median_step": ratio.mean().item(),
                               "max_step_over_median_step_worst": ratio.max().item(),
                               "max_step_over_endpoint_change": per_pair.mean().item()},
                      tables=[table],
                      images=[Image(f"{rows} walks through {points} latent points, {steps} steps apart ({mode})",
                                    grid)],
                      text=[f"Each row walks through {points} random latent points (frames 0, {steps}, "
                            f"{2 * steps}, ... are the points themselves). The paper took smooth walks as evidence "
                            "against memorisation: a memorising G would hold one training image and then jump to "
                            "another. A largest step far above the median step (a ratio well above 3) marks "
                            "such a jump; look at the frames the table names."])


@hookimpl
def ganlab_register_analyses(register):
    register(LatentWalk())
