"""Analysis ``latent-walk``: the paper's walk in latent space (section 6.1, figure 4).

Each grid row walks through ``points`` random latent points with ``steps`` frames from each to the next (every
waypoint is a frame): Gaussian z along great circles (slerp keeps the norm typical of the prior), uniform z along
straight lines. The paper took smooth walks as evidence against memorisation: a memorising G would hold one
training image and then jump to another.

Metrics (a step is the RMS pixel change between neighbouring frames, in G's [-1, 1] units):
``max_step_over_median_step``, per walk the largest step / the median step (1 if nothing moves, inf if only a jump
does), mean over walks, and ``_worst``, the largest; ``max_step_over_endpoint_change``, per pair of neighbouring
waypoints the largest step between them / the change from one waypoint's image to the next, mean over pairs
(about 1 / ``steps`` when smooth, 1 when the whole change is one step).
"""
from ganlab import Analysis, Image, Option, Result, Table, hookimpl

from . import generate

POINTS = 9  # waypoints per walk, as in the paper's figure 4
JUMP = 3  # a largest step above this many median steps is a jump; smooth walks stay between 1 and 3
_EPS = 1e-6  # below this sin(angle) the great circle is undefined (identical or opposite points): use the line


def walk(points, steps: int, mode: str):
    """A walk through ``points`` (P x N x ...) along lines (lerp) or great circles (slerp), in float64:
    ((P - 1) * steps + 1) x N x ..., frame ``k * steps`` is ``points[k]`` exactly."""
    import torch

    a, b = points[:-1, None].flatten(3).double(), points[1:, None].flatten(3).double()  # P - 1 x 1 x N x D
    t = (torch.arange(steps, dtype=torch.float64) / steps).view(1, -1, 1, 1)
    path = (1 - t) * a + t * b
    if mode == "slerp":
        norms = (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp(min=1e-30)
        omega = torch.arccos(((a * b).sum(-1, keepdim=True) / norms).clamp(-1, 1))
        sin = torch.sin(omega)
        ok = sin > _EPS
        great = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.where(ok, sin, 1.0)
        path = torch.where(ok, great, path)
    path[:, 0] = a[:, 0]  # the waypoints exactly, whatever the rounding
    return torch.cat([path.reshape(-1, *points.shape[1:]), points[-1:].double()]).to(points.dtype)


def walk_steps(frames):
    """RMS change between neighbouring frames: rows x T x ... -> rows x (T - 1)."""
    flat = frames.reshape(frames.shape[0], frames.shape[1], -1).double()
    return (flat[:, 1:] - flat[:, :-1]).pow(2).mean(2).sqrt()


def jump_ratio(steps):
    """(largest / median step, largest, median) per walk of rows x S steps; numpy's median for an even count."""
    import torch

    largest, median = steps.max(1).values, torch.quantile(steps, 0.5, dim=1)
    return torch.where(largest > 0, largest / median, 1.0), largest, median  # 0 <= median <= largest: x / 0 = inf


def verdict(metrics: dict, rows: int, points: int, worst_row: int, at: int) -> str:
    mean, worst = metrics["max_step_over_median_step"], metrics["max_step_over_median_step_worst"]
    reading = (f"walk {worst_row} jumps between frames {at} and {at + 1}: look at them" if worst > JUMP else
               "smooth, no jump that would suggest memorisation")
    return (f"the largest step along a walk is {mean:.2f}x the median step (worst walk {worst:.2f}x) over {rows} "
            f"walks through {points} points: {reading}")


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
        frames = generate(ctx.gan.generator, path, ctx.device, check="along the walks")
        length = (points - 1) * steps + 1
        by_row = frames.view(rows, length, *frames.shape[1:])
        step = walk_steps(by_row)
        ratio, largest, median = jump_ratio(step)
        at = step.argmax(1)
        ends = walk_steps(by_row[:, ::steps])  # change from each waypoint's image to the next
        per_pair = step.view(rows, points - 1, steps).max(2).values / ends.clamp(min=1e-8)
        metrics = {"max_step_over_median_step": ratio.mean().item(),
                   "max_step_over_median_step_worst": ratio.max().item(),
                   "max_step_over_endpoint_change": per_pair.mean().item()}
        worst = int(ratio.argmax())
        problems = [] if largest.any() else [f"G draws the same image all along every walk ({rows} walks): its "
                                             "output ignores z, a collapsed generator"]
        table = Table(f"Each walk ({length} frames): RMS pixel change per step ([-1, 1] units)",
                      ["walk", "median step", "largest step", "largest / median", "largest step between frames"],
                      [[r + 1, round(median[r].item(), 5), round(largest[r].item(), 5), round(ratio[r].item(), 3),
                        f"{at[r].item()} and {at[r].item() + 1}"] for r in range(rows)])
        return Result(metrics=metrics, tables=[table], problems=problems,
                      verdict=verdict(metrics, rows, points, worst + 1, at[worst].item()),
                      images=[Image(f"{rows} walks through {points} latent points, {steps} steps apart ({mode})",
                                    make_grid(frames, nrow=length, normalize=True, value_range=(-1, 1)))],
                      text=[f"Each row walks through {points} random latent points (frames 0, {steps}, "
                            f"{2 * steps}, ... are the points themselves). A largest step far above the median step "
                            f"(a ratio above {JUMP}) marks a jump; look at the frames the table names."])


@hookimpl
def ganlab_register_analyses(register):
    register(LatentWalk())
