"""FID and Inception Score as papers print them: pytorch-fid's port of the TensorFlow FID Inception graph
(``pt_inception-2015-12-05``), run by pytorch-fid itself (``pip install 'ganlab[fid]'``), for the ``fid-inception``
feature space, the ``inception-score`` evaluator and ``ganlab fid``.

Images go in as pytorch-fid feeds files: RGB scaled to [0, 1] at their own size, resized to 299 x 299 bilinearly
inside the network (``resize="pytorch-fid"``); or first resized with clean-fid's filter (PIL bicubic on float
pixels, ``resize="clean-fid"``), which clean-fid's authors show moves FID by more than many papers' margins, so the
mode is named beside every number.

Inception Score follows the original protocol: softmax over the graph's 1008 logits (pool3 times the final
layer's weights, without its bias, as the TensorFlow code reads them), the exponentiated mean KL divergence of
each split from its marginal, over 10 splits; ``is_mean`` and ``is_std`` are the mean and std over splits.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from ganlab import Evaluator, GanlabError, Option, Result, file_sha256

OFFICIAL = "pt_inception-2015-12-05-6726825d.pth"
OFFICIAL_SHA256_PREFIX = "6726825d"  # torch.hub's convention: the file name carries its hash's first digits
NETWORK = "pytorch-fid pt_inception-2015-12-05"
DIMS = (64, 192, 768, 2048)
RESIZES = ("pytorch-fid", "clean-fid")
BATCH = 32
WEIGHT_OPTIONS = {
    "fid_weights": Option("", f"pytorch-fid's {OFFICIAL}; empty: torch's hub cache (nothing is downloaded)"),
    "fid_weights_sha256": Option(OFFICIAL_SHA256_PREFIX, "the FID weights file's SHA-256 or its first 8+ hex "
                                 "digits (default: the official file's, from its name); empty: no check"),
    "resize": Option("pytorch-fid", "how images reach 299 x 299: pytorch-fid's bilinear resize inside the network, "
                     "or clean-fid's PIL bicubic", choices=RESIZES),
}
_HASHES: dict[tuple[str, int, int], str] = {}
_NETWORKS: dict[tuple, Any] = {}


def pytorch_fid_inception() -> Any:
    try:
        from pytorch_fid import inception
    except ImportError:
        raise GanlabError("the FID Inception network comes from pytorch-fid: pip install 'ganlab[fid]' "
                          "(or pip install pytorch-fid)") from None
    return inception


def hub_weights() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL


def find_weights(path: str | Path | None = None, *, download: bool = False) -> Path:
    """The weights file: ``path`` if given, else torch's hub cache (where pytorch-fid looks), downloaded there only
    if ``download``."""
    if path and str(path).strip():
        found = Path(str(path).strip()).expanduser()
        if not found.is_file():
            raise GanlabError(f"{found}: no such weights file; give pytorch-fid's {OFFICIAL}")
        return found
    found = hub_weights()
    if found.is_file():
        return found
    if not download:
        raise GanlabError(f"no FID Inception weights at {found}: give a local copy of {OFFICIAL} with --weights "
                          "(or sample-quality.fid_weights), put it there, or allow a download with --download")
    import torch

    found.parent.mkdir(parents=True, exist_ok=True)
    url = pytorch_fid_inception().FID_WEIGHTS_URL
    try:  # torch.hub writes to a temporary file, checks the hash prefix, then moves it into place
        torch.hub.download_url_to_file(url, str(found), hash_prefix=OFFICIAL_SHA256_PREFIX, progress=True)
    except Exception as exc:
        raise GanlabError(f"could not download {url} ({type(exc).__name__}: {exc}); copy the file to {found} "
                          "by hand") from None
    return found


def checked_sha256(path: Path, expected: str | None, *, official: str = OFFICIAL,
                   option: str = "--weights-sha256") -> str:
    """The file's SHA-256, refused in one line when it does not start with ``expected`` (64 hex digits or at least
    the first 8, any case; empty: no check)."""
    expected = str(expected or "").strip().lower()
    if expected and not re.fullmatch("[0-9a-f]{8,64}", expected):
        raise GanlabError(f"{option} {expected!r}: give the weights file's SHA-256 (64 hex digits, or at least the "
                          "first 8), or an empty value to skip the check")
    stat = path.stat()
    ident = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if ident not in _HASHES:  # hashing 100 MB on every call would cost seconds
        _HASHES[ident] = file_sha256(path)
    if expected and not _HASHES[ident].startswith(expected):
        raise GanlabError(f"{path}: its SHA-256 is {_HASHES[ident]}, not the expected {expected}; use {official}, "
                          f"or give its hash as {option} if you trust this file")
    return _HASHES[ident]


def load_state_dict(path: Path) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise GanlabError(f"{path}: cannot be read as a state dict saved with torch.save "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise GanlabError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _build(path: Path, blocks: list[int]) -> tuple[Any, Any]:
    """pytorch-fid's InceptionV3 and the 1008-way final layer's weights. pytorch-fid fetches its weights by URL; it
    is handed the checked file's instead."""
    inception = pytorch_fid_inception()
    state = load_state_dict(path)
    if "fc.weight" not in state:
        raise GanlabError(f"{path}: not the FID Inception weights ({OFFICIAL} holds a state dict with fc.weight)")
    try:
        with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: state):
            model = inception.InceptionV3(blocks, resize_input=True, normalize_input=True)
    except RuntimeError as exc:
        raise GanlabError(f"{path}: not the FID Inception weights ({str(exc).splitlines()[0][:200]})") from None
    return model.eval(), state["fc.weight"].float()


