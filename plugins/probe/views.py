"""A lazy row-selecting, standardising view of a feature matrix, and the standardiser that makes one.

Feature matrices may be memmaps larger than RAM, so every pass reads them in row blocks (``ganlab.row_blocks``).
``view[a:b]`` reads only the rows the view selects and standardises just that block, so neither a training subset
nor its standardised copy is held whole unless a solver asks for the rows in memory (``np.asarray(view)``).
"""
from typing import Any

import numpy as np

from ganlab import row_blocks, shape_of


class FeatureView:
    """Lazy float32 ``X[rows]`` of an N x D matrix (all rows if None), standardised by a fitted ``standardizer``
    if one is given. Sorted ``rows`` read a memmap front to back, and a run of consecutive rows as a slice. Blocks
    may be views of X: callers only read them."""

    def __init__(self, X: Any, rows: np.ndarray | None = None, standardizer: "Standardizer | None" = None):
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n, d = shape_of(X)
        self.shape = (n if self.rows is None else self.rows.size, d)
        # float32 statistics keep the block arithmetic in float32 (they were computed in float64)
        st = standardizer
        self.mean = None if st is None else np.asarray(st.mean_, dtype=np.float32)
        self.inv_scale = None if st is None else (1.0 / np.asarray(st.scale_, np.float64)).astype(np.float32)

    def __getitem__(self, key: slice) -> np.ndarray:
        if self.rows is None:
            block = self.X[key]
        else:
            rows = self.rows[key]
            consecutive = rows.size > 1 and bool(np.all(np.diff(rows) == 1))
            block = self.X[int(rows[0]):int(rows[-1]) + 1] if consecutive else self.X[rows]
        block = np.asarray(block, dtype=np.float32)
        if self.mean is None:
            return block
        out = block - self.mean  # a new array: X itself is never written
        out *= self.inv_scale
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.materialize().astype(dtype or np.float32, copy=False)

    def materialize(self) -> np.ndarray:
        """The whole view as one dense float32 N x D array."""
        out = np.empty(self.shape, dtype=np.float32)
        for start, stop, block in row_blocks(self):
            out[start:stop] = block
        return out


class Standardizer:
    """Per-feature ``(x - mean) / sqrt(var + EPS)`` fitted on some rows of X (``mean_``, ``scale_``), applied lazily.
    Block by block in float64 (Chan et al.'s merge), so a memmap is read once; ``var`` as sklearn's StandardScaler."""

    EPS = 1e-8
    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def fit(self, X: Any, rows: np.ndarray | None = None, *, chunk_rows: int | None = None) -> "Standardizer":
        """Fit on ``X[rows]`` (every row if None); X is N x D."""
        d = shape_of(X)[1]
        count, mean, m2 = 0, np.zeros(d), np.zeros(d)
        for _, _, block in row_blocks(FeatureView(X, rows), chunk_rows):
            block = block.astype(np.float64)
            block_mean = block.mean(0)
            delta, total = block_mean - mean, count + len(block)
            m2 += ((block - block_mean) ** 2).sum(0) + delta ** 2 * (count * len(block) / total)
            mean = mean + delta * (len(block) / total)
            count = total
        if count == 0:
            raise ValueError("cannot fit a Standardizer on zero rows")
        self.mean_, self.scale_ = mean, np.sqrt(m2 / count + self.EPS)
        return self

    def view(self, X: Any, rows: np.ndarray | None = None) -> FeatureView:
        """Standardised ``X[rows]``, lazily (no copy)."""
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted")
        return FeatureView(X, rows, self)
