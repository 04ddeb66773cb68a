"""Numerics of the linear L2-SVM probe (ganlab_plugins.probe).

Fast (well under a minute on 2 cores); every check compares against an
independent reference (sklearn / numpy) and could fail.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ganlab_plugins.probe import solver as S
from ganlab_plugins.probe.kmeans_features import KMeansFeatures, value_range
from ganlab_plugins.probe.objective import svm_objective
from ganlab_plugins.probe.protocol import balanced_draw, evaluate, select_C, validation_split
from ganlab_plugins.probe.settings import DEFAULT_C_GRID
from ganlab_plugins.probe.solver import fit_linear_svm
from ganlab_plugins.probe.views import FeatureView, Standardizer

# ---------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems: threads only add overhead


@pytest.fixture(scope="module")
def digits_std():
    """sklearn digits, standardised on the training part (float32)."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    p = np.random.default_rng(0).permutation(len(y))
    tr, te = p[:1200], p[1200:]
    sc = StandardScaler().fit(X[tr])
    return (sc.transform(X[tr]).astype(np.float32), y[tr],
            sc.transform(X[te]).astype(np.float32), y[te])


@pytest.fixture(scope="module")
def synth():
    """Synthetic 2000 x 500, 10-class problem (+ 2000 test rows), standardised."""
    X, y = make_classification(n_samples=4000, n_features=500, n_informative=40,
                               n_redundant=0, n_classes=10, n_clusters_per_class=1,
                               class_sep=2.0, random_state=0)
    sc = StandardScaler().fit(X[:2000])
    X = sc.transform(X).astype(np.float32)
    return X[:2000], y[:2000], X[2000:], y[2000:]


