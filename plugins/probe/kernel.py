"""The kernel solver: many small L2-SVMs at once through their rows' Gram matrices, for few rows and many features.

With n << D rows (100 x 3,584 in a label-scarce probe) the weights lie in the rows' span: with the bias feature
appended (``x~ = [x, s]``), ``w~ = X~^T c`` and ``G = X~ X~^T``, ``f(c) = 0.5 c^T G c + C sum_i max(0, 1 - y_i (G
c)_i)^2`` is exactly the primal objective of ``w~``. Finite Newton (Keerthi & DeCoste 2005) minimises it, each step
one factorisation of ``I/(2C) + G_SS`` over the active rows S (Woodbury); an exact line search keeps every step a
descent, so a fit takes a handful of steps. All row sets (label draws) x classes are columns of one batch.
"""
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ganlab import row_blocks, select_device, shape_of

from .objective import LinearProbe, ovr_targets
from .views import FeatureView, Standardizer

DEFAULT_TOL = 1e-7  # relative gradient per column (2-norm in weight space)
GROUP_ELEMENTS = 2**22  # matrix elements factorised together in one group of columns
BATCH_BYTES = 256 * 2**20  # gathered training rows (float32 bytes) per batch of row sets


def gram(X: torch.Tensor, s: float) -> torch.Tensor:
    """B x n x n float64 Gram matrices of B x n x D rows with the bias feature ``s`` appended."""
    X = X.float()
    G = (X @ X.transpose(1, 2)).double() + float(s) ** 2
    return 0.5 * (G + G.transpose(1, 2))


def _line_search(ww, wp, pp, S, Sp, T, C, iters: int = 40):
    """Per column (B x M), the t >= 0 minimising ``0.5||w + t p||^2 + C sum max(0, 1 - T (S + t Sp))^2``:
    safeguarded Newton with bisection, exact once it has found the active set along the segment."""
    TSp, base = T * Sp, 1.0 - T * S
    lo, hi = torch.zeros_like(ww), torch.full_like(ww, float("inf"))
    t = torch.ones_like(ww)
    scale = pp.abs() + wp.abs() + 1e-300
    for _ in range(iters):
        m = (base - t[:, None, :] * TSp).clamp(min=0.0)
        d1 = wp + t * pp - 2.0 * C * (TSp * m).sum(1)
        d2 = pp + 2.0 * C * ((m > 0) * TSp * TSp).sum(1)
        lo, hi = torch.where(d1 < 0, t, lo), torch.where(d1 > 0, t, hi)
        if bool((d1.abs() <= 1e-13 * scale).all()):
            break
        step = t - d1 / d2.clamp(min=1e-300)
        t = torch.where((step > lo) & (step < hi), step, torch.where(torch.isinf(hi), 2.0 * t, 0.5 * (lo + hi)))
    return t


