"""Row-chunk access to feature matrices, and lazy chunk-wise standardisation.

Every pass the probe makes over its features reads them in row blocks
(``X[a:b]``), so a feature matrix may be a ``np.memmap`` larger than RAM and
peak extra memory is about one chunk. Accepted containers are numpy arrays /
memmaps (N x D, any float dtype; float32 C-contiguous is zero-copy), torch
tensors, or any object with ``.shape == (N, D)`` whose ``X[a:b]`` returns an
array-like row block -- such as :class:`FeatureView`, which selects rows and
standardises lazily, so neither a training subset nor its standardised
version is ever materialised whole.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FeatureView",
    "Standardizer",
    "default_chunk_rows",
    "iter_numpy_chunks",
    "nbytes_of",
    "numpy_block",
    "shape_of",
    "standardize",
    "torch_block",
]

#: Target size of one row chunk of X (float32 bytes) when ``chunk_rows`` is None.
DEFAULT_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------
# Row-chunk access to X (numpy / memmap / torch / lazy views)
# --------------------------------------------------------------------------
def shape_of(X: Any) -> tuple[int, int]:
    """``(N, D)`` of a 2-D feature container; anything else is a ValueError."""
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (N x D), got shape {shape}")
    return int(shape[0]), int(shape[1])


def nbytes_of(X: Any) -> int:
    """Bytes of X; for lazy views assume float32 (that is what they yield)."""
    if isinstance(X, torch.Tensor):
        return X.numel() * X.element_size()
    nb = getattr(X, "nbytes", None)
    if nb is not None:
        return int(nb)
    n, d = shape_of(X)
    return n * d * 4


def default_chunk_rows(d: int) -> int:
    """Rows per chunk for D features: about ``DEFAULT_CHUNK_BYTES`` of float32, at least one row."""
    return max(1, DEFAULT_CHUNK_BYTES // (4 * max(d, 1)))


def numpy_block(X: Any, a: int, b: int) -> np.ndarray:
    """Rows a:b of X as a numpy array (a view whenever X allows one)."""
    if isinstance(X, torch.Tensor):
        return X[a:b].detach().cpu().numpy()
    return np.asarray(X[a:b])


def torch_block(X: Any, a: int, b: int, device: torch.device,
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


def iter_numpy_chunks(X: Any, chunk_rows: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(a, b, X[a:b])`` for consecutive row chunks of at most ``chunk_rows`` rows, as numpy blocks."""
    n, _ = shape_of(X)
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        yield a, b, numpy_block(X, a, b)


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

    ``X`` is an N x D array or memmap. ``rows``, if given, is a 1-D array of
    indices selecting (and ordering) rows of X; keep them sorted for
    sequential disk reads. ``mean`` and ``scale``, if given, are length-D
    arrays to standardise with.
    """

    def __init__(self, X: Any, rows: np.ndarray | None = None,
                 mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n, d = shape_of(X)
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
        for a, b, blk in iter_numpy_chunks(self, chunk_rows or default_chunk_rows(self.shape[1])):
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
        for _, _, blk in iter_numpy_chunks(src, chunk_rows or default_chunk_rows(d)):
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
