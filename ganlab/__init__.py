"""ganlab: train, load, evaluate and analyse DCGANs (Radford, Metz & Chintala 2015).

Everything a plugin or a script needs is a name of this package; ``ganlab.<submodule>`` is internal
and may move. Light to import: torch-backed names load on first use.
"""
__version__ = "0.1.0"

from ganlab.errors import GanlabError  # noqa: E402, F401
from ganlab.plugin.components import NEEDS, Analysis, Evaluator, Figure, Image, Result, RunContext, Table  # noqa: E402, F401
from ganlab.plugin.experiments import Experiment  # noqa: E402, F401
from ganlab.plugin.hookspecs import hookimpl  # noqa: E402, F401

_LAZY = {name: module for module, names in {
    "ganlab.api": ("load", "train", "detector", "open_split", "load_split", "dataset_source"),
    "ganlab.defaults": ("ModelConfig", "PRESETS", "TrainOptions", "ReportOptions"),
    "ganlab.model.networks": ("Generator", "Discriminator", "sample_latent", "init_weights"),
    "ganlab.model.loaded_gan": ("LoadedGAN",),
    "ganlab.model.devices": ("select_device",),
    "ganlab.model.batchnorm": ("recompute_batchnorm",),
    "ganlab.data.datasets": ("DatasetSource", "Layout"),
    "ganlab.data.pixel_ranges": ("to_unit_range", "to_display_range", "to_uint8"),
    "ganlab.plugin.options": ("Option",),
    "ganlab.plugin.detectors": ("Detector", "Box"),
    "ganlab.plugin.feature_spaces": ("FeatureSpace",),
    "ganlab.measure.neighbours": ("nearest_neighbours",),
    "ganlab.measure.rows": ("shape_of", "row_block", "row_blocks", "block_rows"),
    "ganlab.measure.features": ("discriminator_features", "feature_dim", "pool_maps", "cached_features",
                                "feature_cache_key"),
    "ganlab.store.digest": ("content_digest", "file_sha256"),
    "ganlab.store.atomic": ("atomic_file", "write_atomically"),
    "ganlab.store.staged": ("StagedFolder",),
    "ganlab.store.claims": ("check_outside", "epoch_files"),
    "ganlab.store.cache": ("Cache",),
}.items() for name in names}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganlab' has no attribute {name!r}")


__all__ = sorted(["Analysis", "Evaluator", "Experiment", "Figure", "GanlabError", "Image", "NEEDS", "Result",
                  "RunContext", "Table", "__version__", "hookimpl", *_LAZY])
