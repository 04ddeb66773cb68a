"""What the ``fid-inception`` feature space and the ``inception-score`` evaluator share: pytorch-fid's network
(``fid.py``) from the options, and the line that says which network made a number."""
from __future__ import annotations

from ganlab import Evaluator, GanlabError, Option, Result

from . import fid

WEIGHT_OPTIONS = {
    "fid_weights": Option("", f"pytorch-fid's {fid.OFFICIAL}; empty: torch's hub cache (nothing is downloaded)"),
    "fid_weights_sha256": Option(fid.OFFICIAL_SHA256_PREFIX, "the FID weights file's SHA-256 or its first 8+ hex "
                                 "digits (default: the official file's, from its name); empty: no check"),
    "resize": Option("pytorch-fid", "how images reach 299 x 299: pytorch-fid's bilinear resize inside the network, "
                     "or clean-fid's PIL bicubic", choices=fid.RESIZES),
}


def missing(options: dict) -> str | None:
    """Why the FID network cannot be used with these options, or None."""
    try:
        fid.pytorch_fid_inception()
    except GanlabError as exc:
        return str(exc)
    if options.get("resize") == "clean-fid":
        try:
            import cleanfid.resize  # noqa: F401
        except ImportError:
            return "resize=clean-fid needs clean-fid: pip install 'ganlab[fid]' (or pip install clean-fid)"
    if not str(options.get("fid_weights", "") or "").strip() and not fid.hub_weights().is_file():
        return (f"no FID Inception weights: set fid_weights=FILE (a copy of {fid.OFFICIAL}) or put the file at "
                f"{fid.hub_weights()}")
    return None


def network(ctx) -> fid.FidNetwork:
    o = ctx.options
    return fid.network(o.get("fid_weights"), o.get("fid_weights_sha256", fid.OFFICIAL_SHA256_PREFIX),
                       dims=int(o.get("fid_dims", 2048)), resize=o.get("resize", "pytorch-fid"), device=ctx.device,
                       option="the fid_weights_sha256 option")


def provenance_line(net: fid.FidNetwork, n: int, seed: int) -> str:
    return (f"FID network: {fid.NETWORK}, weights SHA-256 {net.sha256}, resize {net.resize}, {net.dims} dims, "
            f"{n} images per set, seed {seed}.")


def progress_of(ctx):
    return None if ctx.progress is None or ctx.quiet else ctx.progress


class InceptionScore(Evaluator):
    name = "inception-score"
    description = "Inception Score (IS) of G's samples on pytorch-fid's FID Inception network: mean ± std over splits"
    needs = ()
    cheap = False
    default = False  # thousands of 299 x 299 Inception passes, and IS means little beyond ImageNet-like pictures
    directions = {"is_mean": "higher", "*": None}
    options = {
        "n": Option(5000, "samples scored (papers print IS over 50000)", min=10),
        "splits": Option(10, "splits the samples are scored in (the standard protocol uses 10)", min=1),
        **WEIGHT_OPTIONS,
    }

    def available(self, options):
        return missing(options)

    def run(self, ctx):
        from ganlab import to_uint8

        o, net = ctx.options, network(ctx)
        if o["n"] < o["splits"]:
            raise GanlabError(f"inception-score: n={o['n']} samples cannot fill {o['splits']} splits; raise "
                              "--set inception-score.n")
        images = to_uint8(ctx.gan.sample(o["n"], seed=ctx.seed))
        is_mean, is_std = fid.inception_score(net.run(images, logits=True, progress=progress_of(ctx))["logits"],
                                              o["splits"])
        return Result(metrics={"is_mean": is_mean, "is_std": is_std, "images": o["n"]},
                      verdict=f"Inception Score {is_mean:.3g} ± {is_std:.2g} over {o['splits']} splits of "
                              f"{o['n']} samples",
                      text=[provenance_line(net, o["n"], ctx.seed),
                            "IS: exp of the mean KL divergence between each sample's class distribution (softmax "
                            "over the network's 1008 ImageNet logits) and the split's average; higher means "
                            "confident and varied classes. It is only defined for ImageNet-like pictures: on "
                            "digits or faces it says little. Compare IS only at the same N and network."])
