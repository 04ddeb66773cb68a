"""Analysis ``latent-walk``: the paper's walk in latent space (section 6.1, figure 4).

Sharp transitions or repeated images along a line between two z would suggest memorisation;
smooth semantic changes suggest G has learnt a structured representation.
"""
from __future__ import annotations

from ganlab import Analysis, Image, Result, hookimpl


def interpolate(z0, z1, steps: int, mode: str):
    """steps points from z0 to z1 (N x nz x 1 x 1 each) -> steps x N x nz x 1 x 1, endpoints included."""
    import torch

    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1, 1)
    if mode == "lerp":
        return (1 - t) * z0 + t * z1
    # slerp keeps the norm of Gaussian z typical along the path (a lerp midpoint is unusually short)
    a, b = z0.flatten(1), z1.flatten(1)
    omega = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(min=1e-6).view(1, -1, 1, 1, 1)
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


class LatentWalk(Analysis):
    name = "latent-walk"
    description = "Interpolations between random latent points (the paper's figure 4): look for smooth transitions"
    options = {"rows": 6, "steps": 10, "mode": "auto"}
    cheap = True

    def run(self, ctx):
        import torch
        from torchvision.utils import make_grid

        from ganlab import sample_latent

        rows, steps, mode = ctx.options["rows"], ctx.options["steps"], ctx.options["mode"]
        cfg = ctx.gan.config
        if mode == "auto":
            mode = "slerp" if cfg.latent == "normal" else "lerp"
        if mode not in ("lerp", "slerp") or steps < 2 or rows < 1:
            raise ValueError(f"latent-walk needs mode lerp/slerp/auto, steps >= 2 and rows >= 1 "
                             f"(got {mode}, {steps}, {rows})")
        gen = torch.Generator().manual_seed(ctx.seed)
        z0, z1 = sample_latent(cfg, rows, gen), sample_latent(cfg, rows, gen)
        path = interpolate(z0, z1, steps, mode)  # steps x rows x nz x 1 x 1
        G = ctx.gan.generator.eval()
        with torch.no_grad():
            frames = G(path.transpose(0, 1).reshape(rows * steps, cfg.nz, 1, 1).to(ctx.device)).cpu()
        # mean pixel change between neighbouring frames, relative to the change between the endpoints
        frames_by_row = frames.view(rows, steps, -1)
        step_change = (frames_by_row[:, 1:] - frames_by_row[:, :-1]).norm(dim=2)
        total = (frames_by_row[:, -1] - frames_by_row[:, 0]).norm(dim=1).clamp(min=1e-8)
        grid = make_grid(frames, nrow=steps, normalize=True, value_range=(-1, 1))
        return Result(metrics={"max_step_over_endpoint_change": (step_change.max(1).values / total).mean().item()},
                      images=[Image(f"{rows} walks of {steps} steps ({mode})", grid)],
                      text=["Each row walks in a straight line (or great circle) between two random latent points."])


@hookimpl
def ganlab_register_analyses(register):
    register(LatentWalk())
