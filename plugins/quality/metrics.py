"""Frechet distance and KID between two feature sets N x D (arrays, tensors or memmaps; real first), read in row
blocks (``ganlab.row_blocks``) so the block size changes a result only by rounding; float64 inputs stay float64.

FD (FID in Inception space) is computed in float64 from symmetric eigendecompositions, because
``scipy.linalg.sqrtm`` returns complex numbers on near-singular products; when D exceeds the smaller set (D's pooled
features: 7,168 dims against 2,000 images) the covariances are singular and slow, and the trace term is the sum of
the singular values of A B^T, A and B the centred sets over sqrt(N - 1). KID: the unbiased MMD^2 with the kernel
(x.y / D + 1)^3 on seeded subsets, its mean and population std (ddof 0, as torchmetrics) over subsets.
"""
import contextlib
import math
import os
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits  # scikit-learn's dependency

from ganlab import row_block, row_blocks, shape_of

DEFAULT_CHUNK = 4096
SMALL_LAPACK = 512  # below this size eigh/SVD run on one BLAS thread (see _lapack_threads)


def work_dtype(*arrays: Any) -> torch.dtype:
    double = all(getattr(a, "dtype", None) in (np.float64, torch.float64) for a in arrays)
    return torch.float64 if double else torch.float32


def feature_moments(x: Any, *, chunk: int = DEFAULT_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(mean D, covariance D x D with ddof = 1), both float64, accumulated over row blocks."""
    n, d = shape_of(x)
    if n < 2:
        raise ValueError("the covariance needs at least 2 rows")
    shift = row_block(x, 0, 1, dtype=np.float64)[0]
    total, products = np.zeros(d), np.zeros((d, d))
    for _, _, block in row_blocks(x, chunk, dtype=np.float64):
        c = block - shift
        total += c.sum(0)
        products += c.T @ c  # numpy runs X^T X as one symmetric rank-k update (syrk): half a product's cost
    return shift + total / n, (products - np.outer(total, total) / n) / (n - 1)


def _lapack_threads(size: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for a small decomposition, or for any when other work keeps every core busy: there OpenBLAS's
    threads wait on each other (a 120 x 120 SVD 100x slower, a 2048 x 2048 eigh 2-10x, on a shared 2-core machine)."""
    try:
        busy = os.getloadavg()[0] >= len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no load average or affinity (Windows, macOS)
        busy = False
    return contextlib.nullcontext() if size >= SMALL_LAPACK and not busy else threadpool_limits(1, user_api="blas")


def frechet_distance_from_moments(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    s1, s2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"moments do not match: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    with _lapack_threads(len(s1)):
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S1^1/2, symmetric PSD
        product = root1 @ s2 @ root1
        trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_root)


def _mean_and_trace(x: Any, chunk: int) -> tuple[np.ndarray, float]:
    n, d = shape_of(x)
    mean = sum((block.sum(0) for _, _, block in row_blocks(x, chunk, dtype=np.float64)), np.zeros(d)) / n
    spread = sum(float(((block - mean) ** 2).sum()) for _, _, block in row_blocks(x, chunk, dtype=np.float64))
    return mean, spread / (n - 1)


def _frechet_by_cross_product(x: Any, y: Any, chunk: int) -> float:
    """FD through the N1 x N2 cross-product C = A B^T of the centred sets (see the module doc)."""
    (nx, _), (ny, _) = shape_of(x), shape_of(y)
    (mx, trace_x), (my, trace_y) = _mean_and_trace(x, chunk), _mean_and_trace(y, chunk)
    cross = np.empty((nx, ny))
    for b, b_end, right in row_blocks(y, chunk, dtype=np.float64):
        right = (right - my) / math.sqrt(ny - 1)
        for a, a_end, left in row_blocks(x, chunk, dtype=np.float64):
            cross[a:a_end, b:b_end] = ((left - mx) / math.sqrt(nx - 1)) @ right.T
    diff = mx - my
    # the SVD keeps singular values down to 1e-16 of the largest; the eigenvalues of C C^T lose those below 1e-8
    with _lapack_threads(min(nx, ny)):
        trace_root = float(np.linalg.svd(cross, compute_uv=False).sum())
    return float(diff @ diff + trace_x + trace_y - 2 * trace_root)


def frechet_distance(x: Any, y: Any, *, chunk: int = DEFAULT_CHUNK, method: str = "auto",
                     moments_x: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """FD between x (N1 x D) and y (N2 x D) by ``method`` "moments" (D x D covariances), "cross" (N1 x N2) or "auto"
    (cross when D exceeds the smaller N); ``moments_x``: x's (mean, covariance), when several sets share x."""
    (nx, d), (ny, dy) = shape_of(x), shape_of(y)
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
    return frechet_distance_from_moments(mu1, s1, *feature_moments(y, chunk=chunk))


def _kernel_sums(a: Any, ind_a: torch.Tensor | None, b: Any, ind_b: torch.Tensor | None, *, same: bool, chunk: int,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """For every subset s (a column of the 0/1 matrices ind_a, ind_b; None: all rows, one subset): the sum over
    rows i of a and j of b in s, i != j when ``same``, of (a_i.b_j / D + 1)^3, cubed and summed in float64."""
    d = shape_of(a)[1]
    out = torch.zeros(1 if ind_a is None else ind_a.shape[1], dtype=torch.float64, device=device)
    for i, i_end, left in row_blocks(a, chunk, dtype=dtype, device=device):
        for j, j_end, right in row_blocks(b, chunk, dtype=dtype, device=device):
            block = (torch.mm(left, right.T).double() / d + 1) ** 3
            if same and i == j:
                block.fill_diagonal_(0)
            out += block.sum() if ind_a is None else ((block @ ind_b[j:j_end]) * ind_a[i:i_end]).sum(0)
    return out


def kid(x: Any, y: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
        chunk: int = DEFAULT_CHUNK, method: str = "auto",
        device: torch.device | str | None = None) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 between x and y with k(a, b) = (a.b / D + 1)^3, each subset
    ``subset_size`` rows of x then of y without replacement (``default_rng(seed)``). ``method``: "subsets" (kernel
    blocks per subset), "gram" (whole-set blocks once, summed per subset by indicators) or "auto" (fewer products)."""
    (nx, d), (ny, dy) = shape_of(x), shape_of(y)
    if d != dy:
        raise ValueError(f"feature sizes differ: {d} and {dy}")
    m = int(subset_size)
    if subsets < 1 or m < 2 or m > min(nx, ny):
        raise ValueError(f"KID needs subsets >= 1 and 2 <= subset_size <= {min(nx, ny)} (got {subsets}, {m})")
    common = {"chunk": chunk, "device": torch.device(device or "cpu"), "dtype": work_dtype(x, y)}
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(nx, m, replace=False), rng.choice(ny, m, replace=False)) for _ in range(subsets)]
    if method == "auto":
        whole = (nx * nx + ny * ny + nx * ny) * (d + subsets)
        method = "gram" if whole < subsets * 3 * m * m * d else "subsets"
    if method == "subsets":
        sums = []
        for ix, iy in draws:  # rows read in increasing order (kind to memmaps), moved to the device once
            xs, ys = (row_block(a[np.sort(i)], 0, m, dtype=common["dtype"], device=common["device"])
                      for a, i in ((x, ix), (y, iy)))
            sums.append([_kernel_sums(a, None, b, None, same=same, **common)
                         for a, b, same in ((xs, xs, True), (ys, ys, True), (xs, ys, False))])
        kxx, kyy, kxy = (torch.cat(column).cpu() for column in zip(*sums))
    elif method == "gram":  # 0/1 indicators: column s marks the rows of subset s
        ind_x, ind_y = (torch.zeros(n, subsets, dtype=torch.float64) for n in (nx, ny))
        for ind, chosen in zip((ind_x, ind_y), zip(*draws)):
            ind[torch.from_numpy(np.stack(chosen).T.copy()), torch.arange(subsets)] = 1
        ind_x, ind_y = ind_x.to(common["device"]), ind_y.to(common["device"])
        kxx, kyy, kxy = (_kernel_sums(a, ia, b, ib, same=same, **common).cpu() for a, ia, b, ib, same in
                         ((x, ind_x, x, ind_x, True), (y, ind_y, y, ind_y, True), (x, ind_x, y, ind_y, False)))
    else:
        raise ValueError(f"method must be auto, subsets or gram, not {method!r}")
    mmd = (kxx + kyy) / (m * (m - 1)) - 2 * kxy / (m * m)
    return float(mmd.mean()), float(mmd.std(unbiased=False))
