"""``LoadedGAN``: a generator and (optionally) a discriminator ready to use, whatever file they came from."""
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganlab.errors import GanlabError
from ganlab.model.batchnorm import statistics_from
from ganlab.model.networks import Discriminator, Generator, ModelConfig, sample_latent


@dataclass
class LoadedGAN:
    """A loaded model pair, both in eval mode; ``discriminator`` is None when only a generator was given.

    ``meta`` holds what the file recorded besides the weights, every key optional: ``epoch``, ``step``, ``dataset``
    (a dict with ``name``, ``split``, ``root``, ``size``), ``options`` (training options), ``history`` (per-step
    ``loss_D``, ``loss_G``, ``D_x``, ``D_G_z`` and ``epoch_end_steps``), ``format`` (the file format) and versions.
    """

    config: ModelConfig
    generator: Generator
    discriminator: Discriminator | None
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_state_dicts(cls, config: ModelConfig, generator_state: dict[str, Any],
                         discriminator_state: dict[str, Any] | None = None, *, path: str | Path = "<memory>",
                         meta: dict[str, Any] | None = None) -> "LoadedGAN":
        """Build G (and D) for ``config`` and load the state dicts; a mismatch names the tensors that differ."""
        generator = _loaded(Generator(config), generator_state, "generator", path)
        discriminator = (None if discriminator_state is None
                         else _loaded(Discriminator(config), discriminator_state, "discriminator", path))
        return cls(config, generator, discriminator, Path(path), dict(meta or {}))

    @property
    def dataset(self) -> str | None:
        """The recorded dataset name, or None."""
        recorded = self.meta.get("dataset")
        name = recorded.get("name") if isinstance(recorded, dict) else recorded
        return name if isinstance(name, str) and name else None

    @property
    def data_root(self) -> str | None:
        """The recorded data folder (absolute when ganlab trained the model), or None."""
        recorded = self.meta.get("dataset")
        root = recorded.get("root") if isinstance(recorded, dict) else None
        return root if isinstance(root, str) and root else None

    def to(self, device: torch.device | str) -> "LoadedGAN":
        self.generator.to(device)
        if self.discriminator is not None:
            self.discriminator.to(device)
        return self

    @torch.no_grad()
    def unsettled_batchnorm(self, n: int = 64, seed: int = 0) -> str | None:
        """Why G's BatchNorm running statistics look unsettled (an early checkpoint), or None: its samples in eval
        mode (running statistics) are nearly constant while in train mode (each batch's own) they vary."""
        z = sample_latent(self.config, n, torch.Generator().manual_seed(seed), next(self.generator.parameters()).device)
        spread_eval = float(self.generator.eval()(z).std(0).mean())
        spread_train = float(copy.deepcopy(self.generator).train()(z).std(0).mean())
        if spread_train > 0.1 and spread_eval < 0.2 * spread_train:
            return (f"G's samples are nearly constant in eval mode (pixel std {spread_eval:.3g}) but vary with "
                    f"batch statistics (std {spread_train:.3g}): its BatchNorm running statistics have not settled "
                    "(an early checkpoint?)")
        return None

    def settle_batchnorm(self, samples: int = 1024, seed: int = 0, batch_size: int = 128) -> "LoadedGAN":
        """Recompute G's BatchNorm running statistics from ``samples`` random latent vectors (a train-mode pass,
        pooled exactly), so eval-mode samples look like train-mode ones; D is left as it is."""
        z = sample_latent(self.config, samples, torch.Generator().manual_seed(seed))
        self.generator = statistics_from(self.generator, z.split(batch_size))
        return self

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
        """n images in [-1, 1], N x C x H x W on the CPU; the same seed gives the same images."""
        device = next(self.generator.parameters()).device
        z = sample_latent(self.config, n, torch.Generator().manual_seed(seed))
        self.generator.eval()
        return torch.cat([self.generator(chunk.to(device)).cpu() for chunk in z.split(batch_size)])


def _loaded(module: torch.nn.Module, state: Any, what: str, path: str | Path) -> torch.nn.Module:
    """``module`` in eval mode with ``state`` loaded; a mismatch is one line naming the first tensors that differ."""
    if not isinstance(state, dict):
        raise GanlabError(f"{path}: the {what} weights are a {type(state).__name__}, not a state dict")
    own = module.state_dict()
    shape = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    wrong = [f"{k} {shape[k]} vs {tuple(v.shape)}" for k, v in own.items() if k in state and shape[k] != v.shape]
    problems = [f"{label} {', '.join(names[:shown])}{' ...' if len(names) > shown else ''}{note}"
                for label, names, shown, note in (("missing", sorted(set(own) - set(state)), 3, ""),
                                                  ("unexpected", sorted(set(state) - set(own)), 3, ""),
                                                  ("shape of", wrong, 2, " (file vs model)")) if names]
    if problems:
        raise GanlabError(f"{path}: {what} weights do not fit the model config: {'; '.join(problems)}")
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise GanlabError(f"{path}: {what} weights do not fit the model config ({first})") from None
    return module.eval()
