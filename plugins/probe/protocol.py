"""Evaluation protocol for linear feature probes (DCGAN paper, sections 5.1-5.2).

* CIFAR-10 style, full labels (``labels_per_class=None``): a validation split
  is held out of the training set, C is chosen on it with one fit on the rest,
  then the probe is refit on *all* training labels at that C and scored on
  the test set.
* SVHN style, label-scarce (``labels_per_class=N``): a validation split
  (10,000 examples by default when the training set is large) is held out; K
  class-balanced draws of N labels per class are taken from the remainder; C
  is the grid value with the lowest validation error averaged over the draws;
  each draw is then fit at that C and scored on the test set, reporting mean
  and std (or the +-1.96 std band of the paper's Table 2, ``ci95=True``).

Preprocessing: none by default in the ``svm-probe`` evaluator (the paper's
L2-SVM on the raw features); ``preprocess="standardize"`` fits per-feature
statistics on each training subset only (what a label-scarce user could do).

C selection walks the grid in ascending order, warm-starting each torch fit
from the previous one; the label-scarce final fits reuse the selection's fits
at the chosen C, and the full-label refit starts from the fit on the pool.

Everything is chunk-wise: features may be ``np.memmap`` arrays larger than
RAM; a training subset / standardised copy is never materialised whole
unless the liblinear solver is used (it needs a dense float64 copy, which is
why ``solver="auto"`` switches to the torch solver above 1 GB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .solver import (_default_chunk_rows, _iter_numpy_chunks, _shape,
                     fit_linear_svm, resolve_solver)

__all__ = [
    "DEFAULT_C_GRID",
    "FeatureView",
    "Standardizer",
    "standardize",
    "balanced_draw",
    "validation_split",
    "select_C",
    "evaluate",
    "ProbeResult",
]

#: C values searched by default (the features are standardised, C is tiny
#: because D is large: 28,672 features for the paper's discriminator).
DEFAULT_C_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-1)


def _as_rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --------------------------------------------------------------------------
# Lazy row subset + standardisation
# --------------------------------------------------------------------------
class FeatureView:
    """Lazy ``(X[rows] - mean) / scale`` as float32, read in row blocks.

    Holds no copy of X: ``view[a:b]`` reads only rows ``rows[a:b]`` of X
    (fancy indexing of a memmap reads just those rows) and returns a float32
    block of shape ``(b - a, D)``: a view of X when no standardisation and no
    gather is needed (callers must only read blocks), otherwise one new array.
    This is the container the solver's chunked passes consume, so neither the
    training subset nor its standardised version is ever materialised whole.

    Args:
        X: N x D array / memmap.
        rows: optional 1-D indices selecting (and ordering) rows of X; keep
            them sorted for sequential disk reads.
        mean, scale: optional length-D arrays (standardisation).
    """

    def __init__(self, X: Any, rows: np.ndarray | None = None,
                 mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n, d = _shape(X)
        self.shape = (n if self.rows is None else self.rows.size, d)
        # float32 statistics: the block arithmetic stays float32 (no float64
        # block copies); the statistics themselves were computed in float64.
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.inv_scale = None if scale is None else (1.0 / np.asarray(scale, np.float64)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("FeatureView supports row indexing only")
        fresh = False
        if self.rows is None:
            blk = self.X[key]
        else:
            r = self.rows[key]
            if not np.ndim(r):
                blk = self.X[int(r)][None]
            elif r.size > 1 and np.all(np.diff(r) == 1):
                blk = self.X[int(r[0]):int(r[-1]) + 1]   # a run of rows: a view, no gather
            else:
                blk, fresh = self.X[r], True              # fancy indexing gathers a new array
        out = np.asarray(blk, dtype=np.float32)
        fresh = fresh or (isinstance(blk, np.ndarray) and not np.may_share_memory(out, blk))
        if out.ndim == 1:
            out = out[None]
        if self.mean is None and self.inv_scale is None:
            return out          # may be a view of X: callers only read blocks
        if not fresh:
            out = out.copy()    # never write into X
        if self.mean is not None:
            out -= self.mean
        if self.inv_scale is not None:
            out *= self.inv_scale
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.materialize()
        return out if dtype is None else out.astype(dtype, copy=False)

    def materialize(self, out: np.ndarray | None = None,
                    chunk_rows: int | None = None) -> np.ndarray:
        """Dense float32 N x D copy (into ``out``, e.g. a memmap, if given)."""
        out = np.empty(self.shape, dtype=np.float32) if out is None else out
        for a, b, blk in _iter_numpy_chunks(self, chunk_rows or _default_chunk_rows(self.shape[1])):
            out[a:b] = blk
        return out


class Standardizer:
    """Per-feature standardisation ``(x - mean) / sqrt(var + eps)``.

    Statistics are accumulated chunk-wise in float64 with Chan et al.'s
    pairwise merge of (count, mean, M2), so a memmap is read once in blocks
    and never copied whole. ``var`` is the population variance (ddof=0), as
    in sklearn's ``StandardScaler``; ``eps`` (default 1e-8) only matters for
    (near-)constant features, which StandardScaler instead divides by 1 --
    either way they are 0 on the fitting subset and so get zero SVM weight.

    Attributes (after fit): ``mean_`` and ``scale_`` (float64, length D).
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = float(eps)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.n_samples_seen_ = 0

    def fit(self, X: Any, rows: np.ndarray | None = None, *,
            chunk_rows: int | None = None) -> "Standardizer":
        """Fit on ``X[rows]`` (all rows if None). X: N x D."""
        src = FeatureView(X, rows)
        d = src.shape[1]
        n_tot, mean, m2 = 0, np.zeros(d), np.zeros(d)
        for _, _, blk in _iter_numpy_chunks(src, chunk_rows or _default_chunk_rows(d)):
            b = blk.astype(np.float64)
            nb = b.shape[0]
            mb = b.mean(0)
            m2b = ((b - mb) ** 2).sum(0)
            delta = mb - mean
            tot = n_tot + nb
            mean = mean + delta * (nb / tot)
            m2 = m2 + m2b + delta ** 2 * (n_tot * nb / tot)
            n_tot = tot
        if n_tot == 0:
            raise ValueError("cannot fit a Standardizer on zero rows")
        self.mean_ = mean
        self.scale_ = np.sqrt(m2 / n_tot + self.eps)
        self.n_samples_seen_ = n_tot
        return self

    def view(self, X: Any, rows: np.ndarray | None = None) -> FeatureView:
        """Lazy standardised ``X[rows]`` (no copy)."""
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted")
        return FeatureView(X, rows, self.mean_, self.scale_)

    def transform(self, X: Any, rows: np.ndarray | None = None, *,
                  out: np.ndarray | None = None,
                  chunk_rows: int | None = None) -> np.ndarray:
        """Dense standardised float32 copy of ``X[rows]``, written chunk-wise
        (pass ``out=np.memmap(...)`` to keep it off RAM)."""
        return self.view(X, rows).materialize(out=out, chunk_rows=chunk_rows)


