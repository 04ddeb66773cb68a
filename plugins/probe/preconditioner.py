"""Low-rank preconditioner for the torch L-BFGS probe solver.

Built once per fit from a row sample of X (contiguous row blocks, so a memmap
is read only in slices); it changes how fast L-BFGS reaches the solution, not
the solution.
"""

from __future__ import annotations

import numpy as np
import torch

from .views import torch_block

__all__ = ["PRECONDITION_RANK", "SAMPLE_BYTES", "SAMPLE_ROWS", "Preconditioner"]

#: Torch solver preconditioner: default rank, and the row sample it is built from
#: (at most this many rows and bytes of float32).
PRECONDITION_RANK = 256
SAMPLE_ROWS = 4096
SAMPLE_BYTES = 256 * 2**20


class Preconditioner:
    """Low-rank (Nystrom-style) preconditioner ``W = P V`` for the torch solver.

    The objective's (generalised) Hessian for class k is ``I + 2 C sum_{i active} x_i x_i^T``
    with x_i extended by the bias feature ``s``. DCGAN features are non-negative and strongly
    correlated, so its spectrum spans several orders of magnitude and plain L-BFGS needs
    hundreds of passes over X. We approximate it by ``I + a_k U diag(lam) U^T`` (top-``rank``
    eigenpairs of the second-moment matrix of a row sample, ``a_k = 2 C n rho_k`` with
    ``rho_k`` the fraction of active margins at the starting point) and map V to W so that
    those top directions are brought down to the level of the largest eigenvalue left out
    (``lam[-1]``), as Nystrom-PCG does. P is symmetric and invertible, so the minimiser in W
    is exactly the unpreconditioned one; only the path L-BFGS takes changes.
    """

    def __init__(self, U: torch.Tensor, t: torch.Tensor):
        self.U, self.t = U, t      # (D+1) x r orthonormal; r x K with P = I + U diag(t_k) U^T

    @classmethod
    def build(cls, X, n: int, d: int, s: float, *, n_fit: int, rank: int, C: float,
              active: torch.Tensor, device: torch.device) -> Preconditioner | None:
        """From a sample of X's n rows; ``n_fit`` rows (and ``active``) enter the objective."""
        block = 64
        m = int(min(n, SAMPLE_ROWS, max(2 * rank, SAMPLE_BYTES // (4 * (d + 1)))))
        r = min(int(rank), m - 1, d)
        if r < 1:
            return None
        # contiguous row blocks spread evenly over X (the solver only ever reads slices)
        starts = np.unique(np.linspace(0, max(0, n - block), max(1, -(-m // block))).astype(int))
        rows = [torch_block(X, a, min(n, a + block), device, torch.float32) for a in starts]
        sample = torch.cat(rows)
        sample = torch.cat([sample, torch.full((len(sample), 1), s, device=device)], 1)
        # svd_lowrank draws from the global RNG: fixed seed, callers' RNG state untouched
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            U, sv, _ = torch.svd_lowrank(sample.T, q=r, niter=3)
        del sample, rows
        lam = (sv.double() ** 2) / m                   # eigenvalues of the second moment
        a = (2.0 * C * n_fit) * active.double()[None, :]   # 1 x K
        t = torch.sqrt((1.0 + a * lam[-1]) / (1.0 + a * lam[:, None])) - 1.0
        return cls(U.double(), t)

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        return V + self.U @ (self.t * (self.U.T @ V))

    def inverse(self, W: torch.Tensor) -> torch.Tensor:
        return W + self.U @ ((1.0 / (1.0 + self.t) - 1.0) * (self.U.T @ W))
