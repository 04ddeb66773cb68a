"""ganlab checkpoints: one weights-only file with everything needed to rebuild and resume.

Writes are atomic (temp file in the same folder, fsync, rename), so a crash or ``kill -9``
mid-save leaves the previous checkpoint intact. Reads use ``torch.load(weights_only=True)``:
a file that would run code when unpickled is refused, never executed.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganlab.errors import GanlabError
from ganlab.models import Discriminator, Generator, ModelConfig, sample_latent

FORMAT = "ganlab"
FORMAT_VERSION = 1
LAST = "last.pt"


@dataclass
class LoadedGAN:
    """A loaded model pair. ``discriminator`` is None when only a generator was given."""

    config: ModelConfig
    generator: Generator
    discriminator: Discriminator | None
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)  # epoch, step, dataset, options, history, versions

    @property
    def dataset(self) -> str | None:
        return (self.meta.get("dataset") or {}).get("name")

    @property
    def history(self) -> dict[str, list[float]]:
        return self.meta.get("history") or {}

    def to(self, device: torch.device | str) -> "LoadedGAN":
        self.generator.to(device)
        if self.discriminator is not None:
            self.discriminator.to(device)
        return self

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
        """n images in [-1, 1], N x C x H x W on the CPU; the same seed gives the same images."""
        device = next(self.generator.parameters()).device
        z = sample_latent(self.config, n, torch.Generator().manual_seed(seed))
        self.generator.eval()
        return torch.cat([self.generator(chunk.to(device)).cpu() for chunk in z.split(batch_size)])


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically: the old file stays until the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # Make the rename itself durable (POSIX: fsync the directory entry).
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing, hostile or broken files."""
    path = Path(path)
    if not path.is_file():
        raise GanlabError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in first:
            found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise GanlabError(f"refused to load {path}: it holds Python objects{what} that would run code when "
                              "unpickled; ganlab only loads weights-only checkpoints (re-save the state dicts from "
                              "trusted code)") from None
        raise GanlabError(f"{path} is not a readable checkpoint ({first}); it may be truncated or corrupt") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise GanlabError(f"{path} is not a readable checkpoint ({first}); it may be truncated or corrupt") from None


def resolve(path: str | Path) -> Path:
    """A run folder stands for its ``last.pt``."""
    path = Path(path)
    if path.is_dir():
        if not (path / LAST).is_file():
            raise GanlabError(f"{path} is a folder without {LAST}; give a checkpoint file or a ganlab run folder")
        return path / LAST
    return path


def is_ganlab_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def from_payload(payload: dict[str, Any], path: Path) -> LoadedGAN:
    """Rebuild G and D (eval mode, CPU) from a ganlab checkpoint dict."""
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise GanlabError(f"{path} has checkpoint format {version!r}; this ganlab reads up to {FORMAT_VERSION} (upgrade ganlab)")
    try:
        config = ModelConfig.from_dict(payload["config"])
        generator, discriminator = Generator(config), Discriminator(config)
        generator.load_state_dict(payload["generator"])
        discriminator.load_state_dict(payload["discriminator"])
    except GanlabError:
        raise
    except (KeyError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise GanlabError(f"{path} is a damaged ganlab checkpoint ({first})") from None
    meta = {k: v for k, v in payload.items() if k not in ("generator", "discriminator", "optimizer_g", "optimizer_d")}
    return LoadedGAN(config, generator.eval(), discriminator.eval(), path, meta)


def load(path: str | Path, device: torch.device | str = "cpu") -> LoadedGAN:
    """Load a ganlab checkpoint, a run folder (its last.pt), or any format a plugin can read.

    Returns a ``LoadedGAN`` with ``.generator``, ``.discriminator``, ``.config`` and ``.sample(n, seed)``.
    """
    from ganlab.registry import load_foreign_checkpoint

    path = resolve(path)
    payload = read_checkpoint(path)  # also proves the file is safe before any plugin sees it
    if is_ganlab_checkpoint(payload):
        return from_payload(payload, path).to(device)
    loaded = load_foreign_checkpoint(str(path))
    if loaded is None:
        raise GanlabError(f"{path} is not a ganlab checkpoint and no plugin recognised its format (see `ganlab plugins`)")
    return loaded.to(device)
