"""Single-layer K-means features (Coates, Ng & Lee 2011), the DCGAN paper's "K-means (Triangle)" baseline.

Random ``patch x patch`` patches of the training images (0-255 scale, where the constants live) are contrast-
normalised ``(p - mean) / sqrt(var + 10)``, ZCA-whitened (eigenvalues + 0.1) and clustered into K centroids; an
image's features are the triangle activations ``max(0, mean_j(z_j) - z_k)`` (``z_k``: a whitened patch's distance
to centroid k) at every location, summed over the 4 quadrants: 4K features, quadrant-major. K = 200 and 100,000
patches keep it to minutes on a CPU; the paper's row used K = 1,600 and 400,000 patches.
"""
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ganlab import content_digest, select_device

NORM_EPS, ZCA_EPS = 10.0, 0.1  # added to a patch's variance, and to the whitening's eigenvalues
KMEANS_ITER, KMEANS_INITS = 100, 3
MEMO_BYTES = 256 * 2**20  # encodings kept per process, at most this large
_MEMO: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # the last two (train, test) encodings


def _images(images: Any) -> np.ndarray:
    """N x C x H x W numpy images (N x H x W: one channel)."""
    images = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    images = images[:, None] if images.ndim == 3 else images
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {images.shape}")
    return images


def value_range(images: np.ndarray) -> tuple[float, float]:
    """The pixel range images come in: integers (0, 255); else (-1, 1) with negatives, (0, 1) up to 1, (0, 255)."""
    if np.issubdtype(images.dtype, np.integer):
        return 0.0, 255.0
    if float(images.min()) < 0:
        return -1.0, 1.0
    return (0.0, 1.0) if float(images.max()) <= 1.0 else (0.0, 255.0)


