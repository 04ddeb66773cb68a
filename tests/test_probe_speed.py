"""The fast probe paths: batched kernel Newton vs liblinear, solver choice, shared preconditioning."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ganlab_plugins.probe import solver as S
from ganlab_plugins.probe.kernel import fit_sets
from ganlab_plugins.probe.objective import svm_objective
from ganlab_plugins.probe.preconditioner import shared_basis
from ganlab_plugins.probe.protocol import balanced_draw, evaluate, select_C, validation_split
from ganlab_plugins.probe.solver import fit_linear_svm, resolve_solver

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(n, d, k, seed, shift=0.5):
    """Non-negative, correlated features with class structure (like max-pooled D features)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, d))
    X = np.maximum(0.0, centres[y] + rng.normal(size=(n, d)) + shift * rng.normal(size=(n, 1)) + 1.0)
    return X.astype(np.float32), y


def _liblinear(X, y, C, dual, s=1.0):
    clf = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=dual, tol=1e-10, max_iter=200_000,
                    intercept_scaling=s, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


@pytest.mark.parametrize("n,d,k,C,dual,s", [(60, 200, 4, 1e-3, True, 1.0), (60, 200, 4, 0.5, True, 1.0),
                                            (80, 120, 2, 1e-2, False, 1.0), (50, 300, 5, 5e-2, True, 3.0)])
def test_kernel_solver_matches_liblinear_objective(n, d, k, C, dual, s):
    X, y = _problem(n, d, k, seed=n + k)
    ref = _liblinear(X, y, C, dual, s)
    ours = fit_linear_svm(X, y, C, solver="kernel", intercept_scaling=s)
    assert ours.solver == "kernel" and ours.converged_ and ours.coef_.shape == ref.coef_.shape
    obj_ref = svm_objective(X, y, ref.coef_, ref.intercept_, C, intercept_scaling=s)
    obj = svm_objective(X, y, ours.coef_, ours.intercept_, C, intercept_scaling=s)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-4)
    np.testing.assert_allclose(ours.objective_, obj, rtol=1e-4)       # what it reports is what it reached
    Xt, _ = _problem(200, d, k, seed=99)
    assert np.mean(ours.predict(Xt) == ref.predict(Xt)) >= 0.99
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-3 * np.abs(ref.coef_).max())


