"""Which torch device to run on: one small module so that reports and commands need not import training."""
import torch

from ganlab.errors import GanlabError


def select_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; otherwise the named device (checked to exist)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GanlabError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanlabError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GanlabError(f"--device {name}: MPS is not available here; use --device cpu")
    return device
