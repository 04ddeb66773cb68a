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

* ``solver="liblinear"`` -- sklearn ``LinearSVC`` (dense float64 copy of X,
  so only for problems that fit comfortably in memory).
* ``solver="torch"`` -- all K classes at once as one ``(D+1) x K`` parameter
  matrix, full-batch ``torch.optim.LBFGS`` with strong-Wolfe line search,
  preconditioned by the top eigenvectors of a row sample's second moment
  (``_Preconditioner``) and optionally warm-started from another fit.
  X is only ever read in row chunks (``X[a:b]``), so it can be a
  ``np.memmap`` larger than RAM; peak extra memory is about one chunk.
* ``solver="auto"`` -- torch when ``X.nbytes > 1e9`` else liblinear.

No preprocessing happens in here: the objective is LinearSVC's on exactly the
features given.  Standardisation is the caller's job (see ``protocol``).

Accepted feature containers (``X``): numpy arrays / memmaps (N x D, any float
dtype, float32 C-contiguous is zero-copy), torch tensors, or any object with
``.shape == (N, D)`` whose ``X[a:b]`` returns an array-like row block (e.g.
``protocol.FeatureView``, which standardises lazily).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

__all__ = [
    "LinearProbe",
    "fit_linear_svm",
    "svm_objective",
    "AUTO_TORCH_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "SMALL_PROBLEM_FLOPS",
]

#: ``solver="auto"`` switches to the torch solver above this many bytes of X
#: (liblinear would need a float64 copy: 2x this, plus its own structures).
AUTO_TORCH_BYTES = 1e9
#: Target size of one row chunk of X (float32 bytes) when ``chunk_rows`` is None.
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: Torch solver preconditioner: default rank, and the row sample it is built from
#: (at most this many rows and bytes of float32).
PRECONDITION_RANK = 256
SAMPLE_ROWS = 4096
SAMPLE_BYTES = 256 * 2**20
#: Below this N*D*K the CPU torch solver runs single-threaded by default.
SMALL_PROBLEM_FLOPS = 5e7


# --------------------------------------------------------------------------
# Row-chunk access to X (numpy / memmap / torch / lazy views)
# --------------------------------------------------------------------------
def _shape(X: Any) -> tuple[int, int]:
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (N x D), got shape {shape}")
    return int(shape[0]), int(shape[1])


def _nbytes(X: Any) -> int:
    """Bytes of X; for lazy views assume float32 (that is what they yield)."""
    if isinstance(X, torch.Tensor):
        return X.numel() * X.element_size()
    nb = getattr(X, "nbytes", None)
    if nb is not None:
        return int(nb)
    n, d = _shape(X)
    return n * d * 4


