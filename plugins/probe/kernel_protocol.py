"""Batched kernel-path fits for the probe protocol: every draw, class and C of the grid at once.

:func:`fit_sets` takes several training row sets of X (the label draws, or the full-label pool),
gathers each once, builds their Gram matrices once (:func:`~.dual.gram`, one batched product) and
solves every one-vs-rest class of every set by the batched finite Newton method
(:func:`~.dual.newton_batched`): all sets and classes advance together, the C grid is walked in
ascending order with each C warm-started from the previous one's solution (about 3 Newton steps per
C instead of about 6 from zero; nothing is rebuilt per C). The weights ``W = X~^T c`` of every
(C, class) column come from one more product, and the validation errors for every C from one
product of the validation rows with all the weight columns.

Row sets are processed in batches of at most ``BATCH_BYTES`` of gathered rows, so a protocol with
100 draws of 1,000 x 28,672 features stays within memory. Tensors live on ``device`` (CUDA works the
same way; the Cholesky factorisations are batched ``torch.linalg`` calls).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .dual import DEFAULT_TOL, gram, newton_batched
from .objective import LinearProbe, ovr_targets
from .views import FeatureView, Standardizer, default_chunk_rows, iter_numpy_chunks, shape_of

__all__ = ["BATCH_BYTES", "fit_sets", "SetFit"]

#: Gathered training rows (float32 bytes) per batch of row sets.
BATCH_BYTES = 256 * 2**20


class SetFit:
    """One row set's fits at every C: weights ``W`` (D x M), intercepts ``b`` (M), per-column objective."""

    def __init__(self, W, b, objective, st, grid, k, seconds, info):
        self.W, self.b, self.objective, self.st = W, b, objective, st
        self.grid, self.k, self.seconds, self.info = list(grid), k, seconds, info

    def probe(self, C: float, classes: np.ndarray) -> LinearProbe:
        j = self.grid.index(C)
        cols = slice(j * self.k, (j + 1) * self.k)
        grad = self.info["grad_rel"][cols]
        return LinearProbe(coef_=np.ascontiguousarray(self.W[:, cols].T), intercept_=self.b[cols].copy(),
                           classes_=classes, C=float(C), solver="kernel", n_iter_=self.info["newton"],
                           n_evals_=self.info["passes"], fit_seconds_=self.seconds,
                           objective_=self.objective[cols].copy(), converged_=bool(np.all(grad <= self.info["tol"])),
                           extra_={"grad_rel": float(grad.max()), "batched": self.info["batch"]})


def _rows_tensor(X: Any, rows: np.ndarray, st: Standardizer | None, device) -> torch.Tensor:
    view = FeatureView(X, rows) if st is None else st.view(X, rows)
    return torch.from_numpy(np.ascontiguousarray(view.materialize(), dtype=np.float32)).to(device)


def _val_errors(X, val_idx, y_val, st, W, b, k, n_C, classes_idx, device) -> np.ndarray:
    """Validation error for each C (n_C,), scoring chunks of the validation rows against every column."""
    view = FeatureView(X, val_idx) if st is None else st.view(X, val_idx)
    Wt = torch.from_numpy(W).to(device)
    bt = torch.from_numpy(b).to(device)
    wrong = np.zeros(n_C)
    for a, z, blk in iter_numpy_chunks(view, default_chunk_rows(shape_of(view)[1])):
        S = torch.from_numpy(np.asarray(blk, dtype=np.float64)).to(device) @ Wt + bt
        S = S.reshape(len(S), n_C, k)
        pred = (S[..., 0] > 0).long() if k == 1 else S.argmax(2)
        wrong += (pred.cpu().numpy() != classes_idx[a:z, None]).sum(0)
    return wrong / max(1, len(val_idx))


