"""Linear L2-SVM (squared hinge, one-vs-rest) for feature probes.

The DCGAN paper (Radford et al. 2015, sections 5.1/5.2) evaluates features
with a regularised linear L2-SVM.  We provide two solvers of *the same*
objective, the one sklearn's ``LinearSVC`` (liblinear) minimises.  For every
class ``k`` (one-vs-rest, ``y_ik = +1`` if sample ``i`` is of class ``k``,
else ``-1``) with the bias handled as liblinear does -- an extra constant
feature of value ``s = intercept_scaling`` whose weight ``w_b`` is
regularised like every other weight, and ``intercept = s * w_b``::

    f_k(w, w_b) = 0.5 * (||w||^2 + w_b^2)
                  + C * sum_i max(0, 1 - y_ik (w . x_i + s * w_b))^2

* ``solver="liblinear"`` -- sklearn ``LinearSVC`` (dense float64 copy of X,
  so only for problems that fit comfortably in memory; :mod:`.liblinear`).
* ``solver="torch"`` -- all K classes at once as one ``(D+1) x K`` parameter
  matrix, full-batch ``torch.optim.LBFGS`` with strong-Wolfe line search,
  preconditioned by the top eigenvectors of a row sample's second moment
  (:class:`.preconditioner.Preconditioner`) and optionally warm-started from
  another fit (:mod:`.torch_solver`).
  X is only ever read in row chunks (``X[a:b]``), so it can be a
  ``np.memmap`` larger than RAM; peak extra memory is about one chunk.
* ``solver="auto"`` -- torch when ``X.nbytes > 1e9`` else liblinear.

This module is the public entry: :func:`fit_linear_svm` checks the problem
and dispatches to a solver; the objective and the fitted :class:`LinearProbe`
live in :mod:`.objective` and are re-exported here.

No preprocessing happens in here: the objective is LinearSVC's on exactly the
features given.  Standardisation is the caller's job (see ``protocol``).

Accepted feature containers (``X``): numpy arrays / memmaps (N x D, any float
dtype, float32 C-contiguous is zero-copy), torch tensors, or any object with
``.shape == (N, D)`` whose ``X[a:b]`` returns an array-like row block (e.g.
``views.FeatureView``, which standardises lazily).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .liblinear import fit_liblinear
from .objective import LinearProbe, svm_objective
from .preconditioner import PRECONDITION_RANK
from .torch_solver import fit_torch
from .views import DEFAULT_CHUNK_BYTES, default_chunk_rows, nbytes_of, shape_of

__all__ = [
    "LinearProbe",
    "fit_linear_svm",
    "svm_objective",
    "AUTO_TORCH_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "SMALL_PROBLEM_FLOPS",
]

#: ``solver="auto"`` switches to the torch solver above this many bytes of X
#: (liblinear would need a float64 copy: 2x this, plus its own structures).
AUTO_TORCH_BYTES = 1e9
#: Below this N*D*K the CPU torch solver runs single-threaded by default.
SMALL_PROBLEM_FLOPS = 5e7


def _resolve_device(device: Any) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fit_linear_svm(X_train: Any, y_train: np.ndarray, C: float, *,
                   solver: str = "auto", device: Any = "cpu",
                   max_iter: int | None = None, tol: float | None = None,
                   fit_intercept: bool = True, intercept_scaling: float = 1.0,
                   dual: bool | str = "auto", random_state: int = 0,
                   chunk_rows: int | None = None, precision: str = "mixed",
                   history_size: int = 20, cache_on_device: bool | None = None,
                   num_threads: int | None = None, init: LinearProbe | None = None,
                   precondition: int = PRECONDITION_RANK, rows: np.ndarray | None = None,
                   verbose: bool = False) -> LinearProbe:
    """Fit a one-vs-rest linear L2-SVM (LinearSVC's objective, see module doc).

    ``X_train`` holds N x D features (float32 ndarray / np.memmap / torch
    tensor / lazy row view; the torch solver never copies it whole) and
    ``y_train`` their N integer (or any sortable) labels, at least 2 classes.
    ``C`` is the regularisation constant (the paper-style probes use
    1e-4..1e-1). ``solver`` is "liblinear", "torch" or "auto" (torch iff X
    bytes > 1e9); ``device`` is the torch solver's device ("cpu", "cuda",
    "auto").

    ``max_iter`` is LinearSVC's ``max_iter`` for liblinear (default 1000) and
    the L-BFGS iterations for torch (default 500; at most 2x that many
    passes). ``tol`` is LinearSVC's ``tol`` for liblinear (default 1e-4); the
    torch solver stops when ``max|grad f| <= tol * max|grad f(0)|`` (default
    1e-5). ``fit_intercept`` and ``intercept_scaling`` are as in LinearSVC (the
    bias is regularised). ``dual`` is for liblinear only: "auto" means dual
    iff n_samples < n_features. ``random_state`` seeds liblinear's
    coordinate-descent shuffling, and ``chunk_rows`` is the rows per chunk
    (default: ~64 MiB of float32 per chunk).

    The remaining options are for the torch solver only. ``precision="mixed"``
    runs float32 matmuls on float32 chunks (no chunk copy on CPU) with float64
    parameters, loss and gradient accumulation; "double" casts chunks to
    float64 (one 2x chunk copy per chunk). ``history_size`` is the L-BFGS
    memory. ``cache_on_device`` keeps X's chunks resident on a non-CPU device
    between passes (one device copy of X, none on the host); None means only
    if device is CUDA and X takes < 40% of free memory. ``num_threads`` sets
    torch's intra-op threads on CPU during the fit (restored afterwards); None
    means 1 for small problems (N*D*K < SMALL_PROBLEM_FLOPS, where OpenMP
    overhead dominates and a loaded machine can make several threads ~10x
    slower), otherwise torch's current setting. ``init`` starts L-BFGS from
    this probe's weights (a fit of the same classes at a nearby C or on
    overlapping rows) instead of from zero; along an ascending C grid this
    typically saves most of the passes over X (liblinear has no warm start
    and ignores it). ``precondition`` is the rank of the low-rank
    preconditioner built from a row sample of X (see ``Preconditioner``); 0
    turns it off. It changes how fast L-BFGS gets there, not the solution.

    ``rows`` fits on rows ``rows`` of X (and of ``y_train``, which then has one
    label per row of X) only. The torch solver still streams all of X in
    contiguous chunks and masks the other rows out, which beats gathering the
    subset on every pass when it is most of X (the full-label protocol's
    training pool); liblinear gets ``X[rows]``.

    Returns the fitted :class:`LinearProbe`.
    """
    n, d = shape_of(X_train)
    y = np.asarray(y_train).ravel()
    if y.shape[0] != n:
        raise ValueError(f"{n} rows in X but {y.shape[0]} labels")
    mask = None
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        if mask.sum() != rows.size:
            raise ValueError("rows must not repeat")
    classes = np.unique(y if mask is None else y[mask])
    if classes.size < 2:
        raise ValueError("need at least 2 classes")
    solver = resolve_solver(solver, nbytes_of(X_train) * (1 if mask is None else mask.mean()))
    if solver == "liblinear":
        if mask is not None:
            X_train, y = np.asarray(X_train[np.flatnonzero(mask)]), y[mask]
        return fit_liblinear(X_train, y, C, classes, max_iter=max_iter or 1000,
                             tol=1e-4 if tol is None else tol,
                             fit_intercept=fit_intercept,
                             intercept_scaling=intercept_scaling, dual=dual,
                             random_state=random_state, verbose=verbose)
    if solver == "torch":
        dev = _resolve_device(device)
        k = 1 if classes.size == 2 else classes.size
        if num_threads is None and dev.type == "cpu" and n * d * k < SMALL_PROBLEM_FLOPS:
            num_threads = 1
        prev = torch.get_num_threads()
        change = num_threads is not None and dev.type == "cpu" and int(num_threads) != prev
        if change:
            torch.set_num_threads(int(num_threads))
        try:
            return fit_torch(X_train, y, C, classes, device=dev,
                             max_iter=max_iter or 500,
                             tol=1e-5 if tol is None else tol,
                             fit_intercept=fit_intercept,
                             intercept_scaling=intercept_scaling,
                             chunk_rows=chunk_rows or default_chunk_rows(d),
                             precision=precision, history_size=history_size,
                             cache_on_device=cache_on_device, init=init, precondition=precondition,
                             mask=mask, verbose=verbose)
        finally:
            if change:
                torch.set_num_threads(prev)
    raise ValueError(f"unknown solver {solver!r} (liblinear, torch, auto)")


def resolve_solver(solver: str, nbytes: float) -> str:
    """"auto" -> "torch" above AUTO_TORCH_BYTES of features, else "liblinear"."""
    if solver == "auto":
        return "torch" if nbytes > AUTO_TORCH_BYTES else "liblinear"
    return solver
