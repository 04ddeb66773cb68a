"""The objective every probe solver minimises (LinearSVC's), and the fitted classifier they return: for each class
k (``y_ik`` = +1 for its rows, else -1), the bias a constant feature ``s = intercept_scaling``, regularised too::

    f_k(w, w_b) = 0.5 * (||w||^2 + w_b^2) + C * sum_i max(0, 1 - y_ik (w . x_i + s * w_b))^2,  intercept = s w_b
"""
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganlab import row_blocks, shape_of


def ovr_targets(y_idx: np.ndarray, columns: int) -> np.ndarray:
    """+-1 one-vs-rest targets, N x columns (one column for two classes: +1 = the second class)."""
    if columns == 1:
        return np.where(y_idx == 1, 1.0, -1.0)[:, None]
    return np.where(y_idx[:, None] == np.arange(columns)[None, :], 1.0, -1.0)


def svm_objective(X: Any, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float, *,
                  classes: np.ndarray | None = None, intercept_scaling: float = 1.0) -> np.ndarray:
    """The objective above per one-vs-rest problem (float64, K'): X is N x D, ``coef`` K' x D (K' = K classes,
    or 1 for two), ``intercept`` K'; ``classes`` default to ``np.unique(y)``."""
    classes = np.unique(y) if classes is None else np.asarray(classes)
    y_idx = np.searchsorted(classes, np.asarray(y))
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(intercept, dtype=np.float64), (coef.shape[0],))
    loss = np.zeros(coef.shape[0])
    for start, stop, block in row_blocks(X):
        margins = np.maximum(0.0, 1.0 - ovr_targets(y_idx[start:stop], len(coef)) * (
            np.asarray(block, dtype=np.float64) @ coef.T + intercept))
        loss += (margins * margins).sum(0)
    return 0.5 * ((coef * coef).sum(1) + (intercept / intercept_scaling) ** 2) + C * loss


@dataclass
class LinearProbe:
    """A fitted one-vs-rest linear classifier: ``coef_`` K' x D, ``intercept_`` K' (float64; K' = 1 for two
    classes, scoring ``classes_[1]`` as sklearn does). ``n_iter_``: iterations; ``n_evals_``: passes over the rows
    (None for liblinear); ``objective_``: per class at the solution; ``converged_``: a tolerance stopped the fit,
    not the iteration budget."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    C: float
    solver: str
    n_iter_: int = 0
    n_evals_: int | None = None
    objective_: np.ndarray | None = None
    converged_: bool = True
    extra_: dict = field(default_factory=dict)

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_`` (float64, as sklearn's): N x K', or (N,) for two classes."""
        n, d = shape_of(X)
        if d != self.coef_.shape[1]:
            raise ValueError(f"X has {d} features, probe expects {self.coef_.shape[1]}")
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float64)
        for start, stop, block in row_blocks(X):
            out[start:stop] = np.asarray(block, dtype=np.float64) @ self.coef_.T + self.intercept_
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X: Any) -> np.ndarray:
        """Labels (N,): the arg-max one-vs-rest score (its sign for two classes)."""
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)]

    def score(self, X: Any, y: np.ndarray) -> float:
        """Accuracy in [0, 1]."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
