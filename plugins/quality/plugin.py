"""Evaluator ``sample-quality``: G's samples against the training set in several feature spaces (``spaces.py``),
beside a reference row of held-out images against the same training images, so the numbers have a scale. Both
rows use N = min(``n``, both splits) images per set, so they compare like for like."""
from ganlab import Evaluator, GanlabError, Option, Result, Table, content_digest, hookimpl

from .fid import DIMS, WEIGHT_OPTIONS, InceptionScore

DEFAULT_SPACES = ["discriminator", "pixels"]
ROW_METRICS = ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage")
_MEMO: dict[tuple, dict[str, float]] = {}  # the last comparisons: (real, other, settings) digests -> metrics
_MEMO_SIZE = 16


def compare_sets(real, others: dict, *, k: int = 3, density_k: int = 5, kid_subsets: int = 100,
                 kid_subset_size: int = 1000, seed: int = 0, device=None) -> dict[str, dict[str, float]]:
    """Every metric of each set in ``others`` (name -> features) against ``real``, whose radii and moments are
    computed once. A pair compared before is answered from memory: the pixel and random-D spaces' held-out row is
    the same on every epoch of a run."""
    from . import metrics
    from .manifold import manifold_metrics, self_knn

    settings = (k, density_k, kid_subsets, kid_subset_size, seed, str(device))
    real_key = content_digest(real)
    keys = {name: (real_key, content_digest(fake), settings) for name, fake in others.items()}
    todo = {name: fake for name, fake in others.items() if keys[name] not in _MEMO}
    if todo:
        smallest = min([len(real)] + [len(f) for f in todo.values()])
        moments = metrics.feature_moments(real) if real.shape[1] <= smallest else None
        real_knn = self_knn(real, max(k, density_k), device=device)
    for name, fake in todo.items():
        m = min(kid_subset_size, len(real) // 2, len(fake) // 2)
        kid, kid_std = metrics.kid(real, fake, subsets=kid_subsets, subset_size=m, seed=seed, device=device)
        _MEMO[keys[name]] = {"fd": metrics.frechet_distance(real, fake, moments_x=moments), "kid": kid,
                             "kid_std": kid_std, **manifold_metrics(real, fake, k=k, density_k=density_k,
                                                                    real_knn=real_knn, device=device)}
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
    return {name: dict(_MEMO[keys[name]]) for name in others}


def _pick(n_total: int, n: int, seed: int):
    import numpy as np
    import torch

    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False)))


def verdict(metrics: dict, spaces: list[str]) -> str:
    if not spaces:
        return ""
    space = spaces[0]
    fd, p, r = (metrics[f"{space}.{key}"] for key in ("fd", "precision", "recall"))
    reference = metrics.get(f"{space}.reference.fd")
    scale = f" (held-out real images: {reference:.3g})" if reference is not None else ""
    return f"in {space} space, samples score FD {fd:.3g}{scale}, precision {p:.2f}, recall {r:.2f}"


def collapse(metrics: dict, spaces: list) -> list[str]:
    return [f"recall is 0 in {s.name} space: no training image lies within any sample's neighbourhood, a sign of "
            "mode collapse (look at the samples)" for s in spaces if metrics.get(f"{s.name}.recall") == 0]


