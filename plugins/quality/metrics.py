"""Frechet distance and KID between two sets of features, read in row chunks (batch-size independent).

Inputs are N x D arrays or tensors (numpy memmaps too), real first. float64 inputs are computed in float64
throughout; float32 (or anything else) is read as float32 where a matrix product dominates the cost.

Frechet distance (Heusel et al. 2017, "FID" in Inception space), of Gaussians fitted to the two sets:

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

always in float64, from symmetric eigendecompositions (``eigh``, negative eigenvalues from rounding clipped
to 0), never ``scipy.linalg.sqrtm`` (which returns complex numbers on near-singular products). Means and
covariances are sums over row chunks in float64, shifted by the first row, so the chunk size changes the
result only by float64 rounding. When D exceeds the smaller set (D's pooled features of a big model: 7,168 or
28,672 dims against 2,000 images) the D x D route is slow and its covariances are singular; the same number
then comes from the N1 x N2 cross-product of the centred sets: with A = (X - mu1)/sqrt(N1-1),
B = (Y - mu2)/sqrt(N2-1), S1 = A^T A and S2 = B^T B, S1^1/2 S2 S1^1/2 has the non-zero eigenvalues of
(A B^T)(A B^T)^T, so the last trace is the sum of the singular values of C = A B^T (float64 SVD, which
resolves singular values down to 1e-16 of the largest; going through the eigenvalues of C C^T would lose the
ones below 1e-8 to rounding). C takes N1 x N2 x 8 bytes (32 MB at 2,000 x 2,000).

KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, on
``subsets`` random subsets of ``subset_size`` images of each set (drawn without replacement, seeded), reported
as the mean and the population standard deviation (ddof = 0, as torchmetrics) over subsets. Kernel values are
cubed and summed in float64. Two routes give the same estimate: kernel blocks per subset, or, when the sets are
small, each kernel block of the whole sets once with the subsets' sums read off by indicator matrices.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import numpy as np
import torch

DEFAULT_CHUNK = 4096
SMALL_LAPACK = 512  # below this size eigh/SVD run on one BLAS thread (see _lapack_threads)


def shape(x: Any) -> tuple[int, int]:
    if len(x.shape) != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(x.shape)}")
    return int(x.shape[0]), int(x.shape[1])


def work_dtype(*arrays: Any) -> torch.dtype:
    """float64 when every input is float64, else float32."""
    double = all(getattr(a, "dtype", None) in (np.float64, torch.float64) for a in arrays)
    return torch.float64 if double else torch.float32


def rows(x: Any, start: int, stop: int, *, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows start:stop of an array or tensor as a contiguous tensor on ``device`` (no copy when it can be)."""
    block = x[start:stop]
    if not isinstance(block, torch.Tensor):
        block = torch.from_numpy(np.ascontiguousarray(block))
    return block.to(device=device, dtype=dtype).contiguous()


def chunk_starts(n: int, chunk: int) -> range:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, not {chunk}")
    return range(0, n, chunk)


def _rows64(x: Any, start: int, stop: int) -> np.ndarray:
    block = x[start:stop]
    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().numpy()
    return np.asarray(block, dtype=np.float64)


# ------------------------------------------------------------------------------------------- Frechet distance

def feature_moments(x: Any, *, chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(mean D, covariance D x D with ddof = 1), both float64, accumulated over row chunks."""
    n, d = shape(x)
    if n < 2:
        raise ValueError("the covariance needs at least 2 rows")
    shift = _rows64(x, 0, 1)[0]
    total = np.zeros(d)
    products = np.zeros((d, d))
    for a in chunk_starts(n, chunk):
        c = _rows64(x, a, a + chunk) - shift
        total += c.sum(0)
        products += c.T @ c  # numpy runs X^T X as one symmetric rank-k update (syrk): half a product's cost
    mean = shift + total / n
    cov = (products - np.outer(total, total) / n) / (n - 1)
    return mean, cov


def _busy() -> bool:
    """Whether other work already keeps every core this process may use busy (1-minute load average)."""
    try:
        return os.getloadavg()[0] >= len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average or affinity (Windows, macOS)
        return False


def _lapack_threads(size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for a small decomposition, or any on a busy machine: there OpenBLAS's threads wait on each
    other (on a shared 2-core machine a 120 x 120 SVD took 150 ms on two threads and 1.5 ms on one, a 2048 x 2048
    eigh 5 to 22 s against 2 to 2.5 s). Large ones on an idle machine keep every thread."""
    if size >= SMALL_LAPACK and not _busy():
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency, so normally present
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _trace_sqrt_psd(matrix: np.ndarray) -> float:
    """sum of sqrt(eigenvalues) of a symmetric PSD matrix, negative rounding clipped to 0."""
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((matrix + matrix.T) / 2), 0, None)).sum())