def _solve_active(G, lam, act, v):
    """u (B x n x M, zero outside each column's active rows) with ``(lam I + G_SS) u_S = v_S`` per column.

    Columns are factorised in groups of similar |S|, padded to the group's largest. In float32, refined once in
    float64: half the arithmetic, and the error left only makes a step inexact (the line search keeps it a descent).
    """
    B, n, M = act.shape
    f64 = torch.float64
    flat = act.permute(0, 2, 1).reshape(B * M, n)  # column (b, m) -> row b * M + m
    sizes = flat.sum(1)
    order = torch.argsort(sizes, descending=True)
    order = order[sizes[order] > 0].tolist()
    sizes_l, rhs_all = sizes.tolist(), v.permute(0, 2, 1).reshape(B * M, n)
    lam_flat, G_flat = lam.expand(B, M).reshape(B * M), G.reshape(B * n, n)
    out = torch.zeros(B * M, n, dtype=f64, device=G.device)
    a = 0
    while a < len(order):
        f = int(sizes_l[order[a]])
        cols = torch.tensor(order[a:a + max(1, GROUP_ELEMENTS // (f * f))], device=G.device)
        a, g = a + len(cols), len(cols)
        # each column's active rows first (stable), then padding rows masked to the identity
        rows = torch.argsort((~flat[cols]).to(torch.int8), dim=1, stable=True)[:, :f]
        real = (torch.arange(f, device=G.device)[None, :] < sizes[cols][:, None]).to(f64)
        base = torch.div(cols, M, rounding_mode="floor")[:, None] * n
        Gs = G_flat[(base + rows).reshape(-1)].reshape(g, f, n).gather(2, rows[:, None, :].expand(g, f, f))
        Gs *= real[:, :, None] * real[:, None, :]
        Gs.diagonal(dim1=1, dim2=2).add_(real * lam_flat[cols][:, None] + (1.0 - real))
        rhs = (rhs_all[cols].gather(1, rows) * real)[:, :, None]
        L, _ = torch.linalg.cholesky_ex(Gs.float())
        sol = torch.cholesky_solve(rhs.float(), L).to(f64)
        sol += torch.cholesky_solve((rhs - Gs @ sol).float(), L).to(f64)
        out[cols] = torch.zeros(g, n, dtype=f64, device=G.device).scatter_(1, rows, sol[:, :, 0] * real)
    return out.reshape(B, M, n).permute(0, 2, 1)


@torch.no_grad()
def newton_batched(G: torch.Tensor, T: torch.Tensor, C: torch.Tensor, *, tol: float = DEFAULT_TOL,
                   max_iter: int = 50, c0: torch.Tensor | None = None):
    """Minimise ``0.5 c^T G c + C sum_i max(0, 1 - T_i (G c)_i)^2`` for every column of a batch.

    ``G``: B x n x n Gram matrices, ``T``: B x n x M targets (+-1), ``C``: M constants, ``c0``: a start. Returns
    c (B x n x M) and ``iterations``, ``grad_rel`` (B x M, ``||grad|| / ||grad(0)||`` in weight space), ``objective``.
    """
    f64 = torch.float64
    B, n, _ = G.shape
    M = T.shape[2]
    T, C = T.to(f64), C.to(G.device, f64).expand(B, M)
    C3 = C[:, None, :]
    c = torch.zeros(B, n, M, dtype=f64, device=G.device) if c0 is None else c0.clone()
    S = G @ c
    g0 = 2.0 * C * (T * (G @ T)).sum(1).clamp(min=0.0).sqrt()  # ||grad(0)||: grad_c(0) = -2C T
    g0 = torch.where(g0 > 0, g0, torch.ones_like(g0))
    iterations, grad_rel = 0, torch.full_like(g0, float("inf"))
    for _ in range(max_iter + 1):
        m = (1.0 - T * S).clamp(min=0.0)
        gc = c - 2.0 * C3 * T * m  # the gradient, as coefficients of X~
        Sg = G @ gc
        grad_rel = (gc * Sg).sum(1).clamp(min=0.0).sqrt() / g0
        live = grad_rel > tol  # converged columns are frozen and not factorised again
        if not bool(live.any()) or iterations == max_iter:
            break
        iterations += 1
        u = _solve_active(G, 1.0 / (2.0 * C), (m > 0) & live[:, None, :], Sg)
        p = torch.where(live[:, None, :], u - gc, torch.zeros((), dtype=f64, device=G.device))
        Sp = G @ p
        t = _line_search((c * S).sum(1), (c * Sp).sum(1), (p * Sp).sum(1), S, Sp, T, C)
        c, S = c + t[:, None, :] * p, S + t[:, None, :] * Sp
    m = (1.0 - T * S).clamp(min=0.0)
    return c, {"iterations": iterations, "grad_rel": grad_rel, "objective": 0.5 * (c * S).sum(1) + C * (m * m).sum(1)}


def _val_errors(X, val_idx, val_y, st, W, b, columns, device) -> np.ndarray:
    """Validation error at each C, every weight column scored in one pass over the validation rows."""
    W, b = torch.from_numpy(W).to(device), torch.from_numpy(b).to(device)
    wrong = np.zeros(W.shape[1] // columns)
    for start, stop, block in row_blocks(FeatureView(X, val_idx, st), device=device, dtype=torch.float64):
        scores = (block @ W + b).reshape(len(block), -1, columns)
        pred = (scores[..., 0] > 0).long() if columns == 1 else scores.argmax(2)
        wrong += (pred.cpu().numpy() != val_y[start:stop, None]).sum(0)
    return wrong / max(1, len(val_idx))


def _fit_batch(X, y, row_sets, grid, classes, preprocess, val_idx, device, tol, s, max_iter) -> list[tuple]:
    """Row sets of one size, gathered (standardised on their own rows when asked) and fitted together at every C,
    ascending, each C from the previous one's solution (the active sets move little between neighbouring C): per
    set, (C -> probe, standardiser, validation errors or None, its share of the seconds)."""
    start, f64 = time.perf_counter(), torch.float64
    k = 1 if classes.size == 2 else classes.size
    sts = [Standardizer().fit(X, rows) if preprocess == "standardize" else None for rows in row_sets]
    Xb = torch.stack([torch.from_numpy(FeatureView(X, rows, st).materialize()).to(device)
                      for rows, st in zip(row_sets, sts)])
    T = torch.from_numpy(np.stack([ovr_targets(np.searchsorted(classes, y[rows]), k) for rows in row_sets]))
    G, T = gram(Xb, s), T.to(device)
    c = torch.zeros(len(row_sets), Xb.shape[1], len(grid) * k, dtype=f64, device=device)  # C-major columns
    grad, objective = (torch.zeros(len(row_sets), len(grid) * k, dtype=f64, device=device) for _ in range(2))
    steps, previous = 0, None
    for j in np.argsort(grid, kind="stable"):
        cols = slice(j * k, (j + 1) * k)
        cj, info = newton_batched(G, T, torch.full((k,), grid[j], dtype=f64), tol=tol, max_iter=max_iter, c0=previous)
        c[:, :, cols], grad[:, cols], objective[:, cols] = cj, info["grad_rel"], info["objective"]
        steps, previous = steps + info["iterations"], cj
    grad, objective = grad.cpu().numpy(), objective.cpu().numpy()
    W = (Xb.transpose(1, 2) @ c.float()).double().cpu().numpy()
    b = (s * s * c.sum(1)).cpu().numpy()
    seconds, out = (time.perf_counter() - start) / len(row_sets), []
    for q, st in enumerate(sts):
        probes = {}
        for j, C in enumerate(grid):  # passes over the gathered rows: the Gram matrices, then the weights
            cols = slice(j * k, (j + 1) * k)
            probes.setdefault(C, LinearProbe(
                coef_=np.ascontiguousarray(W[q][:, cols].T), intercept_=b[q][cols], classes_=classes, C=C,
                solver="kernel", n_iter_=steps, n_evals_=2, objective_=objective[q][cols],
                converged_=bool(np.all(grad[q][cols] <= tol)),
                extra_={"grad_rel": float(grad[q][cols].max()), "batched": len(row_sets)}))
        errors = None if val_idx is None else _val_errors(X, val_idx, np.searchsorted(classes, y[val_idx]), st,
                                                          W[q], b[q], k, device)
        out.append((probes, st, errors, seconds))
    return out


def fit_sets(X: Any, y: np.ndarray, row_sets: Sequence[np.ndarray | None], grid: Sequence[float], *,
             classes: np.ndarray, preprocess: str | None = None, val_idx: np.ndarray | None = None,
             device: Any = "cpu", tol: float | None = None, intercept_scaling: float = 1.0,
             max_iter: int | None = None, **_other_solvers_options) -> list[tuple]:
    """Fit row sets of one size of N x D features X (None: every row) at every C of ``grid``, in batches of at most
    ``BATCH_BYTES`` of gathered rows. ``classes``: sorted, each in every set; ``preprocess="standardize"``: each set
    on its own rows' statistics; ``tol`` is capped at ``DEFAULT_TOL``. Returns per set (C -> ``LinearProbe``, its
    standardiser or None, the validation error at each C given ``val_idx``, its share of the seconds)."""
    device, y = select_device(str(device)), np.asarray(y)
    n, d = shape_of(X)
    row_sets = [np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64) for rows in row_sets]
    tol = DEFAULT_TOL if tol is None else min(float(tol), DEFAULT_TOL)
    per_batch = max(1, int(BATCH_BYTES // max(1, len(row_sets[0]) * d * 4)))
    return [fit for i in range(0, len(row_sets), per_batch)
            for fit in _fit_batch(X, y, row_sets[i:i + per_batch], [float(C) for C in grid], classes, preprocess,
                                  val_idx, device, tol, float(intercept_scaling), max_iter or 50)]