@dataclass
class FidNetwork:
    """The FID Inception network on one checked weights file, giving ``dims`` features and 1008 logits."""

    weights: Path
    sha256: str
    dims: int = 2048
    resize: str = "pytorch-fid"
    device: Any = "cpu"

    def provenance(self) -> dict[str, Any]:
        return {"network": NETWORK, "weights_sha256": self.sha256, "resize": self.resize, "dims": self.dims}

    def line(self, n: int, seed: int) -> str:
        return (f"FID network: {NETWORK}, weights SHA-256 {self.sha256}, resize {self.resize}, {self.dims} dims, "
                f"{n} images per set, seed {seed}.")

    def _model(self, logits: bool) -> tuple[Any, Any]:
        block = DIMS.index(self.dims)
        blocks = sorted({block, 3} if logits else {block})
        key = (self.sha256, tuple(blocks), str(self.device))
        if key not in _NETWORKS:
            _NETWORKS.clear()  # one network (about 100 MB) at a time
            model, fc = _build(self.weights, blocks)
            _NETWORKS[key] = (model.to(self.device), fc.to(self.device))
        return _NETWORKS[key]

    def _inputs(self, images: Any) -> Any:
        """uint8 N x C x H x W -> float RGB in [0, 1], as pytorch-fid reads files (clean-fid's resize first)."""
        import torch

        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if self.resize == "clean-fid":
            from cleanfid.resize import build_resizer

            resize = build_resizer("clean")
            x = torch.from_numpy(np.stack([resize(im) for im in x.permute(0, 2, 3, 1).numpy()])).permute(0, 3, 1, 2)
        return x.float().div(255)

    def run(self, images: Any, *, logits: bool = False, progress: Any = None) -> dict[str, np.ndarray]:
        """{"features": N x dims float64, and "logits": N x 1008 float64 if asked} for uint8 images."""
        import torch
        import torch.nn.functional as F

        model, fc = self._model(logits)
        block = DIMS.index(self.dims)
        out: dict[str, list] = {"features": [], "logits": []}
        starts = range(0, len(images), BATCH)
        with torch.no_grad():
            for a in progress(starts, desc="FID Inception", total=len(starts)) if progress else starts:
                found = dict(zip(model.output_blocks, model(self._inputs(images[a:a + BATCH]).to(self.device))))
                # pytorch-fid averages the spatial maps of the blocks below pool3
                out["features"].append(F.adaptive_avg_pool2d(found[block], 1).flatten(1).double().cpu())
                if logits:
                    out["logits"].append((found[3].flatten(1) @ fc.T).double().cpu())
        return {name: torch.cat(parts).numpy() for name, parts in out.items() if parts}


