"""Analysis ``nearest-neighbours``: generated samples beside their closest training images.

A memorisation check: if samples were copies of training images, their nearest neighbours
would be (near) identical and their distance far below that of held-out real images.
"""
from __future__ import annotations

from ganlab import Analysis, Image, Result, hookimpl


def nearest(queries, references, k: int):
    """(distances, indices) of the k nearest references (L2 over flattened pixels), each N x k."""
    import torch

    d = torch.cdist(queries.flatten(1), references.flatten(1))
    return d.topk(k, dim=1, largest=False)


class NearestNeighbours(Analysis):
    name = "nearest-neighbours"
    description = "Generated samples next to their nearest training images (pixel L2): a memorisation check"
    needs = ("train_set",)
    options = {"samples": 8, "neighbours": 5, "train_limit": 5000}

    def run(self, ctx):
        import torch
        from torchvision.utils import make_grid

        from ganlab import to_unit_range

        split = ctx.train_split
        train_images, _ = ctx.split(split, limit=ctx.options["train_limit"])
        train = to_unit_range(train_images)
        samples = ctx.gan.sample(ctx.options["samples"], seed=ctx.seed)
        k = min(ctx.options["neighbours"], len(train))
        dist, idx = nearest(samples, train, k)
        rows = torch.cat([torch.cat([s[None], train[i]]) for s, i in zip(samples, idx)])
        pixels = samples[0].numel()
        return Result(metrics={"sample_nn_rmse": (dist[:, 0] / pixels**0.5).mean().item(),
                               "train_images_searched": len(train)},
                      images=[Image(f"left: sample; right: its {k} nearest training images ({split} split)",
                                    make_grid(rows, nrow=k + 1, normalize=True, value_range=(-1, 1)))])


@hookimpl
def ganlab_register_analyses(register):
    register(NearestNeighbours())
