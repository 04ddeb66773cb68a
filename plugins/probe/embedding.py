"""svm-probe's UMAP figure, with UMAP's compiled code cached across reports.

Most of umap-learn's numba functions are not compiled with ``cache=True``, so every new process would compile
them again (55-80 s on the 2-core machine). Here numba's cache is the cache's ``numba`` folder (unless numba is
imported already or ``NUMBA_CACHE_DIR`` is set) and caching is switched on for umap's functions before their first
call: only the first report on a machine compiles them, which is why the small ``probe-digits`` leaves it off.
"""
import contextlib
import os
import sys

from ganlab import Figure

UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.distances", "umap.sparse", "umap.utils", "umap.spectral")


def umap_figure(X_test, y_test, *, points: int, seed: int, cache) -> Figure:
    """The UMAP of ``points`` standardised test rows, coloured by label."""
    import numpy as np
    from matplotlib.figure import Figure as MplFigure

    if cache is not None and "numba" not in sys.modules and not os.environ.get("NUMBA_CACHE_DIR"):
        folder = cache.folder("numba")
        if folder is not None:
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import umap
    from numba.core.registry import CPUDispatcher

    for module in filter(None, map(sys.modules.get, UMAP_MODULES)):  # all imported by ``import umap``
        for value in vars(module).values():
            # not yet compiled and not cached: cache it (a compiled one keeps what it has)
            if isinstance(value, CPUDispatcher) and not value.overloads and type(value._cache).__name__ == "NullCache":
                with contextlib.suppress(Exception):  # a function numba cannot cache stays uncached
                    value.enable_caching()
    rng = np.random.default_rng(seed)
    n = min(len(y_test), points)
    rows = np.sort(rng.choice(len(y_test), n, replace=False))
    X = np.asarray(X_test[rows], dtype=np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    embedding = umap.UMAP(random_state=seed, n_jobs=1).fit_transform(X)
    fig = MplFigure(figsize=(6, 5))
    ax = fig.subplots()
    shown = ax.scatter(embedding[:, 0], embedding[:, 1], c=y_test[rows], cmap="tab10", s=6)
    fig.colorbar(shown, ax=ax, label="label")
    ax.set(xticks=[], yticks=[])
    return Figure(f"UMAP of D features, {n} test images coloured by label", fig)
