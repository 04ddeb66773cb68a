"""Improved precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020), from the
closed balls that reach each point's k-th nearest other point of its own set.

Each block of distances is one matrix product (||a||^2 - 2 a.b + ||b||^2) and no N x M matrix is held. A set's
distances to itself are symmetric, so ``self_knn`` computes each off-diagonal block once for its rows and columns:
half the work of ``ganlab.nearest_neighbours``, which took 3x as long for these radii (``knn="core"``). The four
metrics share one pass over the real x generated blocks, with squared distances against squared radii from the
same formula, so that equal distances compare equal.
"""
import time
from typing import Any

import torch

from ganlab import nearest_neighbours, row_block, row_blocks, shape_of

from .metrics import DEFAULT_CHUNK, work_dtype

METRICS = ("precision", "recall", "density", "coverage")


def _merge(best: torch.Tensor, block: torch.Tensor, k: int) -> torch.Tensor:
    top = block.topk(min(k, block.shape[1]), dim=1, largest=False).values
    return torch.cat([best, top], 1).topk(k, dim=1, largest=False).values


def _core_knn(x: Any, k: int, chunk: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``self_knn`` through ``ganlab.nearest_neighbours``, kept to compare speed against (``benchmarks/``)."""
    _, index = nearest_neighbours(x, x, k, query_chunk=chunk, reference_chunk=chunk, device=device,
                                  exclude_self=True)
    # squared distances from the points themselves: squaring the returned float32 distances would move a point
    # lying exactly on a ball's sphere by one rounding, in or out
    points = row_block(x, 0, shape_of(x)[0], dtype=dtype, device="cpu")
    return torch.cat([((points[index[a:a + chunk]] - points[a:a + chunk, None, :]) ** 2).sum(-1)
                      for a in range(0, len(points), chunk)])


def self_knn(x: Any, k: int, *, chunk: int = DEFAULT_CHUNK, device: torch.device | str | None = None,
             knn: str = "symmetric") -> torch.Tensor:
    """Squared distances of each row to its k nearest other rows (N x k, ascending, on the CPU)."""
    n, _ = shape_of(x)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k = {k} needs 1 <= k <= N - 1 = {n - 1}")
    device, dtype = torch.device(device or "cpu"), work_dtype(x)
    if knn == "core":
        return _core_knn(x, k, chunk, device, dtype)
    if knn != "symmetric":
        raise ValueError(f"knn must be symmetric or core, not {knn!r}")
    read = {"dtype": dtype, "device": device}
    bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    norms = [(block * block).sum(1) for _, _, block in row_blocks(x, chunk, **read)]
    best = [torch.full((len(norm), k), float("inf"), dtype=dtype, device=device) for norm in norms]
    for i, (a, a_end) in enumerate(bounds):
        left = row_block(x, a, a_end, **read)
        for j in range(i, len(bounds)):
            right = left if j == i else row_block(x, *bounds[j], **read)
            d2 = torch.addmm(norms[i][:, None] + norms[j][None, :], left, right.T, alpha=-2.0)
            if j == i:
                d2.fill_diagonal_(float("inf"))
            best[i] = _merge(best[i], d2, k)
            if j != i:
                best[j] = _merge(best[j], d2.T, k)
    return torch.cat(best).clamp_(min=0).cpu()


def _cross_pass(real: Any, fake: Any, balls: dict[str, torch.Tensor], *, chunk: int, device: torch.device,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One pass over the real x generated blocks against the squared radii ``balls`` (optional: "real" and "dense"
    per real point, "fake" per sample): per sample "precision" (in a real ball) and "density" (how many dense real
    balls hold it); per real point "coverage" (its dense ball holds a sample) and "recall" (in a sample's ball)."""
    (n, _), (m, _) = shape_of(real), shape_of(fake)
    read = {"dtype": dtype, "device": device}
    real_norms = [(r * r).sum(1) for _, _, r in row_blocks(real, chunk, **read)]
    balls = {name: ball.to(**read) for name, ball in balls.items()}
    out = {"precision": torch.zeros(m, dtype=torch.bool, device=device),
           "density": torch.zeros(m, dtype=torch.int64, device=device),
           "coverage": torch.zeros(n, dtype=torch.bool, device=device),
           "recall": torch.zeros(n, dtype=torch.bool, device=device)}
    for a, a_end, q in row_blocks(fake, chunk, **read):
        q_norm = (q * q).sum(1)
        for j, (b, b_end, r) in enumerate(row_blocks(real, chunk, **read)):
            d2 = torch.addmm(q_norm[:, None] + real_norms[j][None, :], q, r.T, alpha=-2.0)
            if "real" in balls:
                out["precision"][a:a_end] |= (d2 <= balls["real"][None, b:b_end]).any(1)
            if "dense" in balls:
                within = d2 <= balls["dense"][None, b:b_end]
                out["density"][a:a_end] += within.sum(1, dtype=torch.int32)
                out["coverage"][b:b_end] |= within.any(0)
            if "fake" in balls:
                out["recall"][b:b_end] |= (d2 <= balls["fake"][a:a_end, None]).any(0)
    return {name: value.cpu() for name, value in out.items()}


def manifold_metrics(real: Any, fake: Any, *, k: int = 3, density_k: int = 5, chunk: int = DEFAULT_CHUNK,
                     device: torch.device | str | None = None, real_knn: torch.Tensor | None = None,
                     which: tuple[str, ...] = METRICS, knn: str = "symmetric",
                     timings: dict[str, float] | None = None) -> dict[str, float]:
    """The metrics named in ``which`` between real (N x D) and generated (M x D) features. ``real_knn``:
    ``self_knn(real, K >= the k's)``, to share the real radii between sets; ``timings`` gets each stage's seconds."""
    (_, d), (m, dy) = shape_of(real), shape_of(fake)
    if d != dy:
        raise ValueError(f"feature sizes differ: {d} and {dy}")
    if set(which) - set(METRICS):
        raise ValueError(f"unknown metrics: {sorted(set(which) - set(METRICS))}")
    common = {"chunk": chunk, "device": torch.device(device or "cpu")}
    dtype = work_dtype(real, fake)
    density = bool({"density", "coverage"} & set(which))
    need = max([k] * bool({"precision", "recall"} & set(which)) + [density_k] * density + [1])
    timings = {} if timings is None else timings
    clock = time.perf_counter()
    balls = {}
    if real_knn is None or real_knn.shape[1] < need:
        real_knn = self_knn(real, need, knn=knn, **common)
        timings["real radii"], clock = time.perf_counter() - clock, time.perf_counter()
    real_knn = real_knn.to(dtype)
    if "precision" in which:
        balls["real"] = real_knn[:, k - 1]
    if density:
        balls["dense"] = real_knn[:, density_k - 1]
    if "recall" in which:
        balls["fake"] = self_knn(fake, k, knn=knn, **common)[:, k - 1]
        timings["generated radii"], clock = time.perf_counter() - clock, time.perf_counter()
    hits = _cross_pass(real, fake, balls, dtype=dtype, **common)
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
