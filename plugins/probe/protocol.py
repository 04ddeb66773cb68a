"""The DCGAN paper's probe protocol (sections 5.1-5.2) on precomputed features.

All labels (CIFAR-10 style): C is chosen on a validation split held out of the training set, then the probe is
refitted on every training label. N labels per class (SVHN style): C is chosen by the mean validation error over
draws of its own random stream, so no reported draw helps choose it, and every reported draw is fitted at that C.
``preprocess``: None, the raw features as in the paper, or "standardize" on each training subset's statistics.
"""
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganlab import shape_of

from .kernel import fit_sets
from .preconditioner import SHARED_RANK, PreconditionBasis, shared_basis
from .settings import DEFAULT_C_GRID
from .solver import feature_bytes, fit_linear_svm, resolve_solver
from .views import FeatureView, Standardizer

SELECTION_STREAM = 1  # seeds C selection's draws: numpy.random.default_rng([seed, SELECTION_STREAM])
PREPROCESS = ("standardize", None)


def balanced_draw(labels: np.ndarray, per_class: int, rng: Any, *, pool: np.ndarray | None = None,
                  classes: np.ndarray | None = None) -> np.ndarray:
    """Exactly ``per_class`` random indices of each class (default: every class in ``labels``) from ``pool``
    (default: all), sorted int64; ``rng``: a Generator or a seed. Too few candidates is a ValueError."""
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    pool = np.arange(labels.size) if pool is None else np.asarray(pool, dtype=np.int64)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    out = []
    for c in classes:
        candidates = pool[labels[pool] == c]
        if candidates.size < per_class:
            raise ValueError(f"class {c!r} has {candidates.size} candidates < per_class={per_class}")
        out.append(rng.choice(candidates, size=per_class, replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


def validation_split(n: int, val_size: int | float | None, rng: Any) -> tuple[np.ndarray, np.ndarray]:
    """A random (pool, validation) split of ``range(n)``, both sorted. ``val_size``: a count, a fraction in
    (0, 1), or None for ``min(10_000, n // 5)`` (the SVHN protocol's 10,000 on large sets)."""
    rng = np.random.default_rng(rng)
    if val_size is None:
        count = min(10_000, n // 5)
    elif isinstance(val_size, float) and 0 < val_size < 1:
        count = int(round(val_size * n))
    else:
        count = int(val_size)
    if not 0 <= count < n:
        raise ValueError(f"validation size {count} out of range for {n} examples")
    perm = rng.permutation(n)
    return np.sort(perm[count:]), np.sort(perm[:count])


def scarcest_class(labels: np.ndarray, val_size: int | float | None, seed: int) -> tuple[int, int]:
    """(class, rows) of the class with the fewest rows outside the validation split that ``evaluate`` cuts with
    the same ``val_size`` and ``seed``: no class-balanced draw can take more of each class."""
    labels = np.asarray(labels)
    pool = labels[validation_split(labels.size, val_size, np.random.default_rng(seed))[0]]
    count, label = min((int(np.sum(pool == c)), int(c)) for c in np.unique(labels))
    return label, count


def _with_basis(X: Any, solver: str, kw: dict) -> dict:
    """``kw`` with one preconditioner basis of X for every torch fit on it (a C grid, a refit)."""
    rank = kw.get("precondition", SHARED_RANK)
    by_torch = resolve_solver(solver, feature_bytes(X), shape_of(X)) == "torch"
    if isinstance(rank, PreconditionBasis) or not rank or not by_torch:
        return kw
    basis = shared_basis(X, rank=rank, intercept_scaling=kw.get("intercept_scaling", 1.0),
                         device=kw.get("device", "cpu"), chunk_rows=kw.get("chunk_rows"))
    return kw if basis is None else {**kw, "precondition": basis}


def fit_grid(X: Any, y: np.ndarray, row_sets: Sequence[np.ndarray | None], grid: Sequence[float],
             solver: str = "auto", *, preprocess: str | None = None, val_idx: np.ndarray | None = None,
             init: Any = None, **fit_kwargs) -> list[tuple]:
    """Each row set of X (None: every row) at each C: per set, (C -> probe, standardiser, validation error at each C
    given ``val_idx``, seconds). Row sets of one size that the kernel path takes are one batch; the others go C by
    C upwards, each fit starting from the previous one's weights (``init``'s first): a regularisation path saves
    most passes over X."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"unknown preprocess {preprocess!r} ('standardize' or None)")
    grid, (n, d) = [float(C) for C in grid], shape_of(X)
    sizes = {n if rows is None else len(rows) for rows in row_sets}
    if len(sizes) == 1 and resolve_solver(solver, min(sizes) * d * 4, (min(sizes), d)) == "kernel":
        classes = np.unique(y if row_sets[0] is None else y[np.concatenate(row_sets)])
        return fit_sets(X, y, row_sets, grid, classes=classes, preprocess=preprocess, val_idx=val_idx, **fit_kwargs)
    out = []
    for rows in row_sets:
        start = time.perf_counter()
        st = Standardizer().fit(X, rows) if preprocess == "standardize" else None
        X_fit, y_fit, kw = FeatureView(X, None, st), y, fit_kwargs
        if rows is not None:
            # raw in-memory features are gathered once, so each pass reads contiguous blocks; a memmap or a
            # standardised subset is read lazily, block by block
            if isinstance(kw.get("precondition"), PreconditionBasis) and st is None:
                kw = {**kw, "precondition": kw["precondition"].subset(rows)}
            gathered = st is None and type(X) is np.ndarray
            X_fit, y_fit = (np.ascontiguousarray(X[rows]) if gathered else FeatureView(X, rows, st)), y[rows]
        kw, probes, previous = _with_basis(X_fit, solver, kw), {}, init
        for C in sorted(set(grid)):
            probes[C] = previous = fit_linear_svm(X_fit, y_fit, C, solver=solver, init=previous, **kw)
        seconds = time.perf_counter() - start
        val = None if val_idx is None else FeatureView(X, val_idx, st)
        errors = None if val is None else [1 - probes[C].score(val, y[val_idx]) for C in grid]
        out.append((probes, st, errors, seconds))
    return out


def select_C(X: Any, y: np.ndarray, train_idx_list: Sequence[np.ndarray], val_idx: np.ndarray,
             grid: Sequence[float] = DEFAULT_C_GRID, solver: str = "auto", *,
             preprocess: str | None = "standardize", return_fits: bool = False, **fit_kwargs):
    """Choose C by the mean validation error over training draws (one index array each): ``(best_C, table)``,
    ``table[C]`` the error in [0, 1] in grid order (ties: the earlier C), with ``return_fits`` each draw's
    ``(probe, standardiser)`` at the chosen C too. ``fit_kwargs`` go to ``fit_linear_svm``."""
    y, val_idx, grid = np.asarray(y), np.asarray(val_idx, dtype=np.int64), [float(C) for C in grid]
    if val_idx.size == 0:
        raise ValueError("select_C needs a non-empty validation set")
    sets = fit_grid(X, y, [np.asarray(rows, dtype=np.int64) for rows in train_idx_list], grid, solver,
                    preprocess=preprocess, val_idx=val_idx, **fit_kwargs)
    table = {C: float(np.mean([errors[j] for _, _, errors, _ in sets])) for j, C in enumerate(grid)}
    best = min(table, key=lambda c: (table[c], grid.index(c)))
    return (best, table, [(probes[best], st) for probes, st, _, _ in sets]) if return_fits else (best, table)


@dataclass
class ProbeResult:
    """The outcome of ``evaluate``, in fractions: ``*_std`` with ddof=1 over two or more draws; ``*_ci95``:
    1.96 std with ``ci95`` (SVHN Table 2), else None; ``correct``: all labels, each test image right or wrong."""

    accuracy_mean: float
    accuracy_std: float
    error_mean: float
    error_std: float
    accuracies: list[float]
    best_C: float
    C_table: dict[float, float]
    fit_seconds: float  # the mean wall time of one final fit
    total_fit_seconds: float  # every fit, choosing C included
    feature_dim: int
    n_train: int  # labelled rows per final fit
    draws: int
    val_size: int
    solvers: list[str]  # the solvers the final fits used
    accuracy_ci95: float | None = None
    error_ci95: float | None = None
    correct: list[bool] | None = None


def evaluate(X_train: Any, y_train: np.ndarray, X_test: Any, y_test: np.ndarray, *,
             labels_per_class: int | None = None, draws: int = 10, select_draws: int | None = None,
             C_grid: Sequence[float] = DEFAULT_C_GRID, val_size: int | float | None = None, seed: int = 0,
             solver: str = "auto", preprocess: str | None = "standardize", ci95: bool = False,
             device: Any = "cpu", fit_kwargs: dict | None = None) -> ProbeResult:
    """The protocol on N x D training and M x D test features. ``labels_per_class``: None for all labels, else N
    per class in ``draws`` draws, C chosen on ``select_draws`` of its own (None: as many); one C skips the choice.
    ``seed`` seeds the split, the draws and liblinear; ``solver``, ``device``, ``fit_kwargs``: ``fit_linear_svm``'s."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n, d = shape_of(X_train)
    if shape_of(X_test)[1] != d:
        raise ValueError("train and test features differ in dimension")
    kw = {"device": device, "random_state": seed, **(fit_kwargs or {})}
    grid, rng = tuple(float(c) for c in C_grid), np.random.default_rng(seed)
    pool, val = validation_split(n, val_size, rng) if len(grid) > 1 else (np.arange(n), np.zeros(0, np.int64))
    final_sets, selection_sets = [None], [pool]  # all labels: every row, C chosen on the pool
    if labels_per_class is not None:  # C chosen on draws of its own stream
        classes = np.unique(y_train)
        final_sets = [balanced_draw(y_train, labels_per_class, rng, pool=pool, classes=classes) for _ in range(draws)]
        selection_rng = np.random.default_rng([seed, SELECTION_STREAM])
        selection_sets = [balanced_draw(y_train, labels_per_class, selection_rng, pool=pool, classes=classes)
                          for _ in range(draws if select_draws is None else max(1, int(select_draws)))]
    start = time.perf_counter()
    if preprocess is None and labels_per_class is None:
        kw = _with_basis(X_train, solver, kw)  # one basis for the grid on the pool and the refit on every row
    best_C, table, warm = grid[0], {grid[0]: float("nan")}, None
    if len(grid) > 1:
        best_C, table, chosen = select_C(X_train, y_train, selection_sets, val, grid, solver, preprocess=preprocess,
                                         return_fits=True, **kw)
        warm = chosen[0][0]
    fits = fit_grid(X_train, y_train, final_sets, [best_C], solver, preprocess=preprocess, init=warm, **kw)
    total = time.perf_counter() - start
    hits = [probes[best_C].predict(FeatureView(X_test, None, st)) == y_test for probes, st, _, _ in fits]
    acc = np.array([h.mean() for h in hits])
    std = float(acc.std(ddof=1 if acc.size > 1 else 0))
    return ProbeResult(
        accuracy_mean=float(acc.mean()), accuracy_std=std, error_mean=float(1.0 - acc.mean()), error_std=std,
        accuracies=acc.tolist(), best_C=best_C, C_table=table, fit_seconds=float(np.mean([f[3] for f in fits])),
        total_fit_seconds=total, feature_dim=d, n_train=n if final_sets[0] is None else len(final_sets[0]),
        draws=len(final_sets), val_size=len(val), solvers=sorted({probes[best_C].solver for probes, *_ in fits}),
        accuracy_ci95=1.96 * std if ci95 else None, error_ci95=1.96 * std if ci95 else None,
        correct=hits[0].tolist() if labels_per_class is None else None)