def network(weights: str | Path | None = None, sha256: str | None = OFFICIAL_SHA256_PREFIX, *, dims: int = 2048,
            resize: str = "pytorch-fid", device: Any = "cpu", download: bool = False,
            option: str = "--weights-sha256") -> FidNetwork:
    """The FID Inception network on checked weights (see ``find_weights`` and ``checked_sha256``); ``option`` is
    what the user sets the hash with, for the error messages."""
    path = find_weights(weights, download=download)
    return FidNetwork(path, checked_sha256(path, sha256, option=option), int(dims), resize, device)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` consecutive parts of exp(E_x KL(p(y|x) || p(y))), p from softmax(logits)."""
    if len(logits) < splits:
        raise GanlabError(f"Inception Score: {len(logits)} images cannot fill {splits} splits; draw more")
    logits = np.asarray(logits, dtype=np.float64)
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scores, n = [], len(log_p)
    for part in (log_p[i * n // splits:(i + 1) * n // splits] for i in range(splits)):
        log_marginal = np.log(np.exp(part).mean(0))
        scores.append(np.exp((np.exp(part) * (part - log_marginal)).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def missing(options: dict) -> str | None:
    """Why the FID network cannot be used with these options, or None."""
    try:
        pytorch_fid_inception()
    except GanlabError as exc:
        return str(exc)
    if options.get("resize") == "clean-fid":
        try:
            import cleanfid.resize  # noqa: F401
        except ImportError:
            return "resize=clean-fid needs clean-fid: pip install 'ganlab[fid]' (or pip install clean-fid)"
    if not str(options.get("fid_weights", "") or "").strip() and not hub_weights().is_file():
        return (f"no FID Inception weights: set fid_weights=FILE (a copy of {OFFICIAL}) or put the file at "
                f"{hub_weights()}")
    return None


def network_of(ctx) -> FidNetwork:
    o = ctx.options
    return network(o.get("fid_weights"), o.get("fid_weights_sha256", OFFICIAL_SHA256_PREFIX),
                   dims=int(o.get("fid_dims", 2048)), resize=o.get("resize", "pytorch-fid"), device=ctx.device,
                   option="the fid_weights_sha256 option")


def progress_of(ctx):
    return None if ctx.progress is None or ctx.quiet else ctx.progress


class InceptionScore(Evaluator):
    name = "inception-score"
    description = "Inception Score (IS) of G's samples on pytorch-fid's FID Inception network: mean ± std over splits"
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

        o, net = ctx.options, network_of(ctx)
        if o["n"] < o["splits"]:
            raise GanlabError(f"inception-score: n={o['n']} samples cannot fill {o['splits']} splits; raise "
                              "--set inception-score.n")
        images = to_uint8(ctx.gan.sample(o["n"], seed=ctx.seed))
        is_mean, is_std = inception_score(net.run(images, logits=True, progress=progress_of(ctx))["logits"],
                                          o["splits"])
        return Result(metrics={"is_mean": is_mean, "is_std": is_std, "images": o["n"]},
                      verdict=f"Inception Score {is_mean:.3g} ± {is_std:.2g} over {o['splits']} splits of "
                              f"{o['n']} samples",
                      text=[net.line(o["n"], ctx.seed),
                            "IS: exp of the mean KL divergence between each sample's class distribution (softmax "
                            "over the network's 1008 ImageNet logits) and the split's average; higher means "
                            "confident and varied classes. It is only defined for ImageNet-like pictures: on "
                            "digits or faces it says little. Compare IS only at the same N and network."])
