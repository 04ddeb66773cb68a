"""Evaluator ``d-score``: how well D separates held-out real images from G's samples."""
from ganlab import Evaluator, Figure, GanlabError, Option, Result, hookimpl


def verdict(metrics: dict) -> str:
    accuracy, real, fake = metrics["accuracy"], metrics["D_x_mean"], metrics["D_G_z_mean"]
    if fake >= real:
        reading = "it rates samples at least as real as real images"
    elif accuracy >= 0.9:
        reading = "it tells samples from real images almost always"
    elif accuracy > 0.6:
        reading = "it tells samples from real images most of the time"
    else:
        reading = "it barely tells samples from real images (a close G, or a weak D)"
    return (f"D is right on {accuracy:.1%} of {metrics['images']} held-out images and as many samples (mean D(x) "
            f"{real:.3f}, mean D(G(z)) {fake:.3f}): {reading}")


class DiscriminatorScore(Evaluator):
    name = "d-score"
    description = "D's verdict on held-out real images vs. G's samples: mean D(x), mean D(G(z)), accuracy at 0.5"
    needs = ("discriminator", "heldout")
    options = {"samples": Option(1000, "held-out images and samples scored", min=1),
               "batch_size": Option(256, "images per forward pass", min=1)}
    cheap = True
    # D's confidence on each set: a strong D and a good G both move these, so neither way is "better"
    directions = {"*": None}

    def series_figures(self, names: list[str]) -> dict[str, list[str]]:
        figures = {"mean D output": [n for n in ("D_x_mean", "D_G_z_mean") if n in names],
                   "accuracy": [n for n in ("accuracy",) if n in names]}
        return {title: chosen for title, chosen in figures.items() if chosen}

    def run(self, ctx):
        import torch
        from matplotlib.figure import Figure as MplFigure

        from ganlab import to_unit_range

        images, _ = ctx.split(ctx.heldout_split, limit=ctx.options["samples"])
        n = len(images)
        D = ctx.gan.discriminator.eval()
        batch = ctx.options["batch_size"]
        with torch.no_grad():
            real = torch.cat([torch.sigmoid(D(to_unit_range(chunk).to(ctx.device))).cpu()
                              for chunk in images.split(batch)])
            fakes = ctx.gan.sample(n, seed=ctx.seed)
            fake = torch.cat([torch.sigmoid(D(chunk.to(ctx.device))).cpu() for chunk in fakes.split(batch)])
        bad = int((~torch.isfinite(real)).sum() + (~torch.isfinite(fake)).sum())
        if bad:
            raise GanlabError(f"D's output is NaN or infinite on {bad} of {2 * n} images: the discriminator (or the "
                              "generator feeding it) is broken, so no accuracy can be read")
        accuracy = ((real > 0.5).sum() + (fake < 0.5).sum()).item() / (2 * n)
        fig = MplFigure(figsize=(5, 3))
        ax = fig.subplots()
        bins = torch.linspace(0, 1, 41).numpy()
        ax.hist(real.numpy(), bins=bins, alpha=0.6, label="real (held out)")
        ax.hist(fake.numpy(), bins=bins, alpha=0.6, label="generated")
        ax.set_xlabel("D output (probability of real)")
        ax.legend()
        metrics = {"D_x_mean": real.mean().item(), "D_G_z_mean": fake.mean().item(), "accuracy": accuracy,
                   "images": n}
        return Result(metrics=metrics, figures=[Figure("D outputs on real and generated images", fig)],
                      verdict=verdict(metrics))


@hookimpl
def ganlab_register_evaluators(register):
    register(DiscriminatorScore())