def standardize(X_fit: Any, *others: Any, rows: np.ndarray | None = None,
                eps: float = 1e-8) -> tuple[FeatureView, ...]:
    """Standardise with statistics fitted on ``X_fit[rows]`` only.

    Returns lazy views: ``(X_fit[rows] standardised, *others standardised)``.
    Use ``np.asarray(view)`` or ``view.materialize(out=...)`` for a dense copy.
    """
    st = Standardizer(eps).fit(X_fit, rows)
    return (st.view(X_fit, rows),) + tuple(st.view(o) for o in others)


# --------------------------------------------------------------------------
# Splits and draws
# --------------------------------------------------------------------------
def balanced_draw(labels: np.ndarray, per_class: int, rng: Any, *,
                  pool: np.ndarray | None = None,
                  classes: np.ndarray | None = None) -> np.ndarray:
    """Class-balanced random subset: exactly ``per_class`` indices per class.

    Args:
        labels: N labels.
        per_class: examples per class.
        rng: ``np.random.Generator`` or seed.
        pool: candidate indices (default all); e.g. training minus validation.
        classes: classes to draw (default ``np.unique(labels)``: every class
            present in ``labels`` must be drawable from the pool).

    Returns:
        sorted int64 indices into ``labels``, ``per_class * n_classes`` long.

    Raises:
        ValueError: a class has fewer than ``per_class`` candidates.
    """
    rng = _as_rng(rng)
    labels = np.asarray(labels)
    pool = np.arange(labels.size) if pool is None else np.asarray(pool, dtype=np.int64)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    pool_labels = labels[pool]
    out = []
    for c in classes:
        cand = pool[pool_labels == c]
        if cand.size < per_class:
            raise ValueError(f"class {c!r} has {cand.size} candidates < per_class={per_class}")
        out.append(rng.choice(cand, size=per_class, replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


def validation_split(n: int, val_size: int | float | None, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """Random (pool, val) split of ``range(n)``, both sorted.

    ``val_size``: int (count), float in (0, 1) (fraction), or None ->
    ``min(10_000, n // 5)`` (the SVHN protocol's 10,000 for large sets).
    """
    rng = _as_rng(rng)
    if val_size is None:
        nv = min(10_000, n // 5)
    elif isinstance(val_size, float) and 0 < val_size < 1:
        nv = int(round(val_size * n))
    else:
        nv = int(val_size)
    if not 0 <= nv < n:
        raise ValueError(f"validation size {nv} out of range for {n} examples")
    perm = rng.permutation(n)
    return np.sort(perm[nv:]), np.sort(perm[:nv])


# --------------------------------------------------------------------------
# C selection
# --------------------------------------------------------------------------
def _fit_on(X, y, rows, C, solver, preprocess, fit_kwargs, st=None, init=None):
    """Fit a probe on rows of X (all rows if None); returns (probe, standardizer or None)."""
    if preprocess == "standardize":
        st = st or Standardizer().fit(X, rows)
        Xv = st.view(X, rows)
    elif preprocess is None:
        Xv = FeatureView(X, rows)
    else:
        raise ValueError(f"unknown preprocess {preprocess!r} ('standardize' or None)")
    n = _shape(X)[0]
    if (preprocess is None and rows is not None and 2 * len(rows) > n
            and resolve_solver(solver, Xv.nbytes) == "torch"):
        # most of X (the full-label pool): stream X whole and mask the rest out
        # rather than gathering the subset on every pass
        return fit_linear_svm(X, np.asarray(y), C, solver="torch", init=init, rows=rows,
                              **fit_kwargs), st
    ysel = np.asarray(y) if rows is None else np.asarray(y)[rows]
    return fit_linear_svm(Xv, ysel, C, solver=solver, init=init, **fit_kwargs), st


def _view(X, rows, st):
    return FeatureView(X, rows) if st is None else st.view(X, rows)


def select_C(X: Any, y: np.ndarray, train_idx_list: Sequence[np.ndarray],
             val_idx: np.ndarray, grid: Sequence[float] = DEFAULT_C_GRID,
             solver: str = "auto", *, preprocess: str | None = "standardize",
             return_fits: bool = False, **fit_kwargs):
    """Choose C by mean validation error over several training draws.

    For each draw ``train_idx_list[j]`` the standardiser is fitted on that
    draw only and applied to ``X[val_idx]``; for each C in ``grid`` a probe is
    fitted on the draw and its error on the validation rows recorded. Within
    a draw the C values are fitted in ascending order, each fit starting from
    the previous one's weights (the torch solver's warm start: a regularisation
    path, which saves most passes over X; liblinear starts from zero).

    Args:
        X: N x D features (array or memmap); y: N labels.
        train_idx_list: one index array per draw.
        val_idx: validation indices (disjoint from the draws).
        grid: candidate C values.
        solver, **fit_kwargs: passed to :func:`fit_linear_svm`.
        return_fits: also return, per draw, ``(probe, standardizer)`` at the
            chosen C, so a caller that needs exactly those fits reuses them.

    Returns:
        (best_C, table) with ``table[C]`` = mean validation error in [0, 1]
        (in ``grid`` order; ties go to the earliest C in ``grid`` order), plus
        the list of per-draw fits when ``return_fits``.
    """
    y = np.asarray(y)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if val_idx.size == 0:
        raise ValueError("select_C needs a non-empty validation set")
    grid = [float(C) for C in grid]
    errs: dict[float, list[float]] = {C: [] for C in grid}
    fits: list[dict[float, tuple]] = []
    for tr in train_idx_list:
        tr = np.asarray(tr, dtype=np.int64)
        st = Standardizer().fit(X, tr) if preprocess == "standardize" else None
        Xval = _view(X, val_idx, st)
        previous, by_C = None, {}
        for C in sorted(set(grid)):
            probe, _ = _fit_on(X, y, tr, C, solver, preprocess, fit_kwargs, st, init=previous)
            errs[C].append(1.0 - probe.score(Xval, y[val_idx]))
            previous, by_C[C] = probe, (probe, st)
        fits.append(by_C)
    table = {C: float(np.mean(errs[C])) for C in grid}
    best = min(table, key=lambda c: (table[c], grid.index(c)))
    if return_fits:
        return best, table, [by_C[best] for by_C in fits]
    return best, table


# --------------------------------------------------------------------------
# Full evaluation
# --------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """Outcome of :func:`evaluate`. Accuracies/errors are fractions in [0, 1].

    ``*_std`` use ddof=1 when there are >= 2 draws (ddof=0 for one);
    ``*_ci95`` are the half-widths ``1.96 * std`` when ``ci95=True``
    (SVHN Table 2 style "mean +- 1.96 std"), else None.
    """

    accuracy_mean: float
    accuracy_std: float
    error_mean: float
    error_std: float
    accuracies: list[float]
    best_C: float
    C_table: dict[float, float]
    fit_seconds: float            # mean wall time of one final fit
    total_fit_seconds: float      # all fits, C selection included
    feature_dim: int
    n_train: int                  # labelled examples per final fit
    labels_per_class: int | None
    draws: int
    val_size: int
    solvers: list[str]            # solver(s) actually used by the final fits
    seed: int
    ci95: bool = False
    accuracy_ci95: float | None = None
    error_ci95: float | None = None
    std_ddof: int = 1
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        spread = self.error_ci95 if self.ci95 else self.error_std
        tag = "+-1.96std" if self.ci95 else "+-std"
        mode = "all labels" if self.labels_per_class is None else f"{self.labels_per_class}/class x {self.draws} draws"
        return (f"linear L2-SVM probe ({mode}, D={self.feature_dim}, C={self.best_C:g}): "
                f"accuracy {100 * self.accuracy_mean:.2f}%, error {100 * self.error_mean:.2f}% "
                f"{tag} {100 * spread:.2f}%")


def evaluate(X_train: Any, y_train: np.ndarray, X_test: Any, y_test: np.ndarray, *,
             labels_per_class: int | None = None, draws: int = 10,
             select_draws: int | None = None,
             C_grid: Sequence[float] = DEFAULT_C_GRID,
             val_size: int | float | None = None, seed: int = 0,
             solver: str = "auto", preprocess: str | None = "standardize",
             ci95: bool = False, device: Any = "cpu",
             fit_kwargs: dict | None = None) -> ProbeResult:
    """Run the linear-probe protocol on precomputed features.

    Args:
        X_train, X_test: N x D / M x D float features (arrays or memmaps).
        y_train, y_test: integer labels.
        labels_per_class: None -> full-label mode (CIFAR-10 style); N ->
            label-scarce mode with ``draws`` class-balanced draws of N per
            class from the training pool excluding the validation split.
        draws: number of draws in label-scarce mode (ignored otherwise).
        select_draws: label-scarce mode: C is selected on the first
            ``select_draws`` draws only (None -> all ``draws``; fewer saves
            fits on big features). Every draw is then fit at that C.
        C_grid: candidate C values (a single value skips selection).
        val_size: validation split (see :func:`validation_split`); taken
            from the training set with the seeded RNG.
        seed: seeds the split, the draws and liblinear's shuffling;
            the same seed gives the same numbers.
        solver: "auto" | "liblinear" | "torch" (see :func:`fit_linear_svm`).
        preprocess: "standardize" (fitted on each training subset) or None.
        ci95: also report 1.96 * std half-widths.
        device: torch device for the torch solver.
        fit_kwargs: extra arguments for :func:`fit_linear_svm`.

    Returns:
        ProbeResult.
    """
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    n, d = _shape(X_train)
    if _shape(X_test)[1] != d:
        raise ValueError("train and test features differ in dimension")
    kw = {"device": device, "random_state": seed}
    kw.update(fit_kwargs or {})
    rng = np.random.default_rng(seed)
    grid = tuple(float(c) for c in C_grid)
    total = 0.0

    if len(grid) > 1:
        pool, val = validation_split(n, val_size, rng)
    else:
        pool, val = np.arange(n), np.zeros(0, dtype=np.int64)

    if labels_per_class is None:
        sel_sets = [pool]
        final_sets = [None]                # refit on every training label (all rows)
    else:
        classes = np.unique(y_train)
        final_sets = [balanced_draw(y_train, labels_per_class, rng, pool=pool, classes=classes)
                      for _ in range(draws)]
        sel_sets = final_sets if select_draws is None else final_sets[:max(1, int(select_draws))]

    t0 = time.perf_counter()
    selected: list[tuple] = []
    if len(grid) > 1:
        best_C, table, selected = select_C(X_train, y_train, sel_sets, val, grid, solver,
                                           preprocess=preprocess, return_fits=True, **kw)
    else:
        best_C, table = grid[0], {grid[0]: float("nan")}
    total += time.perf_counter() - t0

    accs, secs, used = [], [], []
    for j, rows in enumerate(final_sets):
        if rows is not None and j < len(selected):
            # label-scarce: C selection already fitted this very draw at best_C
            probe, st = selected[j]
            secs.append(probe.fit_seconds_)
        else:
            # full labels (refit on every row) or a draw C selection did not use:
            # warm-started from the first selection fit at best_C
            t0 = time.perf_counter()
            init = selected[0][0] if selected else None
            probe, st = _fit_on(X_train, y_train, rows, best_C, solver, preprocess, kw, init=init)
            secs.append(time.perf_counter() - t0)
            total += secs[-1]
        accs.append(probe.score(_view(X_test, None, st), y_test))
        used.append(probe.solver)

    acc = np.asarray(accs)
    ddof = 1 if acc.size > 1 else 0
    a_std = float(acc.std(ddof=ddof))
    return ProbeResult(
        accuracy_mean=float(acc.mean()), accuracy_std=a_std,
        error_mean=float(1.0 - acc.mean()), error_std=a_std,
        accuracies=[float(a) for a in acc], best_C=best_C, C_table=table,
        fit_seconds=float(np.mean(secs)), total_fit_seconds=total,
        feature_dim=d, n_train=n if final_sets[0] is None else int(final_sets[0].size),
        labels_per_class=labels_per_class, draws=len(final_sets),
        val_size=int(val.size), solvers=sorted(set(used)), seed=seed, ci95=ci95,
        accuracy_ci95=1.96 * a_std if ci95 else None,
        error_ci95=1.96 * a_std if ci95 else None, std_ddof=ddof)
