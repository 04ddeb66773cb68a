"""The torch path of the probe solver: all classes at once with full-batch L-BFGS.

All K one-vs-rest problems are solved together as one ``(D+1) x K`` float64
parameter matrix (the last row is the bias feature's weight, regularised as
liblinear does) by ``torch.optim.LBFGS`` with strong-Wolfe line search,
preconditioned by :class:`~.preconditioner.Preconditioner` and optionally
warm-started from another fit. X is only ever read in row chunks
(``X[a:b]``), so it can be a ``np.memmap`` larger than RAM; peak extra memory
is about one chunk (or one device copy of X with ``cache_on_device``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .objective import LinearProbe, ovr_targets
from .preconditioner import Preconditioner
from .views import shape_of, torch_block

__all__ = ["fit_torch"]


def _initial_weights(init: LinearProbe, classes: np.ndarray, d: int, k: int, s: float,
                     device: torch.device) -> torch.Tensor:
    """(D+1) x K starting point from a fitted probe (bias row = intercept / s)."""
    coef = np.atleast_2d(np.asarray(init.coef_, dtype=np.float64))
    if coef.shape != (k, d) or not np.array_equal(np.asarray(init.classes_), classes):
        raise ValueError(f"init probe has weights {coef.shape} for classes {list(init.classes_)}; "
                         f"this problem needs {(k, d)} for {list(classes)}")
    bias = np.asarray(init.intercept_, dtype=np.float64) / s if s else np.zeros(k)
    W = np.vstack([coef.T, bias[None, :]])
    return torch.from_numpy(W).to(device)


def fit_torch(X, y, C, classes, *, device, max_iter, tol, fit_intercept,
              intercept_scaling, chunk_rows, precision, history_size,
              cache_on_device, init=None, precondition=0, mask=None, verbose) -> LinearProbe:
    """Minimise every class's objective at once with preconditioned L-BFGS, one pass over X per evaluation.

    ``precision="mixed"`` multiplies float32 chunks in float32 and accumulates
    parameters, loss and gradient in float64; "double" casts chunks to
    float64. Rows outside ``mask`` (if given) are streamed but contribute
    nothing. ``init`` warm-starts from a fitted probe of the same classes, and
    ``precondition`` is the preconditioner's rank (0: none).
    """
    if precision not in ("mixed", "double"):
        raise ValueError("precision must be 'mixed' or 'double'")
    t0 = time.perf_counter()
    n, d = shape_of(X)
    k = 1 if classes.size == 2 else classes.size  # binary: one column, like liblinear
    cdtype = torch.float32 if precision == "mixed" else torch.float64
    f64 = torch.float64
    s = float(intercept_scaling) if fit_intercept else 0.0

    # +-1 targets for all classes at once: N x K float64 (small: N*K*8 bytes).
    y_idx = np.searchsorted(classes, y)   # masked-out rows may carry any label
    T = torch.from_numpy(ovr_targets(y_idx, k)).to(device)
    M = None if mask is None else torch.from_numpy(mask.astype(np.float64)[:, None]).to(device)
    n_fit = n if mask is None else int(mask.sum())

    bounds = [(a, min(n, a + chunk_rows)) for a in range(0, n, chunk_rows)]
    if cache_on_device is None:
        cache_on_device = False
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            cache_on_device = n * d * (4 if precision == "mixed" else 8) < 0.4 * free
    cache: list[torch.Tensor] | None = (
        [torch_block(X, a, b, device, cdtype) for a, b in bounds]
        if cache_on_device and device.type != "cpu" else None)

    def chunks():
        for i, (a, b) in enumerate(bounds):
            yield a, b, (cache[i] if cache is not None
                         else torch_block(X, a, b, device, cdtype))

    @torch.no_grad()
    def evaluate(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-class objective (K,), its gradient ((D+1) x K) and the fraction of rows
        with an active margin per class (K,): one pass over X."""
        Wx = W[:d].to(cdtype)
        bias = W[d] * s
        loss = torch.zeros(k, dtype=f64, device=device)
        active = torch.zeros(k, dtype=f64, device=device)
        gXt = torch.zeros(k, d, dtype=f64, device=device)   # gradient^T, K x D
        gb = torch.zeros(k, dtype=f64, device=device)
        for a, b, Xc in chunks():
            S = (Xc @ Wx).to(f64) + bias           # scores, n_c x K
            Tc = T[a:b]
            m = (1.0 - Tc * S).clamp_(min=0.0)     # active margins
            if M is not None:
                m *= M[a:b]                        # rows outside the fit contribute nothing
            loss += (m * m).sum(0)
            active += (m > 0).sum(0)
            G = (-2.0 * C) * Tc * m                # d loss / d score
            # G^T @ Xc (K x D) streams Xc row-major; Xc.T @ G is ~6x slower on CPU BLAS
            gXt += (G.T.to(cdtype) @ Xc).to(f64)
            gb += G.sum(0)
        obj = 0.5 * (W * W).sum(0) + C * loss
        grad = W.clone()
        grad[:d] += gXt.T
        grad[d] += s * gb
        return obj, grad, active / n_fit

    W0 = torch.zeros(d + 1, k, dtype=f64, device=device)
    obj_zero, grad_zero, active0 = evaluate(W0)
    obj0, grad0 = obj_zero, grad_zero
    n_evals = 1
    if init is not None:
        W0 = _initial_weights(init, classes, d, k, s, device)
        obj0, grad0, active0 = evaluate(W0)
        n_evals += 1
    # One (D+1) x K float64 parameter matrix W (the last row is the bias
    # feature's weight w_b, regularised as liblinear does). L-BFGS works on V
    # with W = P V, P the preconditioner (identity when rank is 0).
    P = (Preconditioner.build(X, n, d, s, n_fit=n_fit, rank=precondition, C=C, active=active0,
                              device=device)
         if precondition else None)
    # P is symmetric: it maps V to W and W's gradient to V's
    precond = P.apply if P is not None else (lambda A: A)
    V = (P.inverse(W0) if P is not None else W0.clone()).contiguous().requires_grad_(True)
    # Scale the objective so the gradient at w=0 has max-abs 1 (in V's coordinates):
    # L-BFGS's absolute tolerance_grad then acts as a relative tolerance (C is tiny
    # and features unnormalised, so raw gradient magnitudes vary wildly).
    scale_w = float(grad_zero.abs().max()) or 1.0
    scale = float(precond(grad_zero).abs().max()) or 1.0
    f0 = float(obj_zero.sum()) / scale
    first = {"val": (obj0, grad0)}

    def closure():
        nonlocal n_evals
        if "val" in first:          # L-BFGS's first call is at W0: reuse that pass
            obj, grad = first.pop("val")
        else:
            obj, grad, _ = evaluate(precond(V.detach()))
            n_evals += 1
        V.grad = (precond(grad) / scale).contiguous()
        return (obj.sum() / scale).detach()

    opt = torch.optim.LBFGS([V], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter,
                            tolerance_grad=tol, tolerance_change=1e-12 * max(1.0, f0),
                            history_size=history_size, line_search_fn="strong_wolfe")
    opt.step(closure)
    state = opt.state[V]

    W = precond(V.detach())
    obj, grad, _ = evaluate(W)   # final pass: exact objective + convergence check
    n_evals += 1
    grad_rel = float(grad.abs().max()) / scale_w
    # Converged: the relative-gradient test holds, or L-BFGS stopped on its
    # own (no further decrease measurable at this precision -- typical for
    # precision="mixed", whose float32 gradients bottom out near 1e-5) rather
    # than by running out of its iteration / evaluation budget.
    out_of_budget = (state.get("n_iter", 0) >= max_iter
                     or state.get("func_evals", 0) >= 2 * max_iter)
    converged = math.isfinite(grad_rel) and (grad_rel <= tol or not out_of_budget)
    if verbose:
        print(f"[torch-svm] C={C:g} iters={state.get('n_iter', 0)} evals={n_evals} "
              f"obj={obj.sum().item():.6g} grad_rel={grad_rel:.2e}")
    Wn = W.cpu().numpy()
    coef = np.ascontiguousarray(Wn[:d].T)
    intercept = s * Wn[d] if fit_intercept else np.zeros(k)
    return LinearProbe(coef_=coef, intercept_=np.asarray(intercept, dtype=np.float64),
                       classes_=classes, C=float(C), solver="torch",
                       n_iter_=int(state.get("n_iter", 0)), n_evals_=n_evals,
                       fit_seconds_=time.perf_counter() - t0,
                       objective_=obj.cpu().numpy(), converged_=bool(converged),
                       extra_={"grad_rel": grad_rel, "device": str(device),
                               "precision": precision,
                               "cached_on_device": cache is not None,
                               "precondition_rank": 0 if P is None else int(P.U.shape[1])})