def _default_chunk_rows(d: int) -> int:
    return max(1, DEFAULT_CHUNK_BYTES // (4 * max(d, 1)))


def _numpy_block(X: Any, a: int, b: int) -> np.ndarray:
    """Rows a:b of X as a numpy array (a view whenever X allows one)."""
    if isinstance(X, torch.Tensor):
        return X[a:b].detach().cpu().numpy()
    return np.asarray(X[a:b])


def _torch_block(X: Any, a: int, b: int, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """Rows a:b of X as a torch tensor on ``device`` in ``dtype``.

    For a C-contiguous float32 numpy array / memmap on CPU this is a zero-copy
    ``torch.from_numpy`` view; otherwise it is one chunk-sized copy.  Never
    touches more than rows a:b of X.
    """
    if isinstance(X, torch.Tensor):
        return X[a:b].to(device=device, dtype=dtype)
    blk = np.asarray(X[a:b])
    if blk.dtype != np.float32 or not blk.flags.c_contiguous:
        blk = np.ascontiguousarray(blk, dtype=np.float32)  # one chunk copy
    with warnings.catch_warnings():
        # read-only memmaps trigger "non-writable array" warnings; we never
        # write into the block, so a shared view is safe.
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(blk)
    return t.to(device=device, dtype=dtype)


def _iter_numpy_chunks(X: Any, chunk_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    n, _ = _shape(X)
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        yield a, b, _numpy_block(X, a, b)


def _resolve_device(device: Any) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------
# Objective (numpy reference; used in tests and for reporting liblinear fits)
# --------------------------------------------------------------------------
def _ovr_targets(y_idx: np.ndarray, n_cols: int) -> np.ndarray:
    """+-1 one-vs-rest targets, N x n_cols (n_cols == 1: binary, +1 = class 1)."""
    if n_cols == 1:
        return np.where(y_idx == 1, 1.0, -1.0)[:, None]
    return np.where(y_idx[:, None] == np.arange(n_cols)[None, :], 1.0, -1.0)


def svm_objective(X: Any, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                  C: float, *, classes: np.ndarray | None = None,
                  intercept_scaling: float = 1.0, fit_intercept: bool = True,
                  chunk_rows: int | None = None) -> np.ndarray:
    """LinearSVC's primal objective for each one-vs-rest problem.

    Args:
        X: N x D features (any container accepted by the solver).
        y: N labels.
        coef: K' x D weights (K' = K classes, or 1 for a binary problem).
        intercept: K' intercepts (``intercept_scaling * w_b``).
        C: regularisation constant.
        classes: sorted class labels (default ``np.unique(y)``).

    Returns:
        float64 array of K' objective values
        ``0.5*(||w||^2 + w_b^2) + C * sum_i max(0, 1 - y_i(w.x_i + b))^2``
        with ``w_b = intercept / intercept_scaling`` (0 without intercept).
    """
    y = np.asarray(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    y_idx = np.searchsorted(classes, y)
    coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(intercept, dtype=np.float64),
                                (coef.shape[0],))
    n, d = _shape(X)
    chunk_rows = chunk_rows or _default_chunk_rows(d)
    loss = np.zeros(coef.shape[0])
    for a, b, blk in _iter_numpy_chunks(X, chunk_rows):
        s = np.asarray(blk, dtype=np.float64) @ coef.T + intercept
        t = _ovr_targets(y_idx[a:b], coef.shape[0])
        m = np.maximum(0.0, 1.0 - t * s)
        loss += (m * m).sum(0)
    reg = (coef * coef).sum(1)
    if fit_intercept:
        reg = reg + (intercept / intercept_scaling) ** 2
    return 0.5 * reg + C * loss


# --------------------------------------------------------------------------
# Fitted model
# --------------------------------------------------------------------------
@dataclass
class LinearProbe:
    """A fitted one-vs-rest linear classifier (either solver).

    Attributes:
        coef_: K' x D float64 weights (K' = n_classes, or 1 for binary
            problems where the row scores ``classes_[1]``, as in sklearn).
        intercept_: K' float64 intercepts.
        classes_: sorted labels.
        C: regularisation constant used.
        solver: "liblinear" or "torch".
        n_iter_: iterations (liblinear: max over classes; torch: L-BFGS).
        n_evals_: full passes over X (torch only; liblinear: None).
        fit_seconds_: wall-clock seconds of the fit.
        objective_: per-class primal objective at the solution (K',), as
            :func:`svm_objective` computes it (not included in fit_seconds_
            for liblinear).
        converged_: liblinear: no ConvergenceWarning; torch: stopped by a
            tolerance (relative gradient <= tol, or no measurable progress)
            rather than by the iteration budget (``extra_["grad_rel"]`` holds
            the final relative gradient).
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

        Args:
            X: N x D features (numpy / memmap / torch / lazy view).

        Returns:
            N x K' array, or shape (N,) for a binary problem (like sklearn).
        """
        n, d = _shape(X)
        if d != self.coef_.shape[1]:
            raise ValueError(f"X has {d} features, probe expects {self.coef_.shape[1]}")
        chunk_rows = chunk_rows or _default_chunk_rows(d)
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float64)
        for a, b, blk in _iter_numpy_chunks(X, chunk_rows):
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


# --------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------
def fit_linear_svm(X_train: Any, y_train: np.ndarray, C: float, *,
                   solver: str = "auto", device: Any = "cpu",
                   max_iter: int | None = None, tol: float | None = None,
                   fit_intercept: bool = True, intercept_scaling: float = 1.0,
                   dual: bool | str = "auto", random_state: int = 0,
                   chunk_rows: int | None = None, precision: str = "mixed",
                   history_size: int = 20, cache_on_device: bool | None = None,
                   num_threads: int | None = None, init: LinearProbe | None = None,
                   precondition: int = PRECONDITION_RANK, rows: np.ndarray | None = None,
                   verbose: bool = False) -> LinearProbe:
    """Fit a one-vs-rest linear L2-SVM (LinearSVC's objective, see module doc).

    Args:
        X_train: N x D features (float32 ndarray / np.memmap / torch tensor /
            lazy row view). The torch solver never copies it whole.
        y_train: N integer (or any sortable) labels, >= 2 classes.
        C: regularisation constant (the paper-style probes use 1e-4..1e-1).
        solver: "liblinear", "torch" or "auto" (torch iff X bytes > 1e9).
        device: torch device for the torch solver ("cpu", "cuda", "auto").
        max_iter: liblinear: LinearSVC ``max_iter`` (default 1000);
            torch: L-BFGS iterations (default 500; at most 2x that many passes).
        tol: liblinear: LinearSVC ``tol`` (default 1e-4); torch: stop when
            ``max|grad f| <= tol * max|grad f(0)|`` (default 1e-5).
        fit_intercept, intercept_scaling: as LinearSVC (bias regularised).
        dual: liblinear only; "auto" -> dual iff n_samples < n_features.
        random_state: liblinear's coordinate-descent shuffling seed.
        chunk_rows: rows per chunk (default: ~64 MiB of float32 per chunk).
        precision: torch only. "mixed": float32 matmuls on float32 chunks (no
            chunk copy on CPU), float64 parameters/loss/gradient accumulation;
            "double": chunks cast to float64 (one 2x chunk copy per chunk).
        history_size: L-BFGS memory.
        cache_on_device: torch only. Keep X's chunks resident on a non-CPU
            device between passes (one device copy of X, none on the host).
            None -> only if device is CUDA and X takes < 40% of free memory.
        num_threads: torch solver on CPU: intra-op threads during the fit
            (restored afterwards). None -> 1 for small problems
            (N*D*K < SMALL_PROBLEM_FLOPS, where OpenMP overhead dominates and a
            loaded machine can make several threads ~10x slower), otherwise
            torch's current setting.
        init: torch solver only: start L-BFGS from this probe's weights (a
            fit of the same classes at a nearby C or on overlapping rows)
            instead of from zero. Along an ascending C grid this typically
            saves most of the passes over X. liblinear has no warm start and
            ignores it.
        precondition: torch solver only: rank of the low-rank preconditioner
            built from a row sample of X (see ``_Preconditioner``); 0 turns it
            off. It changes how fast L-BFGS gets there, not the solution.

        rows: fit on rows ``rows`` of X (and of ``y_train``, which then has
            one label per row of X) only. The torch solver still streams all of
            X in contiguous chunks and masks the other rows out, which beats
            gathering the subset on every pass when it is most of X (the
            full-label protocol's training pool); liblinear gets ``X[rows]``.

    Returns:
        LinearProbe.
    """
    n, d = _shape(X_train)
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
    solver = resolve_solver(solver, _nbytes(X_train) * (1 if mask is None else mask.mean()))
    if solver == "liblinear":
        if mask is not None:
            X_train, y = np.asarray(X_train[np.flatnonzero(mask)]), y[mask]
        return _fit_liblinear(X_train, y, C, classes, max_iter=max_iter or 1000,
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
            return _fit_torch(X_train, y, C, classes, device=dev,
                              max_iter=max_iter or 500,
                              tol=1e-5 if tol is None else tol,
                              fit_intercept=fit_intercept,
                              intercept_scaling=intercept_scaling,
                              chunk_rows=chunk_rows or _default_chunk_rows(d),
                              precision=precision, history_size=history_size,
                              cache_on_device=cache_on_device, init=init, precondition=precondition,
                              mask=mask, verbose=verbose)
        finally:
            if change:
                torch.set_num_threads(prev)
    raise ValueError(f"unknown solver {solver!r} (liblinear, torch, auto)")


def resolve_solver(solver: str, nbytes: float) -> str:
    """"auto" -> "torch" above AUTO_TORCH_BYTES of features, else "liblinear"."""
    if solver == "auto":
        return "torch" if nbytes > AUTO_TORCH_BYTES else "liblinear"
    return solver


def _fit_liblinear(X, y, C, classes, *, max_iter, tol, fit_intercept,
                   intercept_scaling, dual, random_state, verbose) -> LinearProbe:
    from sklearn.svm import LinearSVC

    n, d = _shape(X)
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


class _Preconditioner:
    """Low-rank (Nystrom-style) preconditioner ``W = P V`` for the torch solver.

    The objective's (generalised) Hessian for class k is ``I + 2 C sum_{i active} x_i x_i^T``
    with x_i extended by the bias feature ``s``. DCGAN features are non-negative and strongly
    correlated, so its spectrum spans several orders of magnitude and plain L-BFGS needs
    hundreds of passes over X. We approximate it by ``I + a_k U diag(lam) U^T`` (top-``rank``
    eigenpairs of the second-moment matrix of a row sample, ``a_k = 2 C n rho_k`` with
    ``rho_k`` the fraction of active margins at the starting point) and map V to W so that
    those top directions are brought down to the level of the largest eigenvalue left out
    (``lam[-1]``), as Nystrom-PCG does. P is symmetric and invertible, so the minimiser in W
    is exactly the unpreconditioned one; only the path L-BFGS takes changes.
    """

    def __init__(self, U: torch.Tensor, t: torch.Tensor):
        self.U, self.t = U, t      # (D+1) x r orthonormal; r x K with P = I + U diag(t_k) U^T

    @classmethod
    def build(cls, X, n: int, d: int, s: float, *, n_fit: int, rank: int, C: float,
              active: torch.Tensor, device: torch.device) -> _Preconditioner | None:
        """From a sample of X's n rows; ``n_fit`` rows (and ``active``) enter the objective."""
        block = 64
        m = int(min(n, SAMPLE_ROWS, max(2 * rank, SAMPLE_BYTES // (4 * (d + 1)))))
        r = min(int(rank), m - 1, d)
        if r < 1:
            return None
        # contiguous row blocks spread evenly over X (the solver only ever reads slices)
        starts = np.unique(np.linspace(0, max(0, n - block), max(1, -(-m // block))).astype(int))
        rows = [_torch_block(X, a, min(n, a + block), device, torch.float32) for a in starts]
        sample = torch.cat(rows)
        sample = torch.cat([sample, torch.full((len(sample), 1), s, device=device)], 1)
        # svd_lowrank draws from the global RNG: fixed seed, callers' RNG state untouched
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            U, sv, _ = torch.svd_lowrank(sample.T, q=r, niter=3)
        del sample, rows
        lam = (sv.double() ** 2) / m                   # eigenvalues of the second moment
        a = (2.0 * C * n_fit) * active.double()[None, :]   # 1 x K
        t = torch.sqrt((1.0 + a * lam[-1]) / (1.0 + a * lam[:, None])) - 1.0
        return cls(U.double(), t)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        return V + self.U @ (self.t * (self.U.T @ V))

    def inverse(self, W: torch.Tensor) -> torch.Tensor:
        return W + self.U @ ((1.0 / (1.0 + self.t) - 1.0) * (self.U.T @ W))


def _fit_torch(X, y, C, classes, *, device, max_iter, tol, fit_intercept,
               intercept_scaling, chunk_rows, precision, history_size,
               cache_on_device, init=None, precondition=0, mask=None, verbose) -> LinearProbe:
    if precision not in ("mixed", "double"):
        raise ValueError("precision must be 'mixed' or 'double'")
    t0 = time.perf_counter()
    n, d = _shape(X)
    k = 1 if classes.size == 2 else classes.size  # binary: one column, like liblinear
    cdtype = torch.float32 if precision == "mixed" else torch.float64
    f64 = torch.float64
    s = float(intercept_scaling) if fit_intercept else 0.0

    # +-1 targets for all classes at once: N x K float64 (small: N*K*8 bytes).
    y_idx = np.searchsorted(classes, y)   # masked-out rows may carry any label
    T = torch.from_numpy(_ovr_targets(y_idx, k)).to(device)
    M = None if mask is None else torch.from_numpy(mask.astype(np.float64)[:, None]).to(device)
    n_fit = n if mask is None else int(mask.sum())

    bounds = [(a, min(n, a + chunk_rows)) for a in range(0, n, chunk_rows)]
    if cache_on_device is None:
        cache_on_device = False
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            cache_on_device = n * d * (4 if precision == "mixed" else 8) < 0.4 * free
    cache: list[torch.Tensor] | None = (
        [_torch_block(X, a, b, device, cdtype) for a, b in bounds]
        if cache_on_device and device.type != "cpu" else None)

    def chunks():
        for i, (a, b) in enumerate(bounds):
            yield a, b, (cache[i] if cache is not None
                         else _torch_block(X, a, b, device, cdtype))

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
    P = (_Preconditioner.build(X, n, d, s, n_fit=n_fit, rank=precondition, C=C, active=active0,
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
