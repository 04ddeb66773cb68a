"""Exact nearest neighbours by L2 distance, in chunks: no N x M distance matrix is ever held whole.

``||q - r||^2 = ||q||^2 - 2 q.r + ||r||^2`` turns each block of distances into one matrix product (near matmul
speed, on the GPU when the tensors are there). That expansion loses digits to cancellation (an exact copy comes out
at about 1e-2, not 0), so it only finds the candidates: the distances returned are recomputed in float64.
"""
from typing import Any

import numpy as np
import torch

CANDIDATES = 8  # extra candidates per query whose exact distances are computed


def _as_tensor(x: Any, device: torch.device | str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        x = torch.from_numpy(x if x.flags.writeable else np.array(x))  # torch warns about sharing a read-only memmap
    return x.reshape(len(x), -1).to(device=device, dtype=torch.float32)


def nearest_neighbours(queries: Any, references: Any, k: int = 1, *, query_chunk: int = 2048,
                       reference_chunk: int = 8192, device: str | torch.device | None = None,
                       exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest references of each query: (distances N x k float32, indices N x k int64), on the CPU.

    ``queries`` N x ... and ``references`` M x ... (tensors or arrays, memmaps too) are flattened to vectors. Peak
    memory is one ``query_chunk x reference_chunk`` block. With ``exclude_self`` (the same set twice) each point's
    own entry is skipped. Rows are sorted by ||q - r|| computed in float64 (0 for an exact copy), as float32.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    n, m = len(queries), len(references)
    if k > m - int(exclude_self):
        raise ValueError(f"k = {k} is more than the {m} references")
    device = torch.device(device if device is not None else "cpu")
    # a few more candidates than asked for, so that a neighbour the float32 expansion ranks just below another
    # is still among those whose exact distances decide the order
    wide = min(k + CANDIDATES, m - int(exclude_self))
    starts = range(0, m, reference_chunk)
    ref_norms = [_as_tensor(references[b:b + reference_chunk], device).pow(2).sum(1) for b in starts]
    out_d, out_i = torch.empty(n, k, dtype=torch.float32), torch.empty(n, k, dtype=torch.int64)
    for a in range(0, n, query_chunk):
        q = _as_tensor(queries[a:a + query_chunk], device)
        best_d = torch.full((len(q), wide), float("inf"), device=device)
        best_i = torch.zeros((len(q), wide), dtype=torch.int64, device=device)
        for b, norms in zip(starts, ref_norms):
            r = _as_tensor(references[b:b + reference_chunk], device)
            # ||r||^2 - 2 q.r: ||q||^2 is the same along a row, so it is added once after the top-k
            partial = torch.addmm(norms.unsqueeze(0), q, r.T, alpha=-2.0)
            if exclude_self:  # query a + i is reference b + i + (a - b)
                partial.diagonal(a - b).fill_(float("inf"))
            block_d, block_i = partial.topk(min(wide, len(r)), dim=1, largest=False)
            best_d, pick = torch.cat([best_d, block_d], 1).topk(wide, dim=1, largest=False)
            best_i = torch.cat([best_i, block_i + b], 1).gather(1, pick)
        out_d[a:a + len(q)], out_i[a:a + len(q)] = _exact(queries[a:a + query_chunk], references, best_i.cpu(), k)
    return out_d, out_i


def _exact(queries: Any, references: Any, index: torch.Tensor, k: int,
           rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 ||q - r|| rounded to float32, indices) of each query's ``k`` nearest among its candidates ``index``."""
    distances = torch.empty(index.shape, dtype=torch.float32)
    for a in range(0, len(index), rows):
        q = _as_tensor(queries[a:a + rows], "cpu").double()
        picked, position = torch.unique(index[a:a + rows], return_inverse=True)  # sorted, for memmap reads
        r = _as_tensor(references[picked.numpy()], "cpu").double()
        distances[a:a + rows] = (q[:, None, :] - r[position]).pow(2).sum(2).sqrt().float()
    order = torch.sort(distances, dim=1, stable=True).indices
    return distances.gather(1, order)[:, :k], index.gather(1, order)[:, :k]
