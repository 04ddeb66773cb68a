"""Improved precision and recall, density and coverage: exact k-NN balls, every distance block computed once.

Each set's manifold is the union of balls around its points, radius = distance to the point's k-th nearest
neighbour in its own set (itself excluded); balls are closed (a point on the sphere is inside).

- precision (Kynkaanniemi et al. 2019, k = 3): the fraction of generated points inside the real manifold;
- recall: the fraction of real points inside the generated manifold;
- density (Naeem et al. 2020, k = 5): (1 / (k M)) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))], X the N real and
  Y the M generated points: how many real balls a sample sits in, over k; about 1 when the sets match, above 1
  when samples crowd where real points are dense;
- coverage: (1 / N) sum_i 1[some Y_j in B(X_i, NND_k(X_i))]: the fraction of real balls holding a sample.

Cost. Distances come from ||a||^2 - 2 a.b + ||b||^2, one matrix product per block of ``chunk`` x ``chunk`` rows;
no N x M matrix is ever held (peak: a few blocks). The radii need each set's distances to itself: the matrix is
symmetric, so each off-diagonal block is computed once and serves both its rows and (transposed) its columns;
``ganlab.nearest_neighbours`` (exact, chunked) would compute every block twice and is kept as ``knn="core"`` for
comparison. The real radii for precision (k) and for density/coverage (density_k) come from one search with
the larger k. All four metrics then share one pass over the real x generated blocks. For N real and M
generated D-dim points that is (N^2/2 + M^2/2 + N M) D multiply-adds, 2 N^2 D when N = M.

Squared distances are compared with squared radii computed by the same formula, so equal distances compare
equal; float64 inputs are computed in float64, anything else in float32.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .metrics import DEFAULT_CHUNK, chunk_starts, rows, shape, work_dtype


def _merge(best: torch.Tensor, block: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest of each row of ``best`` and ``block`` together, ascending."""
    top = block.topk(min(k, block.shape[1]), dim=1, largest=False).values
    return torch.cat([best, top], 1).topk(k, dim=1, largest=False).values


