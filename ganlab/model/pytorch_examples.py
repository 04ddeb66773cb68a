"""Reads checkpoints of the pytorch/examples DCGAN script (``netG_epoch_N.pth`` / ``netD_epoch_N.pth``).

Each file is a plain state dict of an ``nn.Sequential`` called ``main``, laid out exactly like ganlab's models
(no biases); its D ends in a Sigmoid, which has no weights, so the logit ganlab's D returns is that Sigmoid's
input. nz, ngf, ndf, channels, kernel and image size are inferred from the weight shapes.
"""
import re
from pathlib import Path
from typing import Any

from ganlab.errors import GanlabError
from ganlab.model.checkpoint import read_checkpoint
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.model.networks import ModelConfig


def _conv_weights(state: dict[str, Any]) -> list[Any]:
    """The 4-d weights of ``main``, in layer order."""
    keyed = {int(m.group(1)): v for k, v in state.items()
             if (m := re.fullmatch(r"main\.(\d+)\.weight", k)) and getattr(v, "ndim", 0) == 4}
    return [keyed[i] for i in sorted(keyed)]


def _unwrapped(state: Any) -> Any:
    """``state`` without the ``module.`` prefix that ``nn.DataParallel`` puts on every key, as saved from a wrapped
    model."""
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return state


def _looks_like(state: Any) -> str | None:
    """'generator', 'discriminator' or None."""
    if not isinstance(state, dict) or "main.0.weight" not in state:
        return None
    # G's first layer is followed by BatchNorm; D's input layer has none (LeakyReLU directly).
    return "generator" if "main.1.running_mean" in state else "discriminator"


def load_pair(generator_path: str | Path, discriminator_path: str | Path | None = None, *,
              generator_state: Any = None) -> LoadedGAN:
    """Load a pytorch/examples G (and D, given or found beside it as netD_*) into ganlab models;
    ``generator_state``: G's file already read (weights-only)."""
    generator_path = Path(generator_path)
    g_state = _unwrapped(read_checkpoint(generator_path) if generator_state is None else generator_state)
    if _looks_like(g_state) != "generator":
        raise GanlabError(f"{generator_path} is not a pytorch/examples DCGAN generator state dict (netG_*.pth)")
    partner = generator_path.with_name(generator_path.name.replace("netG", "netD"))  # netG_epoch_24 -> netD_epoch_24
    found = partner if partner != generator_path and partner.is_file() else None
    d_path = Path(discriminator_path) if discriminator_path else found
    d_state = _unwrapped(read_checkpoint(d_path)) if d_path else None
    if d_state is not None and _looks_like(d_state) != "discriminator":
        raise GanlabError(f"{d_path} is not a pytorch/examples DCGAN discriminator state dict (netD_*.pth)")
    try:
        g_convs = _conv_weights(g_state)
        nz = g_convs[0].shape[0]  # ConvTranspose2d weight: [in, out, k, k]
        ngf, channels, _, kernel = g_convs[-1].shape
        ndf = _conv_weights(d_state)[0].shape[0] if d_state is not None else ngf
        config = ModelConfig(image_size=4 * 2 ** (len(g_convs) - 1), channels=int(channels), nz=int(nz),
                             ngf=int(ngf), ndf=int(ndf), kernel_size=int(kernel))
    except (ValueError, IndexError, AttributeError) as exc:
        raise GanlabError(f"{generator_path}: weights do not fit a DCGAN of any size ({exc})") from None
    meta = {"format": "pytorch-examples", "generator_path": str(generator_path),
            "discriminator_path": str(d_path) if d_path else None}
    return LoadedGAN.from_state_dicts(config, g_state, d_state, path=generator_path, meta=meta)


def read_if_pytorch_examples(path: str | Path, state: Any) -> LoadedGAN | None:
    """The LoadedGAN for a pytorch/examples generator file (``state``: its weights-only content), else None."""
    kind = _looks_like(_unwrapped(state))
    if kind == "discriminator":
        raise GanlabError(f"{path} is a pytorch/examples discriminator; pass its generator instead "
                          "(ganlab sample --generator netG_epoch_N.pth --discriminator netD_epoch_N.pth)")
    return load_pair(path, generator_state=state) if kind == "generator" else None