def fit_sets(X: Any, y: np.ndarray, row_sets: Sequence[np.ndarray | None], grid: Sequence[float], *,
             classes: np.ndarray, preprocess: str | None = None, val_idx: np.ndarray | None = None,
             device: Any = "cpu", tol: float | None = None, intercept_scaling: float = 1.0,
             fit_intercept: bool = True, precision: str = "mixed", max_iter: int | None = None,
             **_ignored) -> tuple[list[SetFit], np.ndarray | None]:
    """Fit every row set at every C of ``grid`` with the kernel solver, batched.

    ``X`` is N x D (array / memmap / view), ``y`` its N labels, ``row_sets`` index arrays (None:
    every row) of equal length within a batch, ``classes`` the sorted classes (each set must hold
    every one). ``preprocess="standardize"`` standardises each set with statistics of its own rows.
    ``tol`` is the relative gradient tolerance (at most :data:`~.dual.DEFAULT_TOL`: Newton makes a
    tight tolerance cheap). Returns ``(fits, errors)``: one :class:`SetFit` per set and, with
    ``val_idx``, the validation errors as a (sets x len(grid)) array.
    """
    device = torch.device(device)
    y = np.asarray(y)
    grid = [float(c) for c in grid]
    k = 1 if classes.size == 2 else classes.size
    s = float(intercept_scaling) if fit_intercept else 0.0
    tol = DEFAULT_TOL if tol is None else min(float(tol), DEFAULT_TOL)
    n_all, d = shape_of(X)
    sizes = [n_all if r is None else len(r) for r in row_sets]
    per_batch = max(1, int(BATCH_BYTES // max(1, max(sizes) * d * 4)))
    fits: list[SetFit] = []
    errors = [] if val_idx is not None else None
    val_y = None if val_idx is None else np.searchsorted(classes, y[val_idx])
    i = 0
    while i < len(row_sets):
        # a batch: consecutive sets of the same size
        j = i + 1
        while j < len(row_sets) and j - i < per_batch and sizes[j] == sizes[i]:
            j += 1
        t0 = time.perf_counter()
        sts, blocks, targets = [], [], []
        for rows in row_sets[i:j]:
            rows_ = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
            st = Standardizer().fit(X, rows_) if preprocess == "standardize" else None
            sts.append(st)
            blocks.append(_rows_tensor(X, rows_, st, device))
            T = ovr_targets(np.searchsorted(classes, y[rows_]), k)
            targets.append(T)
        Xb = torch.stack(blocks)
        del blocks
        G = gram(Xb, s, precision=precision)
        T = torch.from_numpy(np.stack(targets)).to(device)
        # the C grid in ascending order, each C warm-started from the previous one's solution
        # (the active sets move little between neighbouring C: ~3 Newton steps each instead of ~6)
        order = np.argsort(grid, kind="stable")
        c = torch.zeros(T.shape[0], T.shape[1], len(grid) * k, dtype=torch.float64, device=device)
        info = {"iterations": 0, "factorised": 0}
        grad = torch.zeros(T.shape[0], len(grid) * k, dtype=torch.float64, device=device)
        objective = torch.zeros_like(grad)
        previous = None
        for jc in order:
            cols = slice(jc * k, (jc + 1) * k)
            cj, inf = newton_batched(G, T, torch.full((k,), grid[jc], dtype=torch.float64), tol=tol,
                                     max_iter=max_iter or 50, c0=previous)
            c[:, :, cols], grad[:, cols], objective[:, cols] = cj, inf["grad_rel"], inf["objective"]
            info["iterations"] += inf["iterations"]
            info["factorised"] += inf["factorised"]
            previous = cj
        info["grad_rel"], info["objective"] = grad, objective
        W = (Xb.transpose(1, 2) @ c.to(Xb.dtype)).to(torch.float64) if precision == "mixed" else (
            Xb.transpose(1, 2).to(torch.float64) @ c)
        b = s * s * c.sum(1)
        obj = info["objective"].cpu().numpy()
        seconds = (time.perf_counter() - t0) / (j - i)
        # passes over the gathered rows: one for the Gram matrices, one for the weights
        stats = {"newton": info["iterations"], "factorised": info["factorised"], "passes": 2, "tol": tol,
                 "batch": j - i}
        Wn, bn, grad = W.cpu().numpy(), b.cpu().numpy(), info["grad_rel"].cpu().numpy()
        for q in range(j - i):
            fit = SetFit(Wn[q], bn[q], obj[q], sts[q], grid, k, seconds, {**stats, "grad_rel": grad[q]})
            fits.append(fit)
            if errors is not None:
                errors.append(_val_errors(X, val_idx, y[val_idx], sts[q], Wn[q], bn[q], k, len(grid), val_y,
                                          device))
        del Xb, G, c, W
        i = j
    return fits, (None if errors is None else np.asarray(errors))
