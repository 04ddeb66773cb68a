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

Three solvers of that objective, and ``auto`` to choose among them:

* ``solver="liblinear"`` -- sklearn ``LinearSVC`` (dense float64 copy of X,
  so only for problems that fit comfortably in memory; :mod:`.liblinear`).
* ``solver="kernel"`` -- for few rows (n <= D): the n x n Gram matrix of the
  rows with the bias feature and the finite Newton method on it, every class
  (and, in the protocol, every draw and every C of the grid) as one batched
  problem; exact Newton steps by Cholesky factorisations of the active rows'
  Gram block (:mod:`.dual`, :mod:`.kernel_protocol`).
* ``solver="torch"`` -- all K classes at once as one ``(D+1) x K`` parameter
  matrix, full-batch ``torch.optim.LBFGS`` with strong-Wolfe line search,
  preconditioned (:mod:`.preconditioner`: a low-rank preconditioner from a
  row sample, or -- given a :func:`shared_basis` -- one exact per class in the
  top-256 subspace) and optionally warm-started from another fit
  (:mod:`.torch_solver`). X is only ever read in row chunks (``X[a:b]``), so
  it can be a ``np.memmap`` larger than RAM; peak extra memory is about one chunk.
* ``solver="auto"`` -- :func:`resolve_solver`: torch above ``AUTO_TORCH_BYTES``
  (1 GB) of features; otherwise kernel when ``rows <= KERNEL_MAX_ROWS`` (2,000)
  and ``rows <= KERNEL_ROW_RATIO * dims`` (4); otherwise liblinear up to
  ``LIBLINEAR_MAX_DIMS`` (128) dims, torch above.

The crossover, measured on the shared 2-core CPU at one thread (load average
3-4), seconds for one 8-value C grid (1e-4..1e-1; torch warm-started along it
with a shared preconditioner, liblinear's ``tol`` 1e-4), MNIST features of a
32x32 ndf-32 D (3,584 dims; ``benchmarks/probe_speed.py --crossover``) and of
the K-means and pixel baselines (first d dims)::

    features        rows    kernel   torch   liblinear
    D, 3,584 dims    500      0.7    23.4*     17.2
                    1000      2.0    18.9*     28.8
                    2000      6.6    21.4*     64.9
                    3000     18.9    22.5*       -
                    4800     35.5    16.0*       -
    pixels, 1,024   1000      1.9     2.9       5.6
    K-means, 800    1000      0.8     2.3       9.6
                    4800     39.1     3.9      81.8
    K-means, 256    1000      1.4     5.2       7.8
                    4800     71.1     3.0      35.6
    digits, 64      1200     12.2     6.3       1.3
    (* torch streamed all 6,000 rows with the others masked out)

The kernel path's Gram matrix costs n^2 D and its Newton steps ~|S|^3 per
class (S: the rows with an active margin, a quarter to a half of them), so it
wins by 3-25x up to ~2,000 rows and loses by 10-25x at 4,800; torch's L-BFGS
passes cost n D K each and win for many rows; liblinear only wins on a few
dozen dims (digits' 64), where its C loops beat torch's per-pass overhead.

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
from .preconditioner import PRECONDITION_RANK, Preconditioner
from .torch_solver import fit_torch
from .views import DEFAULT_CHUNK_BYTES, default_chunk_rows, nbytes_of, shape_of

__all__ = [
    "LinearProbe",
    "fit_linear_svm",
    "svm_objective",
    "AUTO_TORCH_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "SMALL_PROBLEM_FLOPS",
    "KERNEL_MAX_ROWS",
    "KERNEL_ROW_RATIO",
    "LIBLINEAR_MAX_DIMS",
    "resolve_solver",
    "shared_basis",
    "SHARED_RANK",
]

#: ``solver="auto"`` switches to the torch solver above this many bytes of X
#: (liblinear would need a float64 copy: 2x this, plus its own structures).
AUTO_TORCH_BYTES = 1e9
#: Below this N*D*K the CPU torch solver runs single-threaded by default.
SMALL_PROBLEM_FLOPS = 5e7
#: Rank of the basis :func:`shared_basis` builds (the protocol's full-label torch fits).
SHARED_RANK = 128
#: ``solver="auto"`` takes the kernel path up to this many training rows, when rows <= ratio x dims.
KERNEL_MAX_ROWS = 2000
KERNEL_ROW_RATIO = 4.0
#: ``solver="auto"`` takes liblinear for larger row counts up to this many dims, torch above
#: (measured: liblinear 5x faster at 64 dims, torch 12x faster at 256; not measured in between).
LIBLINEAR_MAX_DIMS = 128


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
                   precondition: Any = PRECONDITION_RANK, rows: np.ndarray | None = None,
                   objective_tol: float | None = None, verbose: bool = False) -> LinearProbe:
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
    n_fit = n if mask is None else int(mask.sum())
    solver = resolve_solver(solver, nbytes_of(X_train) * n_fit / max(n, 1), shape=(n_fit, d))
    if solver == "kernel":
        from .kernel_protocol import fit_sets

        fits, _ = fit_sets(X_train, y, [rows], [float(C)], classes=classes, device=_resolve_device(device), tol=tol,
                           intercept_scaling=intercept_scaling, fit_intercept=fit_intercept, precision=precision,
                           max_iter=max_iter)
        return fits[0].probe(float(C), classes)
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
                             mask=mask, verbose=verbose, objective_tol=objective_tol)
        finally:
            if change:
                torch.set_num_threads(prev)
    raise ValueError(f"unknown solver {solver!r} (liblinear, torch, auto)")