@pytest.fixture(scope="module")
def digit_images():
    """digits as N x 1 x 16 x 16 images in [0, 1] (bilinear upsampling)."""
    X, y = load_digits(return_X_y=True)
    t = torch.tensor(X / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return F.interpolate(t, size=16, mode="bilinear", align_corners=False).numpy(), y


def _liblinear_ref(X, y, C, **kw):
    clf = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=X.shape[0] < X.shape[1],
                    multi_class="ovr", random_state=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


# ------------------------------------------------------------ solver parity
@pytest.mark.parametrize("problem,C", [("digits", 1e-3), ("digits", 1e-2), ("synth", 1e-3)])
def test_torch_solver_matches_liblinear(problem, C, digits_std, synth):
    Xtr, ytr, Xte, yte = digits_std if problem == "digits" else synth
    ref = _liblinear_ref(Xtr, ytr, C, tol=1e-7, max_iter=20000)
    lib = fit_linear_svm(Xtr, ytr, C, solver="liblinear", tol=1e-7, max_iter=20000)
    tor = fit_linear_svm(Xtr, ytr, C, solver="torch")
    assert lib.solver == "liblinear" and tor.solver == "torch" and tor.converged_
    # our liblinear wrapper is sklearn's LinearSVC
    np.testing.assert_allclose(lib.coef_, ref.coef_)
    np.testing.assert_array_equal(lib.predict(Xte), ref.predict(Xte))
    acc_lib, acc_tor = lib.score(Xte, yte), tor.score(Xte, yte)
    assert acc_lib > 0.6
    assert abs(acc_lib - acc_tor) <= 0.01
    # same objective (bias regularised as liblinear's extra feature)
    obj_lib = svm_objective(Xtr, ytr, ref.coef_, ref.intercept_, C)
    obj_tor = svm_objective(Xtr, ytr, tor.coef_, tor.intercept_, C)
    np.testing.assert_allclose(obj_tor, obj_lib, rtol=1e-3)
    np.testing.assert_allclose(tor.objective_, obj_tor, rtol=1e-6)
    # torch solution is at least as good as liblinear's up to 1e-5 relative
    assert np.all(obj_tor <= obj_lib * (1 + 1e-5))


def test_objective_regularises_bias_like_liblinear(digits_std):
    """With intercept_scaling s, LinearSVC minimises over [w, w_b] with x_b = s,
    intercept = s * w_b: its solution must beat a perturbed one on our objective,
    and the unregularised-bias variant would be a different objective."""
    Xtr, ytr, _, _ = digits_std
    C, s = 1e-2, 3.0
    ref = _liblinear_ref(Xtr, ytr, C, tol=1e-8, max_iter=20000, intercept_scaling=s)
    obj = svm_objective(Xtr, ytr, ref.coef_, ref.intercept_, C, intercept_scaling=s)
    for delta in (1e-2, -1e-2):
        worse = svm_objective(Xtr, ytr, ref.coef_, ref.intercept_ + delta, C, intercept_scaling=s)
        assert np.all(worse > obj)
    tor = fit_linear_svm(Xtr, ytr, C, solver="torch", intercept_scaling=s)
    np.testing.assert_allclose(tor.intercept_, ref.intercept_, atol=2e-3)


def test_binary_problem_single_column(digits_std):
    Xtr, ytr, Xte, yte = digits_std
    m, mt = ytr < 2, yte < 2
    ref = _liblinear_ref(Xtr[m], ytr[m], 1e-2, tol=1e-8, max_iter=20000)
    tor = fit_linear_svm(Xtr[m], ytr[m], 1e-2, solver="torch")
    assert tor.coef_.shape == ref.coef_.shape == (1, Xtr.shape[1])
    np.testing.assert_allclose(tor.coef_, ref.coef_, atol=2e-3)
    assert tor.decision_function(Xte[mt]).shape == (mt.sum(),)
    np.testing.assert_array_equal(tor.predict(Xte[mt]), ref.predict(Xte[mt]))


def test_warm_start_reaches_the_same_optimum_in_fewer_passes(synth):
    """A fit at C=1e-2 started from the C=5e-3 solution (select_C's regularisation path)
    ends at the cold fit's objective, with fewer passes over X; a mismatched init is refused."""
    Xtr, ytr, Xte, yte = synth
    lower = fit_linear_svm(Xtr, ytr, 5e-3, solver="torch")
    cold = fit_linear_svm(Xtr, ytr, 1e-2, solver="torch")
    warm = fit_linear_svm(Xtr, ytr, 1e-2, solver="torch", init=lower)
    assert cold.converged_ and warm.converged_
    np.testing.assert_allclose(warm.objective_, cold.objective_, rtol=1e-5)
    assert warm.n_evals_ < cold.n_evals_
    assert np.mean(warm.predict(Xte) == cold.predict(Xte)) >= 0.995
    with pytest.raises(ValueError, match="init probe"):
        fit_linear_svm(Xtr[:, :100], ytr, 1e-2, solver="torch", init=lower)


def test_preconditioner_changes_the_path_not_the_solution():
    """Raw (unstandardised, non-negative, correlated) digit pixels, like D features: the
    preconditioned fit reaches liblinear's objective, as the plain one does, in fewer passes."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    C = 1e-3
    ref = _liblinear_ref(X, y, C, tol=1e-8, max_iter=50000)
    obj_ref = svm_objective(X, y, ref.coef_, ref.intercept_, C)
    plain = fit_linear_svm(X, y, C, solver="torch", precondition=0)
    pre = fit_linear_svm(X, y, C, solver="torch")
    assert plain.extra_["precondition_rank"] == 0 and pre.extra_["precondition_rank"] == 64
    assert pre.converged_
    np.testing.assert_allclose(pre.objective_, obj_ref, rtol=1e-4)
    assert pre.objective_.sum() <= plain.objective_.sum() * (1 + 1e-5)
    assert pre.n_evals_ < plain.n_evals_
    # and the RNG state of the caller is untouched by the randomised SVD
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fit_linear_svm(X, y, C, solver="torch", max_iter=3)
    assert torch.equal(torch.rand(3), expected)


def test_fit_on_a_lazy_row_view_solves_the_subsets_problem(synth):
    """A fit on a FeatureView of some rows (read block by block, never gathered whole) solves the subset's problem:
    the gathered fit's objective for torch, exactly the gathered fit for liblinear."""
    Xtr, ytr, Xte, yte = synth
    rows = np.sort(np.random.default_rng(1).choice(len(ytr), 1500, replace=False))
    gathered = fit_linear_svm(Xtr[rows], ytr[rows], 1e-3, solver="torch")
    lazy = fit_linear_svm(FeatureView(Xtr, rows), ytr[rows], 1e-3, solver="torch")
    assert list(lazy.classes_) == list(range(10))
    np.testing.assert_allclose(lazy.objective_, gathered.objective_, rtol=1e-5)
    np.testing.assert_allclose(svm_objective(Xtr[rows], ytr[rows], lazy.coef_, lazy.intercept_, 1e-3),
                               gathered.objective_, rtol=1e-5)
    assert np.mean(lazy.predict(Xte) == gathered.predict(Xte)) >= 0.995
    lib = fit_linear_svm(FeatureView(Xtr, rows), ytr[rows], 1e-3, solver="liblinear")
    np.testing.assert_allclose(lib.coef_, _liblinear_ref(Xtr[rows], ytr[rows], 1e-3).coef_)


def test_auto_solver_switches_on_size(digits_std, monkeypatch):
    Xtr, ytr, _, _ = digits_std
    assert fit_linear_svm(Xtr, ytr, 1e-2).solver == "liblinear"
    monkeypatch.setattr(S, "AUTO_TORCH_BYTES", Xtr.nbytes - 1)
    assert fit_linear_svm(Xtr, ytr, 1e-2).solver == "torch"


# ------------------------------------------------------- memmap, no copies
class _RowSpy:
    """Row-sliceable wrapper recording every block the solver asks for."""

    def __init__(self, X):
        self.X, self.shape, self.dtype, self.requests = X, X.shape, X.dtype, []

    @property
    def nbytes(self):
        return self.X.nbytes

    def __getitem__(self, key):
        assert isinstance(key, slice), "solver must read contiguous row blocks"
        self.requests.append(key.stop - key.start)
        return self.X[key]


def test_memmap_input_chunked_and_identical(tmp_path, synth):
    Xtr, ytr, Xte, yte = synth
    path = tmp_path / "feats.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=Xtr.shape)
    mm[:] = Xtr
    mm.flush()
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=Xtr.shape)

    dense = fit_linear_svm(Xtr, ytr, 1e-3, solver="torch", chunk_rows=256)
    tracemalloc.start()
    mapped = fit_linear_svm(mm, ytr, 1e-3, solver="torch", chunk_rows=256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < mm.nbytes / 4          # numpy never holds a copy of X
    np.testing.assert_array_equal(mapped.coef_, dense.coef_)
    np.testing.assert_array_equal(mapped.predict(Xte), dense.predict(Xte))

    spy = _RowSpy(mm)
    fit_linear_svm(spy, ytr, 1e-3, solver="torch", chunk_rows=256, max_iter=5)
    assert spy.requests and max(spy.requests) <= 256

    # the full protocol on a memmap equals the in-memory run
    mmte = np.memmap(tmp_path / "te.f32", dtype=np.float32, mode="w+", shape=Xte.shape)
    mmte[:] = Xte
    kw = dict(labels_per_class=20, draws=2, C_grid=(1e-3, 1e-2), seed=3, solver="torch",
              fit_kwargs={"chunk_rows": 128})
    a = evaluate(mm, ytr, mmte, yte, **kw)
    b = evaluate(Xtr, ytr, Xte, yte, **kw)
    assert a.accuracies == b.accuracies and a.C_table == b.C_table


# ----------------------------------------------------------- standardiser
def test_standardizer_matches_sklearn_on_subset():
    rng = np.random.default_rng(1)
    X = (rng.normal(3.0, 5.0, size=(700, 33)) * rng.uniform(0.01, 100, 33)).astype(np.float32)
    X[:, 5] = 7.0                                            # constant feature
    rows = np.sort(rng.choice(700, 250, replace=False))
    st = Standardizer().fit(X, rows, chunk_rows=37)          # many uneven chunks
    sk = StandardScaler().fit(X[rows].astype(np.float64))
    np.testing.assert_allclose(st.mean_, sk.mean_, rtol=1e-10)
    ok = np.arange(33) != 5
    np.testing.assert_allclose(st.scale_[ok], sk.scale_[ok], rtol=1e-7)
    Z = st.view(X, rows).materialize()
    assert Z.dtype == np.float32 and Z.shape == (250, 33)
    np.testing.assert_allclose(Z, sk.transform(X[rows]), rtol=1e-4, atol=1e-5)
    # lazy view == dense transform; applied to other rows with the subset stats
    v = st.view(X)
    np.testing.assert_array_equal(np.asarray(v)[rows], Z)
    np.testing.assert_allclose(v[10:20][:, ok], sk.transform(X[10:20])[:, ok], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------- draws / splits
def test_balanced_draw_exact_counts_and_disjoint_from_validation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    pool, val = validation_split(labels.size, 1000, rng)
    assert val.size == 1000 and np.intersect1d(pool, val).size == 0
    assert np.union1d(pool, val).size == labels.size
    idx = balanced_draw(labels, 37, rng, pool=pool)
    assert idx.size == 370 and np.unique(idx).size == 370
    assert np.all(np.bincount(labels[idx], minlength=10) == 37)
    assert np.intersect1d(idx, val).size == 0
    # deterministic given the seed, different for another seed
    np.testing.assert_array_equal(balanced_draw(labels, 5, 7), balanced_draw(labels, 5, 7))
    assert not np.array_equal(balanced_draw(labels, 5, 7), balanced_draw(labels, 5, 8))
    small = labels.copy()
    small[np.flatnonzero(small == 3)[4:]] = 4                # class 3 keeps 4 examples
    with pytest.raises(ValueError):
        balanced_draw(small, 5, rng)


# ----------------------------------------------------------------- select_C
def test_select_C_matches_hand_loop(digits_std):
    X = np.concatenate(digits_std[0::2])
    y = np.concatenate(digits_std[1::2])
    rng = np.random.default_rng(5)
    pool, val = validation_split(len(y), 500, rng)
    draws = [balanced_draw(y, 10, rng, pool=pool) for _ in range(3)]
    grid = (1e-4, 1e-3, 1e-2, 1e-1)
    best, table = select_C(X, y, draws, val, grid, solver="liblinear")

    hand = {}
    for C in grid:
        errs = []
        for tr in draws:
            sc = StandardScaler().fit(X[tr])
            clf = _liblinear_ref(sc.transform(X[tr]), y[tr], C)
            errs.append(np.mean(clf.predict(sc.transform(X[val])) != y[val]))
        hand[C] = np.mean(errs)
    assert list(table) == list(grid)
    for C in grid:
        assert abs(table[C] - hand[C]) <= 1.0 / len(val) + 1e-12
    assert best == min(hand, key=hand.get)
    assert table[best] == min(table.values())
    assert max(table.values()) - min(table.values()) > 0.02   # grid actually matters


# ---------------------------------------------------------------- evaluate
def test_evaluate_deterministic_ci95_and_modes(digits_std):
    Xtr, ytr, Xte, yte = digits_std
    kw = dict(labels_per_class=10, draws=4, C_grid=(1e-3, 1e-2, 1e-1), val_size=300,
              solver="liblinear", ci95=True)
    r1 = evaluate(Xtr, ytr, Xte, yte, seed=11, **kw)
    r2 = evaluate(Xtr, ytr, Xte, yte, seed=11, **kw)
    r3 = evaluate(Xtr, ytr, Xte, yte, seed=12, **kw)
    assert r1.accuracies == r2.accuracies and r1.C_table == r2.C_table and r1.best_C == r2.best_C
    assert r1.accuracies != r3.accuracies
    assert len(r1.accuracies) == 4 and r1.n_train == 100 and r1.val_size == 300
    # by hand with sklearn: the protocol's split and reported draws from the seed's stream; C by mean
    # validation error over 4 selection draws of an independent stream (standardised on each draw); each
    # reported draw fitted at that C and scored on the test set
    rng = np.random.default_rng(11)
    pool, val = validation_split(len(ytr), 300, rng)
    draws = [balanced_draw(ytr, 10, rng, pool=pool) for _ in range(4)]
    sel_rng = np.random.default_rng([11, 1])
    sel_draws = [balanced_draw(ytr, 10, sel_rng, pool=pool) for _ in range(4)]
    assert not any(set(a.tolist()) == set(b.tolist()) for a in draws for b in sel_draws)
    fits = {C: [] for C in kw["C_grid"]}
    for tr in sel_draws:
        sc = StandardScaler().fit(Xtr[tr])
        for C in kw["C_grid"]:
            fits[C].append((sc, _liblinear_ref(sc.transform(Xtr[tr]), ytr[tr], C)))
    val_error = {C: np.mean([np.mean(clf.predict(sc.transform(Xtr[val])) != ytr[val]) for sc, clf in fits[C]])
                 for C in kw["C_grid"]}
    assert r1.best_C == min(val_error, key=val_error.get)
    assert all(abs(r1.C_table[C] - val_error[C]) <= 1.0 / len(val) + 1e-12 for C in kw["C_grid"])
    reported = [(sc, _liblinear_ref(sc.transform(Xtr[tr]), ytr[tr], r1.best_C))
                for tr in draws for sc in [StandardScaler().fit(Xtr[tr])]]
    hand = np.array([np.mean(clf.predict(sc.transform(Xte)) == yte) for sc, clf in reported])
    assert np.abs(np.array(r1.accuracies) - hand).max() <= 1.0 / len(yte) + 1e-12  # (equal here; 1 image of slack)
    assert hand.std(ddof=1) > 0.005  # the draws really differ, so a wrong spread cannot pass as 0
    # the summary statistics, written out from the per-draw accuracies: mean, sample std (n - 1), 1.96 std
    acc = list(r1.accuracies)
    n = len(acc)
    mean = sum(acc) / n
    std = (sum((a - mean) ** 2 for a in acc) / (n - 1)) ** 0.5
    assert r1.accuracy_mean == pytest.approx(mean, rel=1e-12) and r1.error_mean == pytest.approx(1 - mean, rel=1e-12)
    assert r1.accuracy_std == pytest.approx(std, rel=1e-9) and r1.error_std == pytest.approx(std, rel=1e-9)
    assert r1.accuracy_ci95 == pytest.approx(1.96 * std, rel=1e-9)
    assert r1.error_ci95 == pytest.approx(1.96 * std, rel=1e-9)
    assert r1.feature_dim == 64 and r1.solvers == ["liblinear"]
    assert evaluate(Xtr, ytr, Xte, yte, seed=11, **{**kw, "ci95": False}).error_ci95 is None

    # the documented composition: split, draws from the pool, C on select_draws draws of the selection
    # stream, every reported draw fitted at that C
    rs = evaluate(Xtr, ytr, Xte, yte, seed=11, select_draws=1, **kw)
    best, table = select_C(Xtr, ytr, sel_draws[:1], val, kw["C_grid"], "liblinear", random_state=11)
    assert rs.C_table == table and rs.best_C == best and len(rs.accuracies) == 4
    if rs.best_C == r1.best_C:  # the reported draws do not depend on how many draws chose C
        assert rs.accuracies == r1.accuracies

    # full-label mode: C chosen on a held-out split, refit on all labels
    full = evaluate(Xtr, ytr, Xte, yte, C_grid=(1e-3, 1e-1), val_size=0.25,
                    solver="liblinear", seed=0)
    assert full.n_train == len(ytr) and full.draws == 1 and full.error_std == 0.0
    sc = StandardScaler().fit(Xtr)
    ref = _liblinear_ref(sc.transform(Xtr), ytr, full.best_C)
    acc = np.mean(ref.predict(sc.transform(Xte)) == yte)
    assert abs(full.accuracy_mean - acc) <= 1.0 / len(yte) + 1e-12
    assert full.accuracy_mean > r1.accuracy_mean             # more labels help
    assert DEFAULT_C_GRID == (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-1)


# ---------------------------------------------------------- K-means features
@pytest.fixture(scope="module")
def kmeans_fitted(digit_images):
    imgs, y = digit_images
    km = KMeansFeatures(k=50, seed=0, n_patches=10000, progress=False).fit(imgs[:1000])
    return km, imgs, y


def _triangle_reference(km, image):
    """4K features of one 1 x 16 x 16 image in [0, 1], by hand in numpy: every 6x6 patch on the 0-255 scale,
    contrast-normalised, whitened, its triangle activation, summed over the quadrants (rows/cols 0..5 | 6..10 of
    the 11 x 11 map: MATLAB round(11/2) = 6)."""
    windows = np.lib.stride_tricks.sliding_window_view(image * 255.0, (6, 6), axis=(1, 2))  # 1 x 11 x 11 x 6 x 6
    patches = windows.transpose(1, 2, 0, 3, 4).reshape(121, -1).astype(np.float64)
    patches = (patches - patches.mean(1, keepdims=True)) / np.sqrt(patches.var(1, ddof=1, keepdims=True) + 10.0)
    white = (patches - km.patch_mean_) @ km.whitening_.astype(np.float64)
    z = np.linalg.norm(white[:, None, :] - km.centroids_.astype(np.float64)[None], axis=2)  # 121 x K
    act = np.maximum(0.0, z.mean(1, keepdims=True) - z).reshape(11, 11, -1)
    assert (act == 0).mean() >= 0.4  # the triangle switches most centroids off at a location
    return np.concatenate([q.sum((0, 1)) for q in (act[:6, :6], act[:6, 6:], act[6:, :6], act[6:, 6:])])


def test_kmeans_features_match_a_numpy_reference(kmeans_fitted):
    km, imgs, _ = kmeans_fitted
    feats = km.transform(imgs[:40])
    assert feats.shape == (40, 4 * 50) and feats.dtype == np.float32
    assert np.all(feats >= 0) and np.all(np.isfinite(feats))
    for i in (0, 3, 17):
        np.testing.assert_allclose(feats[i], _triangle_reference(km, imgs[i]), rtol=1e-3, atol=2e-2)


def test_zca_whitening_against_numpy(digit_images):
    imgs, _ = digit_images
    km = KMeansFeatures(k=10, seed=1, progress=False)
    patches = km.normalize_patches(km.sample_patches(imgs[:500], n=30000))
    assert km.value_range_ == (0.0, 1.0)
    assert value_range((imgs[:5] * 255).astype(np.uint8)) == (0.0, 255.0)
    assert value_range(imgs[:5] * 2 - 1) == (-1.0, 1.0)
    # contrast normalisation: zero mean per patch, variance var/(var+10)
    np.testing.assert_allclose(patches.mean(1), 0.0, atol=1e-9)
    # numpy reference ZCA with the paper's eps = 0.1
    cov = np.cov(patches, rowvar=False)
    d, V = np.linalg.eigh(cov)
    P_ref = V @ np.diag(1.0 / np.sqrt(np.clip(d, 0, None) + 0.1)) @ V.T
    mean, P = KMeansFeatures.zca_matrix(patches, 0.1)
    np.testing.assert_allclose(P, P_ref, rtol=1e-6, atol=1e-8)
    W = (patches - mean) @ P
    np.testing.assert_allclose(np.cov(W, rowvar=False),
                               V @ np.diag(np.clip(d, 0, None) / (np.clip(d, 0, None) + 0.1)) @ V.T,
                               atol=1e-8)
    # with a negligible eps the whitened covariance is the identity on the
    # 35-dim subspace orthogonal to the constant patch (removed by the
    # per-patch mean subtraction)
    mean, P = KMeansFeatures.zca_matrix(patches, 1e-9)
    ev = np.linalg.eigvalsh(np.cov((patches - mean) @ P, rowvar=False))
    assert ev[0] < 1e-3
    np.testing.assert_allclose(ev[1:], 1.0, atol=1e-3)


def test_kmeans_deterministic_and_beats_raw_pixels(kmeans_fitted, digit_images):
    km, imgs, y = kmeans_fitted
    km2 = KMeansFeatures(k=50, seed=0, n_patches=10000, progress=False).fit(imgs[:1000])
    np.testing.assert_array_equal(km2.centroids_, km.centroids_)
    np.testing.assert_array_equal(km2.transform(imgs[:20]), km.transform(imgs[:20]))
    tr, te = slice(0, 1000), slice(1000, None)
    ftr, fte = km.transform(imgs[tr]), km.transform(imgs[te])
    kw = dict(C_grid=(1e-3, 1e-2, 1e-1), solver="liblinear", seed=0)
    raw = evaluate(imgs[tr].reshape(1000, -1), y[tr], imgs[te].reshape(-1, 256), y[te], **kw)
    kmr = evaluate(ftr, y[tr], fte, y[te], **kw)
    assert kmr.accuracy_mean > raw.accuracy_mean + 0.01


def test_kmeans_features_of_the_same_images_are_encoded_once():
    """Within a process the same images, K and seed give the same features without encoding them again: the
    repeat is far faster than the first encoding, and a caller scribbling on its arrays changes nothing."""
    import time

    from ganlab_plugins.probe.kmeans_features import kmeans_train_test

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 1, 12, 12), dtype=np.uint8)
    test = rng.integers(0, 256, (20, 1, 12, 12), dtype=np.uint8)
    direct = KMeansFeatures(k=6, seed=2, progress=False)
    expected = direct.fit_transform(train), direct.transform(test)
    start = time.perf_counter()
    first = kmeans_train_test(train, test, k=6, seed=2, progress=False)
    encoding = time.perf_counter() - start
    np.testing.assert_array_equal(first[0], expected[0])
    np.testing.assert_array_equal(first[1], expected[1])
    first[0][:] = -1
    start = time.perf_counter()
    again = kmeans_train_test(train.copy(), test.copy(), k=6, seed=2, progress=False)
    assert time.perf_counter() - start < encoding / 10
    np.testing.assert_array_equal(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    other = kmeans_train_test(train, test, k=6, seed=3, progress=False)
    assert not np.array_equal(other[0], expected[0])