def test_batching_draws_and_grid_equals_one_at_a_time():
    X, y = _problem(300, 150, 3, seed=1)
    rng = np.random.default_rng(0)
    draws = [balanced_draw(y, 12, rng) for _ in range(3)]
    grid = [1e-3, 3e-2, 1.0]
    classes = np.unique(y)
    fits = fit_sets(X, y, draws, grid, classes=classes)
    for rows, (probes, *_) in zip(draws, fits):
        for C in grid:
            alone = fit_linear_svm(X[rows], y[rows], C, solver="kernel")
            batched = probes[C]
            np.testing.assert_allclose(batched.coef_, alone.coef_, rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(batched.intercept_, alone.intercept_, rtol=1e-6, atol=1e-9)


def test_batched_selection_agrees_with_liblinear_loop():
    X, y = _problem(400, 160, 4, seed=2)
    rng = np.random.default_rng(3)
    pool, val = validation_split(len(y), 120, rng)
    draws = [balanced_draw(y, 10, rng, pool=pool) for _ in range(3)]
    grid = (1e-4, 1e-3, 1e-2, 1e-1)
    best_k, table_k, fits = select_C(X, y, draws, val, grid, "kernel", preprocess="standardize", return_fits=True)
    best_l, table_l = select_C(X, y, draws, val, grid, "liblinear", preprocess="standardize", tol=1e-8,
                               max_iter=100_000)
    assert list(table_k) == list(grid) and fits[0][0].solver == "kernel"
    for C in grid:   # same problems solved: the same validation errors (up to a tie or two)
        assert abs(table_k[C] - table_l[C]) <= 2.0 / len(val) + 1e-12
    assert table_l[best_k] <= min(table_l.values()) + 2.0 / len(val)


def test_auto_follows_the_documented_crossover(monkeypatch):
    small_rows = (S.KERNEL_MAX_ROWS, int(S.KERNEL_MAX_ROWS / S.KERNEL_ROW_RATIO) + 1)
    assert resolve_solver("auto", 1e6, shape=small_rows) == "kernel"
    assert resolve_solver("auto", 1e6, shape=(S.KERNEL_MAX_ROWS + 1, 10**5)) != "kernel"
    assert resolve_solver("auto", 1e6, shape=(500, int(500 / S.KERNEL_ROW_RATIO) - 1)) != "kernel"
    assert resolve_solver("auto", 1e6, shape=(5000, S.LIBLINEAR_MAX_DIMS)) == "liblinear"
    assert resolve_solver("auto", 1e6, shape=(5000, S.LIBLINEAR_MAX_DIMS + 1)) == "torch"
    assert resolve_solver("auto", S.AUTO_TORCH_BYTES + 1, shape=(100, 10**6)) == "torch"
    assert resolve_solver("torch", 1.0, shape=(1, 1)) == "torch"
    assert resolve_solver("liblinear", 1e12, shape=(1, 1)) == "liblinear"
    with pytest.raises(ValueError, match="unknown solver"):
        resolve_solver("dual", 1.0, (1, 1))
    # and fit_linear_svm uses exactly that choice
    X, y = _problem(400, 300, 4, seed=4)
    assert fit_linear_svm(X[:100], y[:100], 1e-2).solver == "kernel"
    assert fit_linear_svm(X[:, :40], y, 1e-2).solver == "liblinear"     # 400 rows > 4 x 40 dims
    monkeypatch.setattr(S, "LIBLINEAR_MAX_DIMS", 10)
    assert fit_linear_svm(X[:, :40], y, 1e-2).solver == "torch"


def _d_like(n, d, k, seed):
    """Features with D's spectrum: a large common mean, a fast-decaying low-rank part, little noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    Z = rng.normal(size=(n, 40)) * np.geomspace(3.0, 0.1, 40) + 2.0 * np.eye(k, 40)[y]
    X = np.maximum(0.0, 1.0 + Z @ rng.normal(size=(40, d)) / 4 + 0.05 * rng.normal(size=(n, d)))
    return X.astype(np.float32), y


def test_shared_subspace_preconditioner_same_optimum_fewer_passes():
    """A basis of X, restricted to a row subset, preconditions fits on those rows: the same optimum as plain L-BFGS
    and as a basis built for the subset itself, in far fewer passes than plain."""
    X, y = _d_like(1500, 300, 5, seed=5)
    rows = np.arange(0, 1500, 2)
    basis = shared_basis(X, rank=64)
    assert basis.XU.shape == (1500, 64)
    np.testing.assert_allclose(basis.XU.numpy(), np.c_[X, np.ones(1500)] @ basis.U.numpy(), rtol=1e-4, atol=1e-4)
    objs, evals = {}, {}
    for name, pre in (("plain", 0), ("own", 64), ("shared", basis.subset(rows))):
        previous, evals[name] = None, 0
        for C in (1e-3, 1e-2):
            fit = fit_linear_svm(X[rows], y[rows], C, solver="torch", init=previous, precondition=pre, tol=1e-6)
            evals[name] += fit.n_evals_
            previous = fit
        objs[name] = fit.objective_
        assert fit.converged_ and fit.extra_["precondition_rank"] == (0 if name == "plain" else 64)
    ref = _liblinear(X[rows], y[rows], 1e-2, dual=False)
    obj_ref = svm_objective(X[rows], y[rows], ref.coef_, ref.intercept_, 1e-2)
    for name in objs:
        np.testing.assert_allclose(objs[name], obj_ref, rtol=1e-4)
    # on real D features, 4,800 x 3,584, the shared basis took 140 passes for the 8-value C grid where one scale
    # per class took 253 (benchmarks/README.md)
    assert evals["shared"] < evals["plain"] / 2 and evals["shared"] <= 1.25 * evals["own"]


def test_probe_rows_agree_with_liblinear_on_digits():
    """The protocol on raw 8x8 digits upsampled to 16x16 (256 dims): 10 per class goes to the kernel
    path, all labels to torch (forced, since 256 dims is liblinear's side of the crossover)."""
    X, y = load_digits(return_X_y=True)
    X = torch.nn.functional.interpolate(torch.tensor(X / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8),
                                        size=16, mode="bilinear", align_corners=False).flatten(1).numpy()
    tr, te = np.arange(0, 1797, 2), np.arange(1, 1797, 2)
    kw = dict(C_grid=(1e-3, 1e-2, 1e-1), val_size=0.2, seed=0, preprocess=None)
    scarce = {s: evaluate(X[tr], y[tr], X[te], y[te], labels_per_class=10, draws=3, solver=s, **kw)
              for s in ("auto", "liblinear")}
    assert scarce["auto"].solvers == ["kernel"]
    assert scarce["auto"].best_C == scarce["liblinear"].best_C
    assert abs(scarce["auto"].accuracy_mean - scarce["liblinear"].accuracy_mean) <= 0.005
    full = {s: evaluate(X[tr], y[tr], X[te], y[te], solver=s, **kw) for s in ("torch", "liblinear")}
    assert full["torch"].solvers == ["torch"] and full["torch"].accuracy_mean > 0.9
    assert abs(full["torch"].accuracy_mean - full["liblinear"].accuracy_mean) <= 0.005


def test_threads_follow_the_cores_and_the_problem_size(monkeypatch):
    """svm-probe.threads=0: one CPU thread per 4M feature values, at most the usable cores minus one."""
    from ganlab_plugins.probe import plugin

    monkeypatch.setattr(plugin.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert plugin.probe_threads(6000 * 3584) == 5  # benchmarks/probe_speed.py's D features: 21.5M values
    assert plugin.probe_threads(10**9) == 15 and plugin.probe_threads(10**5) == 1
    monkeypatch.setattr(plugin.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert plugin.probe_threads(10**9) == 1  # two cores: one is left to the rest of the machine
