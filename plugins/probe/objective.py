"""The probe's L2-SVM objective and the fitted model both solvers return.

:func:`svm_objective` is the numpy reference of LinearSVC's primal objective
(one-vs-rest squared hinge with liblinear's regularised bias feature; the
formula is in :mod:`ganlab_plugins.probe.solver`), used in tests and to report
liblinear fits. :class:`LinearProbe` is the fitted classifier. Both read X in
row chunks, so it may be a ``np.memmap`` larger than RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .views import default_chunk_rows, iter_numpy_chunks, shape_of

__all__ = ["LinearProbe", "ovr_targets", "svm_objective"]


def ovr_targets(y_idx: np.ndarray, n_cols: int) -> np.ndarray:
    """+-1 one-vs-rest targets, N x n_cols (n_cols == 1: binary, +1 = class 1)."""
    if n_cols == 1:
        return np.where(y_idx == 1, 1.0, -1.0)[:, None]
    return np.where(y_idx[:, None] == np.arange(n_cols)[None, :], 1.0, -1.0)


def svm_objective(X: Any, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                  C: float, *, classes: np.ndarray | None = None,
                  intercept_scaling: float = 1.0, fit_intercept: bool = True,
                  chunk_rows: int | None = None) -> np.ndarray:
    """LinearSVC's primal objective for each one-vs-rest problem.

    ``X`` holds N x D features (any container the solver accepts) and ``y``
    their N labels; ``coef`` is the K' x D weight matrix (K' = K classes, or 1
    for a binary problem), ``intercept`` the K' intercepts
    (``intercept_scaling * w_b``) and ``C`` the regularisation constant.
    ``classes`` are the sorted class labels (default ``np.unique(y)``).

    The result is a float64 array of K' objective values
    ``0.5*(||w||^2 + w_b^2) + C * sum_i max(0, 1 - y_i(w.x_i + b))^2``
    with ``w_b = intercept / intercept_scaling`` (0 without intercept).
    """
    y = np.asarray(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    y_idx = np.searchsorted(classes, y)
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(intercept, dtype=np.float64),
                                (coef.shape[0],))
    n, d = shape_of(X)
    chunk_rows = chunk_rows or default_chunk_rows(d)
    loss = np.zeros(coef.shape[0])
    for a, b, blk in iter_numpy_chunks(X, chunk_rows):
        s = np.asarray(blk, dtype=np.float64) @ coef.T + intercept
        t = ovr_targets(y_idx[a:b], coef.shape[0])
        m = np.maximum(0.0, 1.0 - t * s)
        loss += (m * m).sum(0)
    reg = (coef * coef).sum(1)
    if fit_intercept:
        reg = reg + (intercept / intercept_scaling) ** 2
    return 0.5 * reg + C * loss


@dataclass
class LinearProbe:
    """A fitted one-vs-rest linear classifier (either solver).

    ``coef_`` holds the K' x D float64 weights (K' = n_classes, or 1 for
    binary problems, where the row scores ``classes_[1]`` as in sklearn),
    ``intercept_`` the K' float64 intercepts and ``classes_`` the sorted
    labels; ``C`` is the regularisation constant used and ``solver`` is
    "liblinear" or "torch".

    ``n_iter_`` counts iterations (liblinear: the maximum over classes; torch:
    L-BFGS iterations), ``n_evals_`` full passes over X (torch only; None for
    liblinear) and ``fit_seconds_`` is the wall-clock time of the fit.
    ``objective_`` is the per-class primal objective at the solution (K',) as
    :func:`svm_objective` computes it (for liblinear not included in
    ``fit_seconds_``). ``converged_`` means, for liblinear, that no
    ConvergenceWarning was raised; for torch, that a tolerance stopped the fit
    (relative gradient <= tol, or no measurable progress) rather than the
    iteration budget (``extra_["grad_rel"]`` holds the final relative gradient).
    """

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    C: float
    solver: str
    n_iter_: int = 0
    n_evals_: int | None = None
    fit_seconds_: float = 0.0
    objective_: np.ndarray | None = None
    converged_: bool = True
    extra_: dict = field(default_factory=dict)

    def decision_function(self, X: Any, *, chunk_rows: int | None = None) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_`` in float64, computed row-chunk-wise.

        ``X`` holds N x D features (numpy / memmap / torch / lazy view). The
        result is an N x K' array, or has shape (N,) for a binary problem (like
        sklearn).
        """
        n, d = shape_of(X)
        if d != self.coef_.shape[1]:
            raise ValueError(f"X has {d} features, probe expects {self.coef_.shape[1]}")
        chunk_rows = chunk_rows or default_chunk_rows(d)
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float64)
        for a, b, blk in iter_numpy_chunks(X, chunk_rows):
            # float64 like sklearn's decision_function (float32 X @ float64 coef)
            out[a:b] = np.asarray(blk, dtype=np.float64) @ self.coef_.T + self.intercept_
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X: Any, *, chunk_rows: int | None = None) -> np.ndarray:
        """Labels (N,): argmax over one-vs-rest scores (sign for binary)."""
        s = self.decision_function(X, chunk_rows=chunk_rows)
        if s.ndim == 1:
            return self.classes_[(s > 0).astype(int)]
        return self.classes_[np.argmax(s, axis=1)]

    def score(self, X: Any, y: np.ndarray, *, chunk_rows: int | None = None) -> float:
        """Accuracy in [0, 1]."""
        return float(np.mean(self.predict(X, chunk_rows=chunk_rows) == np.asarray(y)))
