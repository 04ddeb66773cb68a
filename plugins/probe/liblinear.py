"""The liblinear path of the probe solver: sklearn's ``LinearSVC`` on a dense copy of X.

LinearSVC needs a dense float64 copy of the features, so this path is only for
problems that fit comfortably in memory; :func:`~.solver.fit_linear_svm`
switches to the torch solver above ``AUTO_TORCH_BYTES`` when asked for "auto".
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from .objective import LinearProbe, svm_objective
from .views import shape_of

__all__ = ["fit_liblinear"]


def fit_liblinear(X, y, C, classes, *, max_iter, tol, fit_intercept,
                  intercept_scaling, dual, random_state, verbose) -> LinearProbe:
    """Fit LinearSVC (squared hinge, L2, one-vs-rest) and report it as a :class:`LinearProbe`.

    ``dual="auto"`` picks dual coordinate descent when there are fewer rows
    than features and the primal solver otherwise. Warnings LinearSVC raises
    (a ConvergenceWarning included) reach the caller; ``converged_`` records
    whether one was about convergence.
    """
    from sklearn.svm import LinearSVC

    n, d = shape_of(X)
    if dual == "auto":
        # dual coordinate descent is fast when n < d; the primal trust-region
        # Newton solver when n >= d (same rule as sklearn's dual="auto").
        dual = n < d
    Xd = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    t0 = time.perf_counter()
    clf = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=bool(dual),
                    multi_class="ovr", fit_intercept=fit_intercept,
                    intercept_scaling=intercept_scaling, tol=tol,
                    max_iter=max_iter, random_state=random_state,
                    verbose=int(verbose))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(Xd, y)
    converged = not any("converge" in str(w.message) for w in caught)
    for w in caught:  # re-emit everything (incl. ConvergenceWarning) to the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    secs = time.perf_counter() - t0
    intercept = np.atleast_1d(np.asarray(clf.intercept_, dtype=np.float64))
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.broadcast_to(intercept, (coef.shape[0],)).copy()
    # one extra pass (X is small on this path) so both solvers report objective_
    obj = svm_objective(Xd, y, coef, intercept, C, classes=classes,
                        intercept_scaling=intercept_scaling, fit_intercept=fit_intercept)
    return LinearProbe(coef_=coef, intercept_=intercept,
                       classes_=classes, C=float(C), solver="liblinear",
                       n_iter_=int(clf.n_iter_), n_evals_=None, fit_seconds_=secs,
                       objective_=obj, converged_=converged,
                       extra_={"dual": bool(dual)})