def resolve_solver(solver: str, nbytes: float, shape: tuple[int, int] | None = None) -> str:
    """The solver "auto" means for a fit on ``shape = (rows, dims)`` with ``nbytes`` of features.

    * above ``AUTO_TORCH_BYTES``: "torch" (the others need the rows in memory);
    * ``rows <= KERNEL_MAX_ROWS`` and ``rows <= KERNEL_ROW_RATIO * dims``: "kernel" (the n x n Gram
      matrix and its Newton solve cost less than the passes over X either primal solver makes);
    * else ``dims <= LIBLINEAR_MAX_DIMS``: "liblinear" (on a few dozen features liblinear's
      C loops beat torch's per-pass overhead);
    * else "torch".

    Without ``shape`` (the old signature) "auto" is "torch" above the byte limit and "liblinear" below.
    The constants are the crossover measured on the 2-core CPU (module docstring)."""
    if solver != "auto":
        return solver
    if nbytes > AUTO_TORCH_BYTES:
        return "torch"
    if shape is None:
        return "liblinear"
    rows, dims = shape
    if rows <= KERNEL_MAX_ROWS and rows <= KERNEL_ROW_RATIO * dims:
        return "kernel"
    return "liblinear" if dims <= LIBLINEAR_MAX_DIMS else "torch"


def shared_basis(X: Any, *, device: Any = "cpu", precondition: int = SHARED_RANK,
                 intercept_scaling: float = 1.0, fit_intercept: bool = True,
                 chunk_rows: int | None = None, **_ignored):
    """A :class:`~.preconditioner.PreconditionBasis` of X with its rows projected (``XU``), for
    every torch fit on X: pass it as ``precondition=`` (the protocol does, for the C grid and the
    full-label refit). Built once: a randomised SVD of a row sample plus one pass over X with
    ``precondition`` columns (default ``SHARED_RANK``, 128: on the 4,800 x 3,584 D features of
    benchmarks/probe_speed.py the four full-label protocols took 24 s at rank 128, 37 s at 256,
    23 s at 64, with 64 slower on D itself). None when ``precondition`` is 0 or not an int."""
    if not isinstance(precondition, int) or isinstance(precondition, bool) or precondition <= 0:
        return None
    n, d = shape_of(X)
    dev = _resolve_device(device)
    s = float(intercept_scaling) if fit_intercept else 0.0
    basis = Preconditioner.basis(X, n, d, s, rank=precondition, device=dev)
    return None if basis is None else basis.project(X, chunk_rows or default_chunk_rows(d))
