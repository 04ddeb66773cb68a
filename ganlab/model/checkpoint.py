"""ganlab checkpoints: the one home of the file format — its keys, writing, reading and training state.

One file holds everything needed to rebuild the models and to resume training bit for bit. Writes are atomic: a
crash mid-save leaves the previous checkpoint intact. Reads use ``torch.load(weights_only=True)``: a file that would
run code is refused, never executed; files that are not torch files at all go to the plugins' readers
(``ganlab_load_checkpoint``) unread.
"""
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ganlab.errors import GanlabError
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.model.networks import ModelConfig
from ganlab.store.atomic import atomic_file
from ganlab.store.run_folder import LAST

FORMAT = "ganlab"
FORMAT_VERSION = 1

# The training state's keys: each holds a ``state_dict()``. They stay out of ``LoadedGAN.meta``; the rest goes in.
WEIGHT_KEYS = ("generator", "discriminator", "optimizer_g", "optimizer_d", "scaler")
COUNTER_KEYS = ("epoch", "batch_in_epoch", "step")


def build_payload(config: ModelConfig, parts: dict[str, Any], counters: dict[str, int], *, rng: dict[str, Any],
                  dataset: dict[str, Any], options: dict[str, Any], history: dict[str, list[float]]) -> dict[str, Any]:
    """The checkpoint: ``parts`` maps WEIGHT_KEYS to the models, optimisers and scaler, ``counters`` COUNTER_KEYS."""
    from ganlab import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "ganlab_version": __version__,
            "torch_version": str(torch.__version__), "config": config.to_dict(),
            **{key: parts[key].state_dict() for key in WEIGHT_KEYS},
            **{key: int(counters[key]) for key in COUNTER_KEYS},
            "rng": rng, "dataset": dataset, "options": options, "history": history}


def restore_training_state(payload: dict[str, Any], parts: dict[str, Any], noise: torch.Generator,
                           path: str | Path) -> tuple[tuple[int, ...], dict[str, list[float]]]:
    """Load ``parts`` (as for ``build_payload``) and ``noise`` from ``payload``, a scaler only where it was saved;
    returns (the counters in COUNTER_KEYS order, the history)."""
    try:
        for key, part in parts.items():
            if key in payload or key != "scaler":
                part.load_state_dict(payload[key])
        noise.set_state(payload["rng"]["noise"].to(noise.get_state().device))
        counters = tuple(int(payload[key]) for key in COUNTER_KEYS)
        history = {k: list(v) for k, v in payload["history"].items()}
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise GanlabError(f"cannot resume from {path}: {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:160]}") from None
    return counters, history


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: the old file stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:  # torch's zip writer turns a full disk into a RuntimeError
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise
    return path


def is_torch_file(path: str | Path) -> bool:
    """True for what ``torch.save`` writes: a pickle, or a zip archive holding a ``data.pkl`` and no
    ``constants.pkl`` (TorchScript's); not an ``.npz``, a ``torch.export`` archive, safetensors or anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(b"PK\x03\x04"):
        return head.startswith(b"\x80")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.rpartition("/")[2] for name in archive.namelist()]
            return "data.pkl" in names and "constants.pkl" not in names
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # a damaged zip that starts like one: torch.load says what is wrong with it


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing, hostile or broken files."""
    path = Path(path)
    if not path.is_file():
        raise GanlabError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise GanlabError(f"{path} is empty (0 bytes), not a checkpoint")
    if not is_torch_file(path):
        raise GanlabError(f"{path} is not a checkpoint: it is not a file written by torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(exc))
        if "Weights only load failed" in (str(exc).strip().splitlines() or [""])[0] and found:
            raise GanlabError(f"refused to load {path}: it holds Python objects ({found.group(1)}) that would run "
                              "code when unpickled; ganlab only loads weights-only checkpoints (re-save the state "
                              "dicts from trusted code)") from None
        raise GanlabError(f"{path} is not a readable checkpoint; it may be truncated or corrupt") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "PytorchStreamReader" in first or isinstance(exc, zipfile.BadZipFile):
            first = "its zip archive is damaged"
        raise GanlabError(f"{path} is not a readable checkpoint ({first[:160]}); it may be truncated or "
                          "corrupt") from None


def resolve(path: str | Path) -> Path:
    """A run folder stands for its ``last.pt``."""
    path = Path(path)
    if path.is_dir() and not (path / LAST).is_file():
        raise GanlabError(f"{path} is a folder without {LAST}; give a checkpoint file or a ganlab run folder")
    return path / LAST if path.is_dir() else path


def is_ganlab_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def gan_from_payload(payload: dict[str, Any], path: Path) -> LoadedGAN:
    """Rebuild G and D (eval mode, CPU) from a ganlab checkpoint dict."""
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GanlabError(f"{path} has checkpoint format {version!r}; this ganlab reads up to {FORMAT_VERSION} "
                          "(upgrade ganlab)")
    if not isinstance(payload.get("config"), dict):
        raise GanlabError(f"{path} is a damaged ganlab checkpoint (its model config is missing)")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise GanlabError(f"{path} is a damaged ganlab checkpoint (model config: {exc})") from None
    for key in ("generator", "discriminator"):
        if key not in payload:
            raise GanlabError(f"{path} is a damaged ganlab checkpoint (no {key} weights)")
    meta = {k: v for k, v in payload.items() if k not in WEIGHT_KEYS}
    return LoadedGAN.from_state_dicts(config, payload["generator"], payload["discriminator"], path=path, meta=meta)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", *,
                    foreign: Callable[[Path, Any], LoadedGAN | None] | None = None) -> LoadedGAN:
    """Load a ganlab checkpoint or run folder; other formats go to ``foreign(path, state)``, which returns a
    ``LoadedGAN`` or None. ``state``: the weights-only content of a torch file, None for any other (never unpickled)."""
    path = resolve(path)
    if not path.is_file():
        raise GanlabError(f"checkpoint not found: {path}")
    try:
        state = read_checkpoint(path) if path.stat().st_size and is_torch_file(path) else None
    except GanlabError:  # torch cannot read it; a plugin may still know the format
        loaded = foreign(path, None) if foreign is not None else None
        if loaded is None:
            raise
        return loaded.to(device)
    if is_ganlab_checkpoint(state):
        return gan_from_payload(state, path).to(device)
    loaded = foreign(path, state) if foreign is not None else None
    if loaded is not None:
        return loaded.to(device)
    if state is None:
        what = "empty" if path.stat().st_size == 0 else "not a file written by torch.save"
        raise GanlabError(f"{path} is not a checkpoint ({what}) and no plugin reads its format (see `ganlab plugins`)")
    raise GanlabError(f"{path} is not a ganlab checkpoint and no plugin recognised its format (see `ganlab plugins`)")