def self_knn(x: Any, k: int, *, chunk: int = DEFAULT_CHUNK, device: torch.device | str | None = None,
             knn: str = "symmetric") -> torch.Tensor:
    """Squared distances of each row to its k nearest other rows (N x k, ascending, on the CPU)."""
    n, _ = shape(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k = {k} needs 1 <= k <= N - 1 = {n - 1}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if knn == "core":
        from ganlab import nearest_neighbours

        _, index = nearest_neighbours(x, x, k, query_chunk=chunk, reference_chunk=chunk, device=device,
                                      exclude_self=True)
        # squared distances to the neighbours found, from the points themselves: squaring the returned float32
        # distances would move a point lying exactly on a ball's sphere by one rounding, in or out
        points = rows(x, 0, n, dtype=work_dtype(x))
        return torch.cat([((points[index[a:a + chunk]] - points[a:a + chunk, None, :]) ** 2).sum(-1)
                          for a in chunk_starts(n, chunk)])
    if knn != "symmetric":
        raise ValueError(f"knn must be symmetric or core, not {knn!r}")
    dtype = work_dtype(x)
    starts = list(chunk_starts(n, chunk))
    norms = [(block * block).sum(1) for block in (rows(x, a, a + chunk, device=device, dtype=dtype)
                                                 for a in starts)]
    best = [torch.full((len(norm), k), float("inf"), dtype=dtype, device=device) for norm in norms]
    for i, a in enumerate(starts):
        left = rows(x, a, a + chunk, device=device, dtype=dtype)
        for j in range(i, len(starts)):
            right = left if j == i else rows(x, starts[j], starts[j] + chunk, device=device, dtype=dtype)
            d2 = torch.addmm(norms[i][:, None] + norms[j][None, :], left, right.T, alpha=-2.0)
            if j == i:
                d2.fill_diagonal_(float("inf"))
            best[i] = _merge(best[i], d2, k)
            if j != i:
                best[j] = _merge(best[j], d2.T, k)
    return torch.cat(best).clamp_(min=0).cpu()


def _cross_pass(real: Any, fake: Any, *, real_ball: torch.Tensor | None, dense_ball: torch.Tensor | None,
                fake_ball: torch.Tensor | None, chunk: int, device: torch.device,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One pass over the real x generated distance blocks; squared radii per real/generated point, or None.

    Returns "precision" (M bool: inside a real ball), "density" (M int64: real density balls holding it),
    "coverage" (N bool: its density ball holds a sample) and "recall" (N bool: inside a generated ball),
    for the radii given.
    """
    (n, _), (m, _) = shape(real), shape(fake)
    starts = list(chunk_starts(n, chunk))
    real_norms = [(r * r).sum(1) for r in (rows(real, b, b + chunk, device=device, dtype=dtype) for b in starts)]
    balls = {name: ball.to(device=device, dtype=dtype) for name, ball in
             (("real", real_ball), ("dense", dense_ball), ("fake", fake_ball)) if ball is not None}
    out = {"precision": torch.zeros(m, dtype=torch.bool, device=device),
           "density": torch.zeros(m, dtype=torch.int64, device=device),
           "coverage": torch.zeros(n, dtype=torch.bool, device=device),
           "recall": torch.zeros(n, dtype=torch.bool, device=device)}
    for a in chunk_starts(m, chunk):
        q = rows(fake, a, a + chunk, device=device, dtype=dtype)
        q_norm = (q * q).sum(1, keepdim=True)
        here = slice(a, a + len(q))
        for j, b in enumerate(starts):
            r = rows(real, b, b + chunk, device=device, dtype=dtype)
            there = slice(b, b + len(r))
            d2 = torch.addmm(q_norm + real_norms[j][None, :], q, r.T, alpha=-2.0)
            if "real" in balls:
                out["precision"][here] |= (d2 <= balls["real"][None, there]).any(1)
            if "dense" in balls:
                within = d2 <= balls["dense"][None, there]
                out["density"][here] += within.sum(1, dtype=torch.int32)
                out["coverage"][there] |= within.any(0)
            if "fake" in balls:
                out["recall"][there] |= (d2 <= balls["fake"][here, None]).any(0)
    return {name: value.cpu() for name, value in out.items()}


def manifold_metrics(real: Any, fake: Any, *, k: int = 3, density_k: int = 5, chunk: int = DEFAULT_CHUNK,
                     device: torch.device | str | None = None, real_knn: torch.Tensor | None = None,
                     which: tuple[str, ...] = ("precision", "recall", "density", "coverage"),
                     knn: str = "symmetric", timings: dict[str, float] | None = None) -> dict[str, float]:
    """The metrics named in ``which`` between real (N x D) and generated (M x D) features.

    ``real_knn``: ``self_knn(real, K)`` for some K >= the k's needed, to share the real radii between several
    generated sets. ``knn``: "symmetric" (each block of a set against itself computed once) or "core"
    (``ganlab.nearest_neighbours``). ``timings``, if given, receives the seconds of each stage.
    """
    (_, d), (m, dy) = shape(real), shape(fake)
    if d != dy:
        raise ValueError(f"feature sizes differ: {d} and {dy}")
    unknown = set(which) - {"precision", "recall", "density", "coverage"}
    if unknown:
        raise ValueError(f"unknown metrics: {sorted(unknown)}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = work_dtype(real, fake)
    pr, dc = {"precision", "recall"} & set(which), {"density", "coverage"} & set(which)
    need = max([k] * bool(pr) + [density_k] * bool(dc) + [1])
    timings = {} if timings is None else timings
    clock = time.perf_counter()
    if real_knn is None or real_knn.shape[1] < need:
        real_knn = self_knn(real, need, chunk=chunk, device=device, knn=knn)
        timings["real radii"], clock = time.perf_counter() - clock, time.perf_counter()
    real_knn = real_knn.to(dtype)
    fake_ball = None
    if "recall" in which:
        fake_ball = self_knn(fake, k, chunk=chunk, device=device, knn=knn)[:, k - 1]
        timings["generated radii"], clock = time.perf_counter() - clock, time.perf_counter()
    hits = _cross_pass(real, fake, real_ball=real_knn[:, k - 1] if "precision" in which else None,
                       dense_ball=real_knn[:, density_k - 1] if dc else None, fake_ball=fake_ball,
                       chunk=chunk, device=device, dtype=dtype)
    timings["real x generated pass"] = time.perf_counter() - clock
    values = {"precision": hits["precision"].double().mean().item(),
              "recall": hits["recall"].double().mean().item(),
              "density": hits["density"].sum().item() / (density_k * m),
              "coverage": hits["coverage"].double().mean().item()}
    return {name: values[name] for name in which}


def precision_recall(real: Any, fake: Any, k: int = 3, **kwargs: Any) -> tuple[float, float]:
    """(precision, recall) with k-NN radii (Kynkaanniemi et al. 2019)."""
    found = manifold_metrics(real, fake, k=k, which=("precision", "recall"), **kwargs)
    return found["precision"], found["recall"]


def density_coverage(real: Any, fake: Any, k: int = 5, **kwargs: Any) -> tuple[float, float]:
    """(density, coverage) with k-NN radii of the real points (Naeem et al. 2020)."""
    found = manifold_metrics(real, fake, density_k=k, which=("density", "coverage"), **kwargs)
    return found["density"], found["coverage"]