class KMeansFeatures:
    """The pipeline above: ``fit`` on training images learns the whitening and K centroids (``patch_mean_``,
    ``whitening_`` F x F and ``centroids_`` K x F, F = C * patch^2); ``transform`` gives float32 N x 4K."""

    def __init__(self, k: int = 200, patch: int = 6, stride: int = 1, seed: int = 0, *, n_patches: int = 100_000,
                 device: Any = "cpu", progress: bool = True):
        self.k, self.patch, self.stride, self.seed = int(k), int(patch), int(stride), int(seed)
        self.n_patches, self.device, self.progress = int(n_patches), select_device(str(device)), progress

    def _to255(self, x):
        lo, hi = self.value_range_
        return (x - lo) * (255.0 / (hi - lo))

    @staticmethod
    def normalize_patches(patches: np.ndarray) -> np.ndarray:
        """Brightness and contrast normalisation of P x F patches (0-255 scale)."""
        patches = np.asarray(patches, dtype=np.float64)
        return (patches - patches.mean(1, keepdims=True)) / np.sqrt(patches.var(1, ddof=1, keepdims=True) + NORM_EPS)

    def sample_patches(self, images: Any, n: int | None = None) -> np.ndarray:
        """n random raw patches (0-255 scale), n x F, flattened channel-major as ``F.unfold`` does."""
        images = _images(images)
        self.value_range_ = getattr(self, "value_range_", None) or value_range(images)
        rng = np.random.default_rng(self.seed)
        n, p = self.n_patches if n is None else int(n), self.patch
        N, C, H, W = images.shape
        if H < p or W < p:
            raise ValueError(f"images {H}x{W} smaller than patch {p}")
        i, y, x = rng.integers(0, N, n), rng.integers(0, H - p + 1, n), rng.integers(0, W - p + 1, n)
        out = np.lib.stride_tricks.sliding_window_view(images, (p, p), axis=(2, 3))[i, :, y, x]  # n x C x p x p
        return self._to255(out.reshape(n, C * p * p).astype(np.float64))

    @staticmethod
    def zca_matrix(patches: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, ZCA matrix P) of P x F patches: ``(x - mean) @ P`` whitens."""
        d, V = np.linalg.eigh(np.cov(patches, rowvar=False))  # ddof=1, as MATLAB's cov
        return patches.mean(0), (V * (1.0 / np.sqrt(np.clip(d, 0.0, None) + eps))) @ V.T  # clip: round-off

    def fit(self, images: Any) -> "KMeansFeatures":
        """Learn the whitening and the centroids from N x C x H x W training images."""
        from sklearn.cluster import MiniBatchKMeans

        images = _images(images)
        self.value_range_ = value_range(images)
        patches = self.normalize_patches(self.sample_patches(images))
        mean, P = self.zca_matrix(patches, ZCA_EPS)
        white = ((patches - mean) @ P).astype(np.float32)
        kmeans = MiniBatchKMeans(n_clusters=self.k, random_state=self.seed, batch_size=max(2048, 4 * self.k),
                                 max_iter=KMEANS_ITER, n_init=KMEANS_INITS).fit(white)
        self.patch_mean_, self.whitening_ = mean.astype(np.float32), P.astype(np.float32)
        self.centroids_ = kmeans.cluster_centers_.astype(np.float32)
        return self

    def _pooled(self, x: torch.Tensor, Q: torch.Tensor, M, P, Ct, c2) -> torch.Tensor:
        """B x C x H x W images (0-255) -> B x 4K quadrant sums of the triangle activations; the elementwise
        steps run in place on one B*L x K buffer, and the quadrant sums are one product with ``Q`` (4 x L)."""
        cols = F.unfold(x, kernel_size=self.patch, stride=self.stride).transpose(1, 2)  # B x L x F
        cols = (cols - cols.mean(-1, keepdim=True)) / torch.sqrt(cols.var(-1, keepdim=True) + NORM_EPS)
        flat = ((cols - M) @ P).reshape(-1, cols.shape[-1])  # whitened, B*L x F
        z = torch.addmm(c2, flat, Ct, alpha=-2.0)  # squared distances: ||x||^2 - 2 x.c + ||c||^2
        z += (flat * flat).sum(-1, keepdim=True)
        z.clamp_(min=0.0).sqrt_()
        mu = z.mean(-1, keepdim=True)
        act = z.neg_().add_(mu).clamp_(min=0.0).view(len(x), -1, self.k)  # the triangle
        return (Q @ act).reshape(len(x), 4 * self.k)

    @torch.no_grad()
    def transform(self, images: Any) -> np.ndarray:
        """Float32 N x 4K features, quadrant-major. Images go through in batches of about 8 MB of activations,
        so the elementwise steps stay in cache: the pass is bound by memory traffic, not by its arithmetic."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("KMeansFeatures is not fitted")
        images = _images(images)
        hp, wp = ((size - self.patch) // self.stride + 1 for size in images.shape[2:])
        i, j = np.divmod(np.arange(hp * wp), wp)  # the quadrant of each location (MATLAB's round(n / 2))
        quadrant = torch.from_numpy((i >= math.floor(hp / 2 + 0.5)) * 2 + (j >= math.floor(wp / 2 + 0.5)))
        Q = (quadrant[None, :] == torch.arange(4)[:, None]).float().to(self.device)
        C = torch.from_numpy(self.centroids_).to(self.device)
        constants = [torch.from_numpy(a).to(self.device) for a in (self.patch_mean_, self.whitening_)]
        constants += [C.T.contiguous(), (C * C).sum(1)]
        out = np.empty((len(images), 4 * self.k), dtype=np.float32)
        batch = max(1, (8 * 2**20) // (4 * hp * wp * self.k))
        for a in tqdm(range(0, len(images), batch), desc="kmeans-features", unit="batch", disable=not self.progress):
            x = self._to255(torch.from_numpy(np.ascontiguousarray(images[a:a + batch], dtype=np.float32)))
            out[a:a + len(x)] = self._pooled(x.to(self.device), Q, *constants).cpu().numpy()
        return out

    def fit_transform(self, images: Any) -> np.ndarray:
        return self.fit(images).transform(images)


def kmeans_train_test(train: Any, test: Any, *, k: int, seed: int, device: Any = "cpu",
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """K-means features fitted on ``train`` and applied to both sets: (X_train, X_test). Within a process the same
    images, K and seed are encoded once (svm-probe and probe-epochs may both want them in one report)."""
    key = (content_digest(train), content_digest(test), int(k), int(seed), str(device))
    if key in _MEMO:
        return tuple(x.copy() for x in _MEMO[key])
    model = KMeansFeatures(k=k, seed=seed, device=device, progress=progress)
    X_train, X_test = model.fit_transform(train), model.transform(test)
    if X_train.nbytes + X_test.nbytes <= MEMO_BYTES:
        _MEMO[key] = (X_train.copy(), X_test.copy())
        while len(_MEMO) > 2:
            _MEMO.pop(next(iter(_MEMO)))
    return X_train, X_test


def image_features(ctx, name: str, train: Any, test: Any) -> tuple[np.ndarray, np.ndarray]:
    """(X_train, X_test) of a baseline made from the images alone: "pixels" (in [-1, 1], flattened) or "kmeans"
    (with the evaluator's ``kmeans_k``)."""
    from ganlab import to_unit_range

    if name == "pixels":
        return to_unit_range(train).flatten(1).numpy(), to_unit_range(test).flatten(1).numpy()
    return kmeans_train_test(train, test, k=ctx.options["kmeans_k"], seed=ctx.seed, device=ctx.device,
                             progress=not ctx.quiet)
