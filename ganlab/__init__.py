"""ganlab: train, load, evaluate and analyse DCGANs (Radford, Metz & Chintala 2015).

Light to import: torch-backed names (``load``, ``LoadedGAN``, ``DatasetSource``) load on first use.
"""
__version__ = "0.1.0"

from ganlab.components import Analysis, Evaluator, Figure, Image, Result, RunContext, Table  # noqa: E402
from ganlab.errors import GanlabError  # noqa: E402
from ganlab.experiments import Experiment  # noqa: E402
from ganlab.hookspecs import hookimpl  # noqa: E402

_LAZY = {"load": "ganlab.checkpoint", "LoadedGAN": "ganlab.checkpoint", "DatasetSource": "ganlab.datasets",
         "ModelConfig": "ganlab.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ganlab' has no attribute {name!r}")


__all__ = ["Analysis", "DatasetSource", "Evaluator", "Experiment", "Figure", "GanlabError", "Image", "LoadedGAN",
           "ModelConfig", "Result", "RunContext", "Table", "__version__", "hookimpl", "load"]
