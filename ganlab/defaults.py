"""The one home of defaults: the model's shape (``ModelConfig``), training (``TrainOptions``) and reports
(``ReportOptions``), read by the Python API, the command line (``--help`` shows them) and plugins. No torch."""
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ganlab.errors import GanlabError

MAX_SEED = 2**63 - 1  # torch.manual_seed takes 0 .. 2^63 - 1
IMAGE_SIZES = (16, 32, 64, 128)
KERNEL_SIZES = (3, 4, 5)
LATENTS = ("normal", "uniform")
# Settings a checkpoint records that decide what a resumed run trains on and how; --resume keeps them unless
# --allow-change names one. The model's own settings (ngf, ...) come from the checkpoint and cannot change.
RECORDED = ("dataset", "data_root", "split", "limit", "exclude", "skip_bad_images", "batch_size", "lr", "beta1",
            "seed", "amp")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild G and D; stored in every checkpoint."""

    image_size: int = 32  # a power of two from 16 to 128
    channels: int = 3  # 1 (grey) or 3 (RGB)
    nz: int = 100  # latent dimension
    ngf: int = 64  # G width: its last hidden layer has ngf feature maps
    ndf: int = 64  # D width: its first layer has ndf feature maps
    kernel_size: int = 4  # 4 (pytorch/examples) or 3/5 (the paper's models)
    latent: str = "normal"  # "normal" N(0, 1) or "uniform" U[-1, 1]
    extra_layers: int = 0  # stride-1 layers before each strided D layer (mirrored in G)

    def __post_init__(self) -> None:
        if self.image_size not in IMAGE_SIZES:
            raise GanlabError(f"image size {self.image_size} is not supported; use a power of two from 16 to 128 "
                              "(32 or 64)")
        if self.channels not in (1, 3):
            raise GanlabError(f"channels must be 1 or 3, not {self.channels}")
        if self.kernel_size not in KERNEL_SIZES:
            raise GanlabError(f"kernel size must be 3, 4 or 5, not {self.kernel_size}")
        if self.latent not in LATENTS:
            raise GanlabError(f"latent must be one of {', '.join(LATENTS)}, not {self.latent!r}")
        if min(self.nz, self.ngf, self.ndf) < 1 or self.extra_layers < 0:
            raise GanlabError("nz, ngf and ndf must be positive and extra_layers >= 0")
        if self.extra_layers and self.kernel_size % 2 == 0:
            raise GanlabError("extra stride-1 layers need an odd kernel size (3 or 5) to keep the image size")

    @property
    def n_strided(self) -> int:
        """Strided layers in D (= upsampling layers in G): each halves the side, down to 4x4."""
        return int(math.log2(self.image_size)) - 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise GanlabError(f"unknown model config keys {unknown}; this checkpoint needs a newer ganlab")
        return cls(**values)


PRESETS: dict[str, ModelConfig] = {
    "dcgan32": ModelConfig(image_size=32),
    "dcgan64": ModelConfig(image_size=64),
    # The paper's ImageNet-1k 32x32 model for the CIFAR-10 probe: 3x3 convolutions 128@32, 128@16, 256@16, 256@8,
    # 512@8, 512@4 (stride 1 and 2 alternating), a 256-d uniform z: 16 x 1792 = 28672 max-pooled probe features.
    "imagenet32": ModelConfig(image_size=32, nz=256, ngf=128, ndf=128, kernel_size=3, latent="uniform", extra_layers=1),
}


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
    # settings given on purpose (the flags typed): with ``resume`` each is checked against the record even when
    # it equals its default, which is otherwise taken as left alone
    given: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.epochs >= 1 and self.batch_size >= 1 and math.isfinite(self.lr) and self.lr > 0
                and math.isfinite(self.beta1) and 0 <= self.beta1 < 1):
            raise GanlabError(f"epochs and batch size must be >= 1, lr a finite number > 0 and 0 <= beta1 < 1 "
                              f"(got epochs {self.epochs}, batch size {self.batch_size}, lr {self.lr}, "
                              f"beta1 {self.beta1})")
        if not 0 <= self.seed <= MAX_SEED:
            raise GanlabError(f"seed must be between 0 and {MAX_SEED} (2^63 - 1), not {self.seed}")
        if isinstance(self.given, str) or not set(self.given) <= {f.name for f in fields(self)}:
            raise GanlabError(f"given must name TrainOptions settings (a tuple of names), not {self.given!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise GanlabError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")

    def model_config(self, dataset_channels: int = 3) -> ModelConfig:
        """The ``ModelConfig`` these options ask for; ``dataset_channels`` is the dataset's own (its source's)."""
        base = replace(PRESETS[self.preset] if self.preset else ModelConfig(), channels=dataset_channels)
        overrides = {f.name: getattr(self, f.name) for f in fields(ModelConfig) if getattr(self, f.name) is not None}
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The settings a checkpoint records: which flags one command typed (``given``) is not one of them."""
        return {k: v for k, v in asdict(self).items() if k != "given"}

    def updated(self, **changes: Any) -> "TrainOptions":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise GanlabError(f"unknown training options {unknown}")
        return replace(self, **changes)


@dataclass(frozen=True)
class ReportOptions:
    """Defaults of ``ganlab report`` (and ``ganlab run``'s report)."""

    seed: int = 0
    device: str = "auto"
    epoch_points: int = 10  # epoch files plotted across training, evenly spread (0: every one)
    component_timeout: float = 6 * 3600.0  # seconds one component may run (0: no limit)
