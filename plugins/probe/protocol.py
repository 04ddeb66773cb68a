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
When the draws go to the kernel solver (few rows, see ``solver.resolve_solver``)
every draw, class and C is one batched problem (:mod:`.kernel_protocol`).
Full-label torch fits share one preconditioner basis (``solver.shared_basis``:
built once per feature matrix, used for the whole grid and the refit), and an
in-memory pool is gathered once for the grid instead of masked on every pass.

Everything is chunk-wise: features may be ``np.memmap`` arrays larger than
RAM; a training subset / standardised copy is never materialised whole
unless the liblinear or kernel solver is used (liblinear needs a dense float64
copy, the kernel path the rows of one batch of draws, at most 256 MB), which is
why ``solver="auto"`` switches to the torch solver above 1 GB. The lazy
views that make this possible (``FeatureView``, ``Standardizer``,
``standardize``) live in :mod:`.views` and are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .kernel_protocol import fit_sets
from .preconditioner import PRECONDITION_RANK, PreconditionBasis
from .solver import fit_linear_svm, resolve_solver, shared_basis
from .views import FeatureView, Standardizer, shape_of, standardize

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
SELECTION_STREAM = 1  # seeds C selection's draws: numpy.random.default_rng([seed, SELECTION_STREAM])


def _as_rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --------------------------------------------------------------------------
# Splits and draws
# --------------------------------------------------------------------------
def balanced_draw(labels: np.ndarray, per_class: int, rng: Any, *,
                  pool: np.ndarray | None = None,
                  classes: np.ndarray | None = None) -> np.ndarray:
    """Class-balanced random subset: exactly ``per_class`` indices per class.

    ``labels`` are the N labels and ``rng`` a ``np.random.Generator`` or seed.
    ``pool`` holds the candidate indices (default all), e.g. training minus
    validation; ``classes`` the classes to draw (default ``np.unique(labels)``:
    every class present in ``labels`` must be drawable from the pool).

    Returns sorted int64 indices into ``labels``, ``per_class * n_classes``
    long. A class with fewer than ``per_class`` candidates is a ValueError.
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
    n, d = shape_of(X)
    if (preprocess is None and rows is not None and 2 * len(rows) > n
            and resolve_solver(solver, Xv.nbytes, shape=(len(rows), d)) == "torch"):
        # most of X (the full-label pool): stream X whole and mask the rest out
        # rather than gathering the subset on every pass
        return fit_linear_svm(X, np.asarray(y), C, solver="torch", init=init, rows=rows,
                              **fit_kwargs), st
    ysel = np.asarray(y) if rows is None else np.asarray(y)[rows]
    return fit_linear_svm(Xv, ysel, C, solver=solver, init=init, **fit_kwargs), st


def _kernel_path(X, row_sets, solver) -> bool:
    """Whether these (equal-size) row sets go to the batched kernel solver."""
    n, d = shape_of(X)
    rows = n if row_sets[0] is None else len(row_sets[0])
    sizes = {n if r is None else len(r) for r in row_sets}
    return len(sizes) == 1 and resolve_solver(solver, rows * d * 4, shape=(rows, d)) == "kernel"


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

    ``X`` holds N x D features (array or memmap) and ``y`` the N labels;
    ``train_idx_list`` has one index array per draw, ``val_idx`` the
    validation indices (disjoint from the draws) and ``grid`` the candidate C
    values. ``solver`` and ``**fit_kwargs`` are passed to
    :func:`fit_linear_svm`. With ``return_fits`` the per-draw
    ``(probe, standardizer)`` at the chosen C are returned too, so a caller
    that needs exactly those fits reuses them.

    Returns ``(best_C, table)`` with ``table[C]`` the mean validation error in
    [0, 1] (in ``grid`` order; ties go to the earliest C in ``grid`` order),
    plus the list of per-draw fits when ``return_fits``.
    """
    y = np.asarray(y)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if val_idx.size == 0:
        raise ValueError("select_C needs a non-empty validation set")
    grid = [float(C) for C in grid]
    if _kernel_path(X, train_idx_list, solver):
        # every draw, class and C as one batched problem (nothing rebuilt per C)
        classes = np.unique(y[np.concatenate([np.asarray(t) for t in train_idx_list])])
        sets, errors = fit_sets(X, y, list(train_idx_list), grid, classes=classes, preprocess=preprocess,
                                val_idx=val_idx, **fit_kwargs)
        table = {C: float(errors[:, j].mean()) for j, C in enumerate(grid)}
        best = min(table, key=lambda c: (table[c], grid.index(c)))
        if return_fits:
            return best, table, [(fit.probe(best, classes), fit.st) for fit in sets]
        return best, table
    errs: dict[float, list[float]] = {C: [] for C in grid}
    fits: list[dict[float, tuple]] = []
    for tr in train_idx_list:
        tr = np.asarray(tr, dtype=np.int64)
        st = Standardizer().fit(X, tr) if preprocess == "standardize" else None
        Xval = _view(X, val_idx, st)
        previous, by_C = None, {}
        basis = fit_kwargs.get("precondition")
        if preprocess is None and isinstance(basis, PreconditionBasis) and type(X) is np.ndarray:
            # an in-memory torch problem: gather the rows once for the whole grid (not a masked pass over
            # every row, nor a gather per pass), with the shared basis restricted to them
            Xs, ys = np.ascontiguousarray(X[tr]), y[tr]
            kw_s = {**fit_kwargs, "precondition": basis.subset(tr)}
            for C in sorted(set(grid)):
                probe = fit_linear_svm(Xs, ys, C, solver="torch", init=previous, **kw_s)
                errs[C].append(1.0 - probe.score(Xval, y[val_idx]))
                previous, by_C[C] = probe, (probe, None)
            fits.append(by_C)
            continue
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
    correct: list[bool] | None = None  # all labels: whether each test image was classified right

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

    ``X_train`` and ``X_test`` are N x D / M x D float features (arrays or
    memmaps), ``y_train`` and ``y_test`` integer labels.
    ``labels_per_class=None`` selects full-label mode (CIFAR-10 style); an
    integer N selects label-scarce mode with ``draws`` class-balanced draws of
    N per class from the training pool excluding the validation split
    (``draws`` is ignored otherwise). In label-scarce mode C is selected on
    ``select_draws`` draws of its own (None: as many as ``draws``), drawn
    from an independent random stream, so the reported draws play no part
    in choosing C; every reported draw is then fit at that C.

    ``C_grid`` holds the candidate C values (a single value skips selection).
    ``val_size`` sizes the validation split (see :func:`validation_split`),
    taken from the training set with the seeded RNG. ``seed`` seeds the split,
    the draws and liblinear's shuffling; the same seed gives the same numbers.
    ``solver`` is "auto", "liblinear" or "torch" (see :func:`fit_linear_svm`)
    and ``device`` the torch solver's device; ``fit_kwargs`` are extra
    arguments for :func:`fit_linear_svm`. ``preprocess`` is "standardize"
    (fitted on each training subset) or None. ``ci95`` also reports
    1.96 * std half-widths.

    Returns a :class:`ProbeResult`.
    """
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    n, d = shape_of(X_train)
    if shape_of(X_test)[1] != d:
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
        # C is chosen on draws of its own, from an independent stream (the authors' code draws afresh for
        # selection too), so no reported draw took part in choosing C
        sel_rng = np.random.default_rng([seed, SELECTION_STREAM])
        sel_sets = [balanced_draw(y_train, labels_per_class, sel_rng, pool=pool, classes=classes)
                    for _ in range(draws if select_draws is None else max(1, int(select_draws)))]

    t0 = time.perf_counter()
    selected: list[tuple] = []
    if (preprocess is None and labels_per_class is None and not isinstance(kw.get("precondition"), PreconditionBasis)
            and resolve_solver(solver, n * d * 4, shape=(n, d)) == "torch"):
        # one preconditioner basis (randomised SVD + X projected on it) for every fit on X: the C grid
        # on the pool and the refit on all rows (precondition=0 in fit_kwargs turns it off)
        given = kw.pop("precondition", None)
        kw["precondition"] = (shared_basis(X_train, **kw, **({} if given is None else {"precondition": given}))
                              or (PRECONDITION_RANK if given is None else given))
    if len(grid) > 1:
        best_C, table, selected = select_C(X_train, y_train, sel_sets, val, grid, solver,
                                           preprocess=preprocess, return_fits=True, **kw)
    else:
        best_C, table = grid[0], {grid[0]: float("nan")}
    total += time.perf_counter() - t0
    warm = selected[0][0] if selected else None  # a fit at best_C: a warm start for the final fits
    if labels_per_class is not None:
        selected = []  # the selection draws are not the reported ones: every reported draw is fitted below

    rest = [rows for j, rows in enumerate(final_sets) if rows is not None and j >= len(selected)]
    if rest and _kernel_path(X_train, rest, solver):
        # draws C selection did not use: fitted at best_C together
        t0 = time.perf_counter()
        classes = np.unique(y_train[np.concatenate(rest)])
        extra, _ = fit_sets(X_train, y_train, rest, [best_C], classes=classes, preprocess=preprocess, **kw)
        selected = selected + [(fit.probe(best_C, classes), fit.st) for fit in extra]
        total += time.perf_counter() - t0
    accs, secs, used, correct = [], [], [], None
    for j, rows in enumerate(final_sets):
        if rows is not None and j < len(selected):
            # label-scarce: C selection already fitted this very draw at best_C
            probe, st = selected[j]
            secs.append(probe.fit_seconds_)
        else:
            # full labels (refit on every row) or a draw C selection did not use:
            # warm-started from the first selection fit at best_C
            t0 = time.perf_counter()
            probe, st = _fit_on(X_train, y_train, rows, best_C, solver, preprocess, kw, init=warm)
            secs.append(time.perf_counter() - t0)
            total += secs[-1]
        hits = probe.predict(_view(X_test, None, st)) == y_test
        accs.append(float(hits.mean()))
        correct = hits.tolist() if labels_per_class is None else None
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
        error_ci95=1.96 * a_std if ci95 else None, std_ddof=ddof, correct=correct)
