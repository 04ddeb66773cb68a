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

import hashlib
import math
import time

import numpy as np
import torch

from .objective import LinearProbe, ovr_targets
from .preconditioner import PreconditionBasis, Preconditioner, SubspacePreconditioner
from .views import shape_of, torch_block

__all__ = ["fit_torch", "ROUND_ITERS", "REBUILD_CHANGE"]

#: L-BFGS iterations between two stopping tests (and possible preconditioner rebuilds).
ROUND_ITERS = 10
#: Rebuild the subspace preconditioner when this fraction of (row, class) margins changed sides.
REBUILD_CHANGE = 0.02


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
              cache_on_device, init=None, precondition=0, mask=None, verbose,
              objective_tol=None) -> LinearProbe:
    """Minimise every class's objective at once with preconditioned L-BFGS, one pass over X per evaluation.

    ``precision="mixed"`` multiplies float32 chunks in float32 and accumulates
    parameters, loss and gradient in float64; "double" casts chunks to
    float64. Rows outside ``mask`` (if given) are streamed but contribute
    nothing. ``init`` warm-starts from a fitted probe of the same classes, and
    ``precondition`` is the preconditioner's rank (0: none) or a shared
    :class:`~.preconditioner.PreconditionBasis` (with ``XU``: the per-class subspace preconditioner).
    ``objective_tol`` replaces the stopping rule: stop once every class's objective is provably within
    that fraction of its optimum, ``||grad f||^2 / 2 <= objective_tol * f`` (f is 1-strongly convex, so
    ``f - f* <= ||grad f||^2 / 2``), instead of ``max|grad| <= tol * max|grad f(0)|``.
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
    def evaluate(W: torch.Tensor, masks: list | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-class objective (K,), its gradient ((D+1) x K) and the fraction of rows
        with an active margin per class (K,): one pass over X. ``masks`` collects the
        active rows (chunk by chunk, N x K bool) if given."""
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
            if masks is not None:
                masks.append(m > 0)
            G = (-2.0 * C) * Tc * m                # d loss / d score
            # G^T @ Xc (K x D) streams Xc row-major; Xc.T @ G is ~6x slower on CPU BLAS
            gXt += (G.T.to(cdtype) @ Xc).to(f64)
            gb += G.sum(0)
        obj = 0.5 * (W * W).sum(0) + C * loss
        grad = W.clone()
        grad[:d] += gXt.T
        grad[d] += s * gb
        return obj, grad, active / n_fit

    basis = precondition if isinstance(precondition, PreconditionBasis) else None
    if basis is not None and basis.key[:3] != (n, d, s):
        # a basis of another matrix (e.g. the protocol's, for a gathered subset): build this fit's own
        basis, precondition = None, basis.key[3]
    subspace = basis is not None and basis.XU is not None
    masks: list | None = [] if subspace else None
    W0 = torch.zeros(d + 1, k, dtype=f64, device=device)
    # at w = 0 every fitted margin is 1: f = C n_fit and grad = -2C X~^T (T * fitted), linear in C, so a
    # shared basis keeps X~^T (T * fitted) per (rows, labels) and the other fits of a C grid skip this pass
    zero_key = None
    if basis is not None:
        zero_key = hashlib.sha1(np.ascontiguousarray(y_idx).tobytes()
                                + (b"" if mask is None else np.packbits(mask).tobytes())).hexdigest()
    if zero_key is not None and zero_key in basis.zero:
        grad_zero = C * basis.zero[zero_key]
        obj_zero = torch.full((k,), C * n_fit, dtype=f64, device=device)
        active0 = torch.ones(k, dtype=f64, device=device)
        if init is None and masks is not None:
            masks.append((M > 0).expand(n, k) if M is not None else torch.ones(n, k, dtype=torch.bool, device=device))
        n_evals = 0
    else:
        obj_zero, grad_zero, active0 = evaluate(W0, masks if init is None else None)
        n_evals = 1
        if zero_key is not None:
            basis.zero[zero_key] = grad_zero / C
    obj0, grad0 = obj_zero, grad_zero
    if init is not None:
        W0 = _initial_weights(init, classes, d, k, s, device)
        obj0, grad0, active0 = evaluate(W0, masks)
        n_evals += 1
    # One (D+1) x K float64 parameter matrix W (the last row is the bias
    # feature's weight w_b, regularised as liblinear does). L-BFGS works on V
    # with W = P V, P the preconditioner (identity when rank is 0).
    # Scale the objective so the gradient at w=0 has max-abs 1: C is tiny and features
    # unnormalised, so raw gradient magnitudes vary wildly (L-BFGS's change tolerance is absolute).
    scale_w = float(grad_zero.abs().max()) or 1.0
    scale = scale_w
    f0 = float(obj_zero.sum()) / scale
    last = {"W": W0, "obj": obj0, "grad": grad0, "masks": masks}

    def at(W: torch.Tensor):
        """Objective and gradient at W, reusing the last pass when L-BFGS asks for the same point."""
        nonlocal n_evals
        if not torch.equal(W, last["W"]):
            new_masks: list | None = [] if subspace else None
            obj, grad, _ = evaluate(W, new_masks)
            n_evals += 1
            last.update(W=W.clone(), obj=obj, grad=grad, masks=new_masks)
        return last["obj"], last["grad"]

    def start(W: torch.Tensor):
        """Preconditioner for the active rows at W, the L-BFGS variable V (W = P V) and a fresh L-BFGS."""
        if subspace:
            Pn = SubspacePreconditioner.build(basis, C, torch.cat(last["masks"]))
        elif precondition:
            Pn = Preconditioner.build(X, n, d, s, n_fit=n_fit, rank=0 if basis else int(precondition), C=C,
                                      active=active0, device=device, basis=basis)
        else:
            Pn = None
        Vn = (Pn.inverse(W) if Pn is not None else W.clone()).contiguous().requires_grad_(True)
        # max-abs 1 at w = 0 in V's coordinates too (the historical scaling of this solver)
        sc = float((Pn.apply(grad_zero) if Pn is not None else grad_zero).abs().max()) or 1.0
        opt = torch.optim.LBFGS([Vn], lr=1.0, max_iter=ROUND_ITERS, max_eval=2 * ROUND_ITERS,
                                tolerance_grad=0.0, tolerance_change=1e-12 * max(1.0, f0),
                                history_size=history_size, line_search_fn="strong_wolfe")
        return Pn, Vn, opt, sc

    # L-BFGS in rounds of ROUND_ITERS iterations; between rounds the stopping test is the relative
    # gradient max|grad f(W)| / max|grad f(0)| in W itself (what ``tol`` means), and the subspace
    # preconditioner is rebuilt (a restart) when the active rows it was built for have changed.
    P, V, opt, scale = start(W0)
    built_on = None if last["masks"] is None else torch.cat(last["masks"])
    iters, stalled = 0, False
    while True:
        W = P.apply(V.detach()) if P is not None else V.detach()
        obj, grad = at(W)
        grad_rel = float(grad.abs().max()) / scale_w
        gap = float(((grad * grad).sum(0) / (2.0 * obj.clamp(min=1e-300))).max())
        done = gap <= objective_tol if objective_tol is not None else grad_rel <= tol
        if not math.isfinite(grad_rel) or done or iters >= max_iter or n_evals >= 2 * max_iter or stalled:
            break
        if subspace and iters and built_on is not None:
            now = torch.cat(last["masks"])
            if float((now != built_on).double().mean()) > REBUILD_CHANGE:
                P, V, opt, scale = start(W)
                built_on = now

        def closure(P=P, V=V, scale=scale):
            Wc = P.apply(V.detach()) if P is not None else V.detach()
            o, g = at(Wc)
            V.grad = ((P.apply(g) if P is not None else g) / scale).contiguous()
            return (o.sum() / scale).detach()

        budget = min(ROUND_ITERS, max_iter - iters)
        opt.param_groups[0].update(max_iter=budget, max_eval=2 * budget)
        before = opt.state[V].get("n_iter", 0), opt.state[V].get("func_evals", 0)
        opt.step(closure)
        done = opt.state[V].get("n_iter", 0) - before[0]
        iters += done
        # L-BFGS stopped on its own (no measurable progress left), not at this round's budget
        stalled = done < budget and opt.state[V].get("func_evals", 0) - before[1] < 2 * budget
    # Converged: the relative-gradient test holds, or L-BFGS stopped on its own (no further decrease
    # measurable at this precision -- typical for precision="mixed", whose float32 gradients bottom
    # out near 1e-5) rather than by running out of its iteration / evaluation budget.
    out_of_budget = iters >= max_iter or n_evals >= 2 * max_iter
    converged = math.isfinite(grad_rel) and (done or not out_of_budget)
    if verbose:
        print(f"[torch-svm] C={C:g} iters={iters} evals={n_evals} "
              f"obj={obj.sum().item():.6g} grad_rel={grad_rel:.2e}")
    Wn = W.cpu().numpy()
    coef = np.ascontiguousarray(Wn[:d].T)
    intercept = s * Wn[d] if fit_intercept else np.zeros(k)
    return LinearProbe(coef_=coef, intercept_=np.asarray(intercept, dtype=np.float64),
                       classes_=classes, C=float(C), solver="torch",
                       n_iter_=int(iters), n_evals_=n_evals,
                       fit_seconds_=time.perf_counter() - t0,
                       objective_=obj.cpu().numpy(), converged_=bool(converged),
                       extra_={"grad_rel": grad_rel, "objective_gap": gap, "device": str(device),
                               "precision": precision,
                               "cached_on_device": cache is not None,
                               "precondition_rank": 0 if P is None else int(P.U.shape[1]),
                               "preconditioner": "none" if P is None else type(P).__name__})
