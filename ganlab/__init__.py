"""ganlab: train, load, evaluate and analyse DCGANs (Radford, Metz & Chintala 2015).

Everything a plugin or a script needs is a name of this package; ``ganlab.<submodule>`` is internal
and may move. Light to import: torch-backed names load on first use.
"""
__version__ = "0.1.0"

from ganlab.components import NEEDS, Analysis, Evaluator, Figure, Image, Result, RunContext, Table  # noqa: E402, F401
from ganlab.errors import GanlabError  # noqa: E402, F401
from ganlab.experiments import Experiment  # noqa: E402, F401
from ganlab.hookspecs import hookimpl  # noqa: E402, F401

_LAZY = {
    # models and loading
    "load": "ganlab.api", "train": "ganlab.api", "LoadedGAN": "ganlab.loaded_gan", "ModelConfig": "ganlab.defaults",
    "Generator": "ganlab.models", "Discriminator": "ganlab.models", "PRESETS": "ganlab.defaults",
    "sample_latent": "ganlab.models", "init_weights": "ganlab.models", "TrainOptions": "ganlab.defaults",
    "ReportOptions": "ganlab.defaults",
    "select_device": "ganlab.devices", "Detector": "ganlab.detectors", "Box": "ganlab.detectors",
    "detector": "ganlab.api", "Option": "ganlab.options", "FeatureSpace": "ganlab.feature_spaces",
    # data
    "DatasetSource": "ganlab.datasets", "Layout": "ganlab.datasets", "open_split": "ganlab.api",
    "load_split": "ganlab.api", "dataset_source": "ganlab.api",
    "to_unit_range": "ganlab.images", "to_display_range": "ganlab.images", "to_uint8": "ganlab.images",
    "nearest_neighbours": "ganlab.measure.neighbours",
    # row blocks of large (memory-mapped) feature matrices, the one way to read them in chunks
    "shape_of": "ganlab.measure.rows", "row_block": "ganlab.measure.rows", "row_blocks": "ganlab.measure.rows",
    "block_rows": "ganlab.measure.rows",
    # D's pooled features, shared by the probe, memorisation checks and sample quality
    "discriminator_features": "ganlab.measure.features", "feature_dim": "ganlab.measure.features",
    "pool_maps": "ganlab.measure.features", "cached_features": "ganlab.measure.features",
    "feature_cache_key": "ganlab.measure.features",
    "recompute_batchnorm": "ganlab.batchnorm", "content_digest": "ganlab.store.digest",
    # writing files: atomically, into folders ganlab may write, and the verified cache
    "atomic_file": "ganlab.store.atomic", "write_atomically": "ganlab.store.atomic",
    "StagedFolder": "ganlab.store.staged", "check_outside": "ganlab.store.claims", "Cache": "ganlab.store.cache",
    "file_sha256": "ganlab.store.digest",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganlab' has no attribute {name!r}")


__all__ = sorted(["Analysis", "Evaluator", "Experiment", "Figure", "GanlabError", "Image", "NEEDS", "Result",
                  "RunContext", "Table", "__version__", "hookimpl", *_LAZY])
