"""Fitting the probe's L2-SVM: three solvers of one objective (:mod:`.objective`), and which one ``auto`` takes:
``liblinear`` (sklearn's ``LinearSVC``, the reference; its coordinate loops win on a few dozen features), ``kernel``
(finite Newton on the rows' Gram matrix, every draw, class and C at once, for few rows: :mod:`.kernel`) and ``torch``
(preconditioned L-BFGS over X's row blocks, for many rows and X larger than RAM: :mod:`.torch_solver`). The
crossover, in seconds for one 8-value C grid on the 2-core CPU (``benchmarks/probe_speed.py --crossover``; the Gram
matrix costs n^2 D and Newton ~|S|^3 per class, an L-BFGS pass n D K)::

    features            rows   kernel   torch   liblinear
    D, 3,584 dims        500      0.2    10.4       6.8
                        2000      3.6    12.3      51.9
                        3000     17.0    11.3        -
                        4800     33.2     8.9        -
    K-means, 800 dims   4800     39.1     3.9      81.8
    digits, 64 dims     1200     12.2     6.3       1.3
"""
from typing import Any

import numpy as np
import torch

from ganlab import select_device, shape_of

from .kernel import fit_sets
from .objective import LinearProbe, svm_objective
from .preconditioner import SHARED_RANK, PreconditionBasis, shared_basis
from .settings import SOLVERS
from .torch_solver import fit_torch

AUTO_TORCH_BYTES = 1e9  # above this, "auto" is torch: the others hold the rows in memory (liblinear in float64)
KERNEL_MAX_ROWS, KERNEL_ROW_RATIO = 2000, 4.0  # "auto": kernel up to this many rows, and rows <= ratio x dims
LIBLINEAR_MAX_DIMS = 128  # beyond the kernel path: liblinear up to this (5x faster than torch at 64, 12x slower at 256)


def resolve_solver(solver: str, nbytes: float, shape: tuple[int, int]) -> str:
    """The solver ``solver`` means for a fit on ``shape = (rows, dims)`` with ``nbytes`` of features."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r} ({', '.join(SOLVERS)})")
    if solver != "auto":
        return solver
    rows, dims = shape
    if nbytes > AUTO_TORCH_BYTES:
        return "torch"
    if rows <= KERNEL_MAX_ROWS and rows <= KERNEL_ROW_RATIO * dims:
        return "kernel"
    return "liblinear" if dims <= LIBLINEAR_MAX_DIMS else "torch"


def feature_bytes(X: Any) -> int:
    """Bytes of X (lazy views count float32, which they yield)."""
    n, d = shape_of(X)
    return int(getattr(X, "nbytes", n * d * 4))


def fit_linear_svm(X: Any, y: np.ndarray, C: float, *, solver: str = "auto", device: Any = "cpu",
                   max_iter: int | None = None, tol: float | None = None, intercept_scaling: float = 1.0,
                   random_state: int = 0, chunk_rows: int | None = None, init: LinearProbe | None = None,
                   precondition: int | PreconditionBasis = SHARED_RANK) -> LinearProbe:
    """A one-vs-rest linear L2-SVM on N x D features X (array, memmap, tensor or lazy view) and N labels.

    ``max_iter`` and ``tol``: LinearSVC's for liblinear (1,000, 1e-4); L-BFGS iterations and the relative
    gradient ``max|grad f| / max|grad f(0)|`` to stop at for torch (500, 1e-5); Newton steps and the relative
    gradient for the kernel path (50, capped at 1e-7). ``random_state`` seeds liblinear. Torch only:
    ``chunk_rows`` per block of X, ``init`` a fitted probe of the same classes to start from (a nearby C),
    ``precondition`` a basis of X (``shared_basis``) or the rank of one to build (0: none).
    """
    n, d = shape_of(X)
    y = np.asarray(y).ravel()
    if y.shape[0] != n:
        raise ValueError(f"{n} rows in X but {y.shape[0]} labels")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError("need at least 2 classes")
    solver = resolve_solver(solver, feature_bytes(X), (n, d))
    if solver == "kernel":
        probes, *_ = fit_sets(X, y, [None], [float(C)], classes=classes, device=device, tol=tol,
                              intercept_scaling=intercept_scaling, max_iter=max_iter)[0]
        return probes[float(C)]
    if solver == "liblinear":
        return fit_liblinear(X, y, C, classes, max_iter=max_iter or 1000, tol=1e-4 if tol is None else tol,
                             intercept_scaling=intercept_scaling, random_state=random_state)
    device, s = select_device(str(device)), float(intercept_scaling)
    basis = precondition if isinstance(precondition, PreconditionBasis) else (
        shared_basis(X, rank=precondition, intercept_scaling=s, device=device, chunk_rows=chunk_rows)
        if precondition else None)
    if basis is not None and (basis.XU.shape[0], basis.U.shape[0], basis.s) != (n, d + 1, s):
        raise ValueError("the preconditioner's basis was built for another feature matrix (see shared_basis)")
    return fit_torch(X, y, C, classes, device=device, max_iter=max_iter or 500, tol=1e-5 if tol is None else tol,
                     intercept_scaling=s, chunk_rows=chunk_rows, init=init, basis=basis)


def fit_liblinear(X: Any, y: np.ndarray, C: float, classes: np.ndarray, *, max_iter: int, tol: float,
                  intercept_scaling: float, random_state: int) -> LinearProbe:
    """LinearSVC as a ``LinearProbe``: dual coordinate descent for fewer rows than features, primal Newton
    otherwise (sklearn's rule). Its ConvergenceWarning reaches the caller (svm-probe counts them)."""
    from sklearn.svm import LinearSVC

    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    clf = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=X.shape[0] < X.shape[1], multi_class="ovr",
                    intercept_scaling=intercept_scaling, tol=tol, max_iter=max_iter, random_state=random_state)
    clf.fit(X, y)
    coef, intercept = clf.coef_.astype(np.float64), clf.intercept_.astype(np.float64)
    objective = svm_objective(X, y, coef, intercept, C, classes=classes, intercept_scaling=intercept_scaling)
    return LinearProbe(coef_=coef, intercept_=intercept, classes_=classes, C=float(C), solver="liblinear",
                       n_iter_=int(clf.n_iter_), objective_=objective, converged_=int(clf.n_iter_) < max_iter)
