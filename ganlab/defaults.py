"""The one home of training defaults: the Python API and the CLI both read ``TrainOptions``."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ganlab.errors import GanlabError

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 0 .. 2^63 - 1
# Settings a checkpoint records that decide what a resumed run trains on and how; --resume keeps them unless
# --allow-change names one. The model's own settings (ngf, ...) come from the checkpoint and cannot change.
RECORDED = ("dataset", "data_root", "split", "limit", "exclude", "skip_bad_images", "batch_size", "lr", "beta1",
            "seed", "amp")


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``ganlab train``. Model fields left None come from the preset, else ``ModelConfig``."""

    dataset: str = "digits"
    data_root: str | None = None
    split: str = "train"
    download: bool = False
    limit: int | None = None  # train on the first N images of the split (quick runs)
    preset: str | None = None  # dcgan32, dcgan64, imagenet32
    image_size: int | None = None
    channels: int | None = None
    nz: int | None = None
    ngf: int | None = None
    ndf: int | None = None
    kernel_size: int | None = None
    latent: str | None = None
    extra_layers: int | None = None
    epochs: int = 25
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    out: str | None = None  # default runs/<dataset>
    resume: str | None = None  # continue this checkpoint (into its own folder unless ``out`` is given)
    overwrite: bool = False  # replace a run already in ``out`` (without it, training there is refused)
    skip_bad_images: bool = False  # drop unreadable image files (with a count) instead of stopping
    exclude: str | None = None  # a file of image positions to leave out (e.g. from ganlab dedup)
    sample_every: int = 1  # epochs between sample grids
    allow_change: tuple[str, ...] = ()  # recorded settings that --resume may change (see RECORDED)

    def __post_init__(self) -> None:
        if not (self.epochs >= 1 and self.batch_size >= 1 and math.isfinite(self.lr) and self.lr > 0
                and math.isfinite(self.beta1) and 0 <= self.beta1 < 1):
            raise GanlabError(f"epochs and batch size must be >= 1, lr a finite number > 0 and 0 <= beta1 < 1 "
                              f"(got epochs {self.epochs}, batch size {self.batch_size}, lr {self.lr}, "
                              f"beta1 {self.beta1})")
        if not 0 <= self.seed <= MAX_SEED:
            raise GanlabError(f"seed must be between 0 and {MAX_SEED} (2^63 - 1), not {self.seed}")

    def model_config(self, dataset_channels: int = 3):
        """The ``ModelConfig`` these options ask for; ``dataset_channels`` is the dataset's own (its source's).

        Imported here so this module stays torch-free.
        """
        from ganlab.models import PRESETS, ModelConfig

        if self.preset is not None and self.preset not in PRESETS:
            raise GanlabError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        base = replace(PRESETS[self.preset] if self.preset else ModelConfig(), channels=dataset_channels)
        overrides = {f.name: getattr(self, f.name) for f in fields(ModelConfig)
                     if getattr(self, f.name, None) is not None}
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> "TrainOptions":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise GanlabError(f"unknown training options {unknown}")
        return replace(self, **changes)