class SampleQuality(Evaluator):
    name = "sample-quality"
    description = ("FD, KID, precision/recall and density/coverage of samples vs the training set, per feature "
                   "space, beside held-out images")
    needs = ("train_set",)
    cheap = True
    # density's ideal is about 1 (above: samples crowd dense regions), KID's std and the count have no best; the
    # reference row scores held-out images, not G: it is a scale, the same at every epoch, never "best"
    directions = {"*.reference.*": None, "*.fd": "lower", "*.kid": "lower", "*.precision": "higher",
                  "*.recall": "higher", "*.coverage": "higher", "*": None}
    options = {
        "spaces": Option(list(DEFAULT_SPACES), "feature spaces, comma-separated (see `ganlab components`); "
                         "fid-inception gives the FID papers print, and joins the default when fid_weights is set, "
                         "as torchvision-inception does when inception_weights is", of="feature_spaces"),
        "n": Option(2000, "images per set (generated, training, held-out), capped by the splits; raise it for a "
                    "final number", min=4),
        "reference": Option(True, "also score held-out images against the training images (the reference row)"),
        "k": Option(3, "neighbours for the precision/recall radii", min=1),
        "density_k": Option(5, "neighbours for the density/coverage radii", min=1),
        "kid_subsets": Option(100, "KID subsets", min=1),
        "kid_subset_size": Option(1000, "images per KID subset (at most N / 2)", min=2),
        "batch_size": Option(256, "images per forward pass when embedding", min=1),
        **WEIGHT_OPTIONS,
        "fid_dims": Option(2048, "fid-inception features: 2048 (pool3, the FID papers print) or pytorch-fid's "
                           "64/192/768", choices=DIMS),
        "inception_weights": Option("", "torchvision-inception's local inception_v3 state dict (inception_v3_google-"
                                    "0cc3c7bd.pth); nothing is downloaded"),
        "inception_sha256": Option("0cc3c7bd", "that file's SHA-256 or its first 8+ hex digits (default: the "
                                   "official file's, from its name); empty: no check"),
    }

    def chosen_spaces(self, ctx) -> tuple[list, list[str]]:
        """(the spaces to use, notes on those skipped); an unusable space the user listed is a GanlabError."""
        listed = [s.strip() for s in ctx.options["spaces"] if s.strip()]  # "a, b" arrives as ["a", " b"]
        explicit = listed != DEFAULT_SPACES
        for option, space in (("fid_weights", "fid-inception"), ("inception_weights", "torchvision-inception")):
            if not explicit and str(ctx.options[option]).strip():
                listed.append(space)
        listed = list(dict.fromkeys(listed))
        unknown = [s for s in listed if s not in ctx.feature_spaces]
        if unknown or not listed:
            what = f"unknown feature space {', '.join(unknown)}" if unknown else "no feature space given"
            raise GanlabError(f"--set sample-quality.spaces: {what}; available: "
                              f"{', '.join(sorted(ctx.feature_spaces)) or 'none'}")
        chosen, notes = [], []
        for name in listed:
            reason = ctx.feature_spaces[name].available(ctx)
            if reason and explicit:
                raise GanlabError(f"sample-quality: feature space {name!r} cannot be used here: {reason} "
                                  "(or leave it out of sample-quality.spaces)")
            if reason:
                notes.append(f"Feature space {name!r} skipped: {reason}.")
            else:
                chosen.append(ctx.feature_spaces[name])
        return chosen, notes

    def image_sets(self, ctx, notes: list[str]) -> tuple[dict, int]:
        """({role: (images, their split or None, cache tag)} for train, generated and maybe reference, N)."""
        from ganlab import to_uint8

        opts = ctx.options
        train, _ = ctx.split(ctx.train_split)
        held = ctx.split(ctx.heldout_split)[0] if opts["reference"] and ctx.heldout_split else None
        if opts["reference"] and held is None:
            notes.append("No reference row: this dataset has no held-out split.")
        n = min(opts["n"], len(train), len(held) if held is not None else len(train))
        need = max(opts["k"], opts["density_k"]) + 2
        if n < max(need, 4):
            raise GanlabError(f"sample-quality: only {n} images per set (the smallest of n and the splits); it "
                              f"needs at least {max(need, 4)}: raise --set sample-quality.n or lower k/density_k")
        if n < opts["n"]:
            cap = "the held-out split" if held is not None and n == len(held) < len(train) else "the training split"
            notes.append(f"N = {n} images per set, capped by {cap} so both rows compare like for like.")
        sets = {"train": (train[_pick(len(train), n, ctx.seed)], ctx.train_split, len(train)),
                "generated": (to_uint8(ctx.gan.sample(n, seed=ctx.seed)), None, 0)}
        if held is not None:
            sets["reference"] = (held[_pick(len(held), n, ctx.seed + 1)], ctx.heldout_split, len(held))
        return {role: (images, split, f"sample-quality:{n}of{total}:seed{ctx.seed}")
                for role, (images, split, total) in sets.items()}, n

    def run(self, ctx):
        opts = ctx.options
        spaces, notes = self.chosen_spaces(ctx)
        sets, n = self.image_sets(ctx, notes)
        metrics, rows = {"images": n}, []
        for space in spaces:
            embed_split = getattr(space, "embed_split", None)
            features = {role: embed_split(ctx, images, split, tag) if split and embed_split else
                        space.embed(ctx, images) for role, (images, split, tag) in sets.items()}
            found = compare_sets(features.pop("train"), features, k=opts["k"], density_k=opts["density_k"],
                                 kid_subsets=opts["kid_subsets"], kid_subset_size=opts["kid_subset_size"],
                                 seed=ctx.seed, device=ctx.device)
            for role, values in found.items():
                prefix = space.name if role == "generated" else f"{space.name}.reference"
                metrics.update({f"{prefix}.{key}": values[key] for key in ROW_METRICS})
                label = "generated vs train" if role == "generated" else f"held-out ({ctx.heldout_split}) vs train"
                rows.append([space.name, label, n, values["fd"], f"{values['kid']:.4g} ± {values['kid_std']:.2g}",
                             values["precision"], values["recall"], values["density"], values["coverage"]])
            notes.append(space.note(ctx, n) if hasattr(space, "note") else
                         f"{space.name}: {space.description}; {n} images per set, seed {ctx.seed}.")
            dims = features["generated"].shape[1]
            if n < dims:
                notes.append(f"{space.name}: N = {n} is below its {dims} feature dimensions, so the covariance is "
                             "rank-deficient and FD is biased upward at this N: compare FDs only at the same N, and "
                             "read KID (unbiased) beside it.")
        table = Table(f"Sample quality: {n} images per set; the held-out row is what new real images score",
                      ["space", "compared", "N", "FD", "KID (mean ± std)", "precision", "recall", "density",
                       "coverage"], rows)
        return Result(metrics=metrics, tables=[table] if rows else [], text=[*notes, *self.explanation(opts)],
                      verdict=verdict(metrics, [s.name for s in spaces]), problems=collapse(metrics, spaces))

    def series_figures(self, names: list[str]) -> dict[str, list[str]]:
        """A figure per space and measure, the generated line beside the held-out line; KID's spread and the
        image count stay in metrics.json only."""
        figures: dict[str, list[str]] = {}
        for name in names:
            space, _, measure = name.rpartition(".")
            space = space.removesuffix(".reference")
            if space and measure in ROW_METRICS and measure != "kid_std":
                figures.setdefault(f"{space} {measure}", []).append(name)
        return figures

    @staticmethod
    def explanation(opts) -> list[str]:
        return [
            "FD: Frechet distance between Gaussians fitted to each set's features (in fid-inception space, the FID "
            "papers print); 0 for equal means and covariances, lower is better, biased upward at small N.",
            f"KID: unbiased MMD^2 with the kernel (x.y/D + 1)^3, mean ± std over {opts['kid_subsets']} subsets; "
            "about 0 (can dip below) for two samples of one distribution.",
            f"Precision: share of samples inside the training images' {opts['k']}-NN balls (fidelity). Recall: share "
            "of training images inside the samples' balls (diversity).",
            f"Density: training {opts['density_k']}-NN balls holding each sample, over {opts['density_k']} (about 1 "
            "for matching sets). Coverage: share of training balls holding a sample.",
            "Read the generated row against the held-out row of the same space: that is what new real images "
            "score at this N. This component reruns on every epoch with the same N; raise it with "
            "--set sample-quality.n=10000 for a final number.",
        ]


@hookimpl
def ganlab_register_evaluators(register):
    register(SampleQuality())
    register(InceptionScore())


@hookimpl
def ganlab_register_commands(cli):
    from .fid_command import fid_command

    cli.add_command(fid_command)


@hookimpl
def ganlab_register_feature_spaces(register):
    from .spaces import builtin_spaces

    for space in builtin_spaces():
        register(space)
