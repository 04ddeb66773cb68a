"""Row blocks of a feature matrix: the one way every chunked pass over N x D features reads them, so the peak
memory is one block. A feature matrix is a numpy array, a memory-mapped ``.npy`` larger than RAM, a torch tensor,
or any object with ``.shape == (N, D)`` whose ``X[a:b]`` gives a row block (a lazy view)."""
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

BLOCK_BYTES = 64 * 2**20  # about this many float32 bytes per block when no block size is given


def shape_of(X: Any) -> tuple[int, int]:
    """``(N, D)`` of a 2-D feature container; anything else is a ValueError."""
    shape = tuple(X.shape)
    if len(shape) != 2:
        raise ValueError(f"features must be N x D, got shape {shape}")
    return int(shape[0]), int(shape[1])


def block_rows(dims: int) -> int:
    """Rows per block for ``dims`` features: about ``BLOCK_BYTES`` of float32, at least one row."""
    return max(1, BLOCK_BYTES // (4 * max(dims, 1)))


def row_block(X: Any, start: int, stop: int, *, dtype: Any = None, device: Any = None) -> Any:
    """Rows ``start:stop`` of ``X``: a numpy array (a view where ``X`` allows one), or with ``device`` a torch
    tensor there (of ``dtype``, a torch dtype; no copy for float32 numpy on the CPU)."""
    block = X[start:stop]
    if device is None:
        block = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        return block if dtype is None else block.astype(dtype, copy=False)
    if not isinstance(block, torch.Tensor):
        block = torch.from_numpy(np.require(np.asarray(block), requirements="C"))
    return block.to(device=device, dtype=dtype or torch.float32)


def row_blocks(X: Any, rows: int | None = None, **kwargs: Any) -> Iterator[tuple[int, int, Any]]:
    """``(start, stop, block)`` over ``X`` in blocks of ``rows`` rows (default: ``block_rows`` of its width);
    ``kwargs`` go to ``row_block``."""
    n, d = shape_of(X)
    rows = rows or block_rows(d)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        yield start, stop, row_block(X, start, stop, **kwargs)