def frechet_distance_from_moments(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 from eigenvalues."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    s1, s2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"moments do not match: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    with _lapack_threads(len(s1)):
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^1/2, symmetric PSD
        trace_root = _trace_sqrt_psd(root1 @ s2 @ root1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_root)


def _mean_and_spread(x: Any, chunk: int) -> tuple[np.ndarray, float]:
    """(mean, sum of squared distances to the mean) in float64, two chunked passes."""
    n, d = shape(x)
    mean = np.zeros(d)
    for a in chunk_starts(n, chunk):
        mean += _rows64(x, a, a + chunk).sum(0)
    mean /= n
    spread = sum(float(((_rows64(x, a, a + chunk) - mean) ** 2).sum()) for a in chunk_starts(n, chunk))
    return mean, spread


def _frechet_by_cross_product(x: Any, y: Any, chunk: int) -> float:
    """FD through the N1 x N2 cross-product C = A B^T of the centred sets (see the module doc)."""
    (nx, _), (ny, _) = shape(x), shape(y)
    mx, spread_x = _mean_and_spread(x, chunk)
    my, spread_y = _mean_and_spread(y, chunk)
    cross = np.empty((nx, ny))
    for b in chunk_starts(ny, chunk):
        right = (_rows64(y, b, b + chunk) - my) / math.sqrt(ny - 1)
        for a in chunk_starts(nx, chunk):
            cross[a:a + chunk, b:b + chunk] = ((_rows64(x, a, a + chunk) - mx) / math.sqrt(nx - 1)) @ right.T
    diff = mx - my
    # sum of C's singular values = the sum of sqrt(eigenvalues of C C^T), but the SVD keeps the small ones exact
    # (down to 1e-16 of the largest) where squaring them first would bury them in rounding
    with _lapack_threads(min(nx, ny)):
        trace_root = float(np.linalg.svd(cross, compute_uv=False).sum())
    return float(diff @ diff + spread_x / (nx - 1) + spread_y / (ny - 1) - 2 * trace_root)


def frechet_distance(x: Any, y: Any, *, chunk: int = DEFAULT_CHUNK, method: str = "auto",
                     moments_x: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """FD between the feature sets x (N1 x D) and y (N2 x D).

    ``method``: "moments" (D x D covariances), "cross" (the N1 x N2 route), or "auto": "cross" when D exceeds
    the smaller N. ``moments_x`` may hand in x's (mean, covariance) when several sets are compared with it.
    """
    (nx, d), (ny, dy) = shape(x), shape(y)
    if d != dy:
        raise ValueError(f"feature sizes differ: {d} and {dy}")
    if min(nx, ny) < 2:
        raise ValueError("the Frechet distance needs at least 2 rows per set")
    if method == "auto":
        method = "cross" if d > min(nx, ny) else "moments"
    if method == "cross":
        return _frechet_by_cross_product(x, y, chunk)
    if method != "moments":
        raise ValueError(f"method must be auto, moments or cross, not {method!r}")
    mu1, s1 = moments_x if moments_x is not None else feature_moments(x, chunk=chunk)
    mu2, s2 = feature_moments(y, chunk=chunk)
    return frechet_distance_from_moments(mu1, s1, mu2, s2)


# ------------------------------------------------------------------------------------------------------- KID

def _kernel(a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """(a.b / d + 1)^3 for every pair of rows, float64 (the product in the inputs' dtype)."""
    return (torch.mm(a, b.T).double() / d + 1) ** 3


def _subset_sums(x: torch.Tensor, y: torch.Tensor, d: int, chunk: int) -> tuple[float, float, float]:
    """(sum of k(x_i, x_j) over i != j, the same for y, sum of k(x_i, y_j)) over row blocks."""
    def total(a: torch.Tensor, b: torch.Tensor, same: bool) -> float:
        out = 0.0
        for i in chunk_starts(len(a), chunk):
            for j in chunk_starts(len(b), chunk):
                block = _kernel(a[i:i + chunk], b[j:j + chunk], d)
                if same and i == j:
                    block.fill_diagonal_(0)
                out += float(block.sum())
        return out

    return total(x, x, True), total(y, y, True), total(x, y, False)


def _take(x: Any, index: np.ndarray) -> torch.Tensor:
    """The rows ``index`` (read in increasing order: kind to memmaps) as a tensor."""
    index = np.sort(index)
    if isinstance(x, torch.Tensor):
        return x[torch.from_numpy(index)]
    return torch.from_numpy(np.ascontiguousarray(x[index]))


def _indicator(draws: np.ndarray, n: int, device: torch.device) -> torch.Tensor:
    """n x S float64: 1 where row i is in subset s."""
    ind = torch.zeros(n, len(draws), dtype=torch.float64)
    ind[torch.from_numpy(draws.T.copy()), torch.arange(len(draws))] = 1
    return ind.to(device)


def _all_subset_sums(a: Any, ind_a: torch.Tensor, b: Any, ind_b: torch.Tensor, *, same: bool, d: int,
                     chunk: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """For every subset s: sum over i in s(a), j in s(b) (i != j when ``same``) of k(a_i, b_j); S float64."""
    out = torch.zeros(ind_a.shape[1], dtype=torch.float64, device=device)
    for i in chunk_starts(len(a), chunk):
        left = rows(a, i, i + chunk, device=device, dtype=dtype)
        for j in chunk_starts(len(b), chunk):
            block = _kernel(left, rows(b, j, j + chunk, device=device, dtype=dtype), d)
            if same and i == j:
                block.fill_diagonal_(0)
            out += ((block @ ind_b[j:j + chunk]) * ind_a[i:i + chunk]).sum(0)
    return out


def kid(x: Any, y: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
        chunk: int = DEFAULT_CHUNK, method: str = "auto",
        device: torch.device | str | None = None) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 between x and y with k(a, b) = (a.b / D + 1)^3.

    Each subset draws ``subset_size`` rows of x and of y without replacement (numpy ``default_rng(seed)``,
    x then y per subset). ``method``: "subsets" (kernel blocks per subset), "gram" (whole-set kernel blocks once,
    for small sets) or "auto" (whichever multiplies fewer numbers).
    """
    (nx, d), (ny, dy) = shape(x), shape(y)
    if d != dy:
        raise ValueError(f"feature sizes differ: {d} and {dy}")
    m = int(subset_size)
    if subsets < 1 or m < 2 or m > min(nx, ny):
        raise ValueError(f"KID needs subsets >= 1 and 2 <= subset_size <= {min(nx, ny)} (got {subsets}, {m})")
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = work_dtype(x, y)
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(nx, m, replace=False), rng.choice(ny, m, replace=False)) for _ in range(subsets)]
    if method == "auto":
        whole = (nx * nx + ny * ny + nx * ny) * (d + subsets)
        method = "gram" if whole < subsets * 3 * m * m * d else "subsets"
    if method == "subsets":
        sums = []
        for ix, iy in draws:
            xs, ys = (_take(a, idx).to(device=device, dtype=dtype) for a, idx in ((x, ix), (y, iy)))
            sums.append(_subset_sums(xs, ys, d, chunk))
        kxx, kyy, kxy = (torch.tensor(column, dtype=torch.float64) for column in zip(*sums))
    elif method == "gram":
        ind_x = _indicator(np.stack([ix for ix, _ in draws]), nx, device)
        ind_y = _indicator(np.stack([iy for _, iy in draws]), ny, device)
        common = {"d": d, "chunk": chunk, "device": device, "dtype": dtype}
        kxx = _all_subset_sums(x, ind_x, x, ind_x, same=True, **common).cpu()
        kyy = _all_subset_sums(y, ind_y, y, ind_y, same=True, **common).cpu()
        kxy = _all_subset_sums(x, ind_x, y, ind_y, same=False, **common).cpu()
    else:
        raise ValueError(f"method must be auto, subsets or gram, not {method!r}")
    mmd = (kxx + kyy) / (m * (m - 1)) - 2 * kxy / (m * m)
    return float(mmd.mean()), float(mmd.std(unbiased=False))
