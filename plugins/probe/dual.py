"""The kernel path of the probe solver: many small L2-SVMs at once, through their n x n Gram matrices.

For a training set of n rows with n << D (the label-scarce probes: 100 rows x 3,584 D features)
the optimal weights lie in the span of the rows. With liblinear's bias feature appended
(``x~ = [x, s]``, ``s = intercept_scaling``) write ``w~ = X~^T c`` for a coefficient vector c of
length n. Everything LinearSVC's objective needs is then a product with the Gram matrix
``G = X~ X~^T`` (n x n): the scores are ``G c``, ``||w~||^2 = c^T G c``, and

    f(c) = 0.5 c^T G c + C sum_i max(0, 1 - y_i (G c)_i)^2

is exactly the primal objective of ``w~``. At the optimum c equals the dual solution of the L2-loss
SVM, ``c_i = y_i a_i`` with ``min_a 0.5 a^T (Q + I/(2C)) a - 1^T a, a >= 0``,
``Q_ij = y_i y_j x~_i . x~_j``.

Solver: the finite Newton method for the squared hinge (Keerthi & DeCoste 2005, "L2-SVM-MFN"),
with the Newton system solved directly instead of by conjugate gradients. With the active rows
``S = {i: y_i (G c)_i < 1}`` the generalised Hessian is ``H = I + 2C X~_S^T X~_S`` and, by the
Woodbury identity, ``H^-1 g = g - X~_S^T (I/(2C) + G_SS)^-1 X~_S g``: one Cholesky factorisation
of ``I/(2C) + G_SS`` (|S| x |S|: the dual's free set, typically a quarter of the rows) per
column and iteration. An exact line search along the direction (the objective is piecewise
quadratic in the step) makes every iteration decrease f; once the active set stops changing
the step is exact, so the method terminates in a handful of iterations (typically 3-8).

Every problem is one column of a batch: B Gram matrices (one per label draw) x M columns (every
class, one-vs-rest, for every C of the grid), advanced together; converged columns are frozen and
not factorised again. Arithmetic: the Gram matrices ``B n^2 (D+1)`` multiply-adds (one pass over
the gathered rows), ``~2 B n^2 M`` per iteration for the products with G, ``sum |S|^3 / 3`` for
the factorisations, and the weights ``W = X~^T c``: one more pass.

Stopping rule: ``||grad||_2 <= tol * ||grad(0)||_2`` per column (the 2-norm of the gradient in
weight space, ``sqrt(g_c^T G g_c)``); Newton's last steps are exact, so a tight default costs
one iteration more.
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_TOL", "gram", "newton_batched"]

#: Relative gradient tolerance per column (2-norm); tight, because Newton's last steps are exact.
DEFAULT_TOL = 1e-7
#: Matrix elements factorised together in one group of columns (padded to the group's largest active set).
GROUP_ELEMENTS = 2**22


def gram(X: torch.Tensor, s: float, *, precision: str = "mixed") -> torch.Tensor:
    """B x n x n float64 Gram matrices of B x n x D rows with the bias feature ``s`` appended."""
    Xc = X.to(torch.float32 if precision == "mixed" else torch.float64)
    G = (Xc @ Xc.transpose(1, 2)).to(torch.float64) + float(s) ** 2
    return 0.5 * (G + G.transpose(1, 2))


def _line_search(ww, wp, pp, S, Sp, T, C, iters: int = 40):
    """Exact minimiser t >= 0 of ``0.5||w + t p||^2 + C sum max(0, 1 - T (S + t Sp))^2`` per column (B x M).

    Convex and piecewise quadratic in t: safeguarded Newton with bisection; exact once the
    active set along the segment is found."""
    TSp = T * Sp
    base = 1.0 - T * S
    lo = torch.zeros_like(ww)
    hi = torch.full_like(ww, float("inf"))
    t = torch.ones_like(ww)
    scale = pp.abs() + wp.abs() + 1e-300
    for _ in range(iters):
        m = (base - t[:, None, :] * TSp).clamp(min=0.0)
        d1 = wp + t * pp - 2.0 * C * (TSp * m).sum(1)
        d2 = pp + 2.0 * C * ((m > 0) * TSp * TSp).sum(1)
        lo = torch.where(d1 < 0, t, lo)
        hi = torch.where(d1 > 0, t, hi)
        if bool((d1.abs() <= 1e-13 * scale).all()):
            break
        step = t - d1 / d2.clamp(min=1e-300)
        bisect = torch.where(torch.isinf(hi), 2.0 * t, 0.5 * (lo + hi))
        t = torch.where((step > lo) & (step < hi), step, bisect)
    return t


def _solve_active(G, lam, act, v, *, single: bool = True, budget: int = GROUP_ELEMENTS):
    """u (B x n x M, zero outside each column's active rows) with ``(lam I + G_SS) u_S = v_S`` per column.

    Columns are sorted by |S| and factorised in groups padded to the group's largest |S| (at most
    ``budget`` matrix elements per group). ``single``: factorise in float32 and refine once with a
    float64 residual (half the arithmetic; the error left, ~(cond * 6e-8)^2, only makes Newton
    inexact, and the exact line search keeps every step a descent).
    """
    B, n, M = act.shape
    f64 = torch.float64
    flat = act.permute(0, 2, 1).reshape(B * M, n)            # column (b, m) -> row b * M + m
    sizes = flat.sum(1)
    order = torch.argsort(sizes, descending=True)
    order = order[sizes[order] > 0].tolist()
    sizes_l = sizes.tolist()
    vflat = v.permute(0, 2, 1).reshape(B * M, n)
    lam_flat = lam.expand(B, M).reshape(B * M)
    Gflat = G.reshape(B * n, n)
    out = torch.zeros(B * M, n, dtype=f64, device=G.device)
    a = 0
    while a < len(order):
        f = int(sizes_l[order[a]])
        cols = torch.tensor(order[a:a + max(1, budget // (f * f))], device=G.device)
        a += len(cols)
        g = len(cols)
        # each column's active rows first (stable), then padding rows that are masked to identity
        rows = torch.argsort((~flat[cols]).to(torch.int8), dim=1, stable=True)[:, :f]
        real = (torch.arange(f, device=G.device)[None, :] < sizes[cols][:, None]).to(f64)
        base = torch.div(cols, M, rounding_mode="floor")[:, None] * n
        Gs = Gflat[(base + rows).reshape(-1)].reshape(g, f, n).gather(2, rows[:, None, :].expand(g, f, f))
        Gs *= real[:, :, None] * real[:, None, :]
        Gs.diagonal(dim1=1, dim2=2).add_(real * lam_flat[cols][:, None] + (1.0 - real))
        rhs = (vflat[cols].gather(1, rows) * real)[:, :, None]
        if single:
            L, _ = torch.linalg.cholesky_ex(Gs.float())
            sol = torch.cholesky_solve(rhs.float(), L).to(f64)
            sol += torch.cholesky_solve((rhs - Gs @ sol).float(), L).to(f64)
        else:
            L, _ = torch.linalg.cholesky_ex(Gs)
            sol = torch.cholesky_solve(rhs, L)
        out[cols] = torch.zeros(g, n, dtype=f64, device=G.device).scatter_(1, rows, sol[:, :, 0] * real)
    return out.reshape(B, M, n).permute(0, 2, 1)


@torch.no_grad()
def newton_batched(G: torch.Tensor, T: torch.Tensor, C: torch.Tensor, *, tol: float = DEFAULT_TOL,
                   max_iter: int = 50, c0: torch.Tensor | None = None):
    """Minimise ``0.5 c^T G c + C sum_i max(0, 1 - T_i (G c)_i)^2`` for every column of a batch.

    ``G``: B x n x n float64 Gram matrices (:func:`gram`), ``T``: B x n x M targets (+-1),
    ``C``: M (or B x M) regularisation constants, ``c0`` an optional start (B x n x M).
    Returns ``(c, info)``: c is B x n x M (``w~ = X~^T c``) and info holds ``iterations`` (Newton
    steps of the slowest column), ``factorised`` (column factorisations), ``grad_rel`` (B x M) and
    ``objective`` (B x M, the primal objective at c).
    """
    f64 = torch.float64
    B, n, _ = G.shape
    M = T.shape[2]
    T = T.to(f64)
    C = C.to(G.device, f64).expand(B, M)
    C3 = C[:, None, :]
    c = torch.zeros(B, n, M, dtype=f64, device=G.device) if c0 is None else c0.clone()
    S = G @ c
    GT = G @ T
    g0 = 2.0 * C * (T * GT).sum(1).clamp(min=0.0).sqrt()        # ||grad(0)||: grad_c(0) = -2C T
    g0 = torch.where(g0 > 0, g0, torch.ones_like(g0))
    info = {"iterations": 0, "factorised": 0}
    grad_rel = torch.full_like(g0, float("inf"))
    for _ in range(max_iter + 1):
        m = (1.0 - T * S).clamp(min=0.0)
        gc = c - 2.0 * C3 * T * m                                # gradient, as coefficients of X~
        Sg = G @ gc
        grad_rel = (gc * Sg).sum(1).clamp(min=0.0).sqrt() / g0
        live = grad_rel > tol
        if not bool(live.any()) or info["iterations"] == max_iter:
            break
        info["iterations"] += 1
        act = (m > 0) & live[:, None, :]
        info["factorised"] += int(live.sum())
        u = _solve_active(G, 1.0 / (2.0 * C), act, Sg)
        p = torch.where(live[:, None, :], u - gc, torch.zeros((), dtype=f64, device=G.device))
        Sp = G @ p
        t = _line_search((c * S).sum(1), (c * Sp).sum(1), (p * Sp).sum(1), S, Sp, T, C)
        c = c + t[:, None, :] * p
        S = S + t[:, None, :] * Sp
    m = (1.0 - T * S).clamp(min=0.0)
    info["grad_rel"] = grad_rel
    info["objective"] = 0.5 * (c * S).sum(1) + C * (m * m).sum(1)
    return c, info
