"""Single-layer K-means features (Coates, Ng & Lee 2011), the DCGAN baseline.

Coates et al., "An analysis of single-layer networks in unsupervised feature
learning" (AISTATS 2011) -- the "K-means (Triangle)" row of the DCGAN paper's
CIFAR-10 table (80.6% with 4800 features from 1600 centroids). Pipeline:

1. random ``patch x patch`` patches from training images (values taken to a
   0-255 scale, where the paper's constants live);
2. per-patch brightness/contrast normalisation
   ``(p - mean(p)) / sqrt(var(p) + 10)`` (var with ddof=1, as MATLAB's var);
3. ZCA whitening ``P = V diag(1/sqrt(d + 0.1)) V^T`` of the normalised
   patches (eigendecomposition ``V diag(d) V^T`` of their covariance);
4. (standard) K-means on the whitened patches -> K centroids
   (sklearn ``MiniBatchKMeans``);
5. triangle activation ``f_k = max(0, mean_j(z_j) - z_k)`` with ``z_k`` the
   Euclidean distance of a whitened patch to centroid k, computed densely at
   every location (stride 1 by default) with ``unfold``;
6. sum-pooling over the 4 quadrants of the activation map -> 4K features per
   image, ordered quadrant-major: [top-left K, top-right K, bottom-left K,
   bottom-right K] (Coates' q1..q4).

Defaults are small (K=200, 100k patches) so it runs in minutes on a CPU;
``k=1600, n_patches=400_000`` reproduces the paper's setting.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["KMeansFeatures"]


def _to_numpy_images(images: Any) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:                       # N x H x W -> N x 1 x H x W
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {images.shape}")
    return images


def _half(n: int) -> int:
    """MATLAB ``round(n / 2)`` (halves away from zero), as in Coates' code."""
    return int(math.floor(n / 2 + 0.5))


class KMeansFeatures:
    """Coates et al. (2011) single-layer K-means triangle features.

    Args:
        k: number of centroids (features per quadrant); 1600 in the paper.
        patch: receptive field size (patch x patch pixels).
        stride: stride of dense extraction.
        seed: seeds patch sampling and K-means.
        n_patches: random training patches for whitening + K-means.
        norm_eps: added to the patch variance in contrast normalisation (10).
        zca_eps: added to the eigenvalues in ZCA whitening (0.1).
        value_range: pixel range of the input images, "auto" (integer dtype
            -> (0, 255); min < 0 -> (-1, 1); max <= 1 -> (0, 1); else
            (0, 255)) or a (lo, hi) tuple;
            images are mapped to 0-255 where the two eps above apply.
        kmeans_iter: MiniBatchKMeans ``max_iter``.
        n_init: MiniBatchKMeans ``n_init``.
        device: torch device for ``transform`` ("auto": cuda if available).
        batch_size: images per transform batch (None: ~256 MiB working set).
        progress: tqdm progress bar in ``transform``.

    Fitted attributes: ``value_range_``, ``patch_mean_`` (F,), ``whitening_``
    (F x F ZCA matrix), ``centroids_`` (K x F) with F = C * patch * patch,
    ``image_shape_`` (C, H, W).
    """

    def __init__(self, k: int = 200, patch: int = 6, stride: int = 1, seed: int = 0, *,
                 n_patches: int = 100_000, norm_eps: float = 10.0, zca_eps: float = 0.1,
                 value_range: Any = "auto", kmeans_iter: int = 100, n_init: int = 3,
                 device: Any = "cpu", batch_size: int | None = None,
                 progress: bool = True):
        self.k, self.patch, self.stride, self.seed = int(k), int(patch), int(stride), int(seed)
        self.n_patches = int(n_patches)
        self.norm_eps, self.zca_eps = float(norm_eps), float(zca_eps)
        self.value_range = value_range
        self.kmeans_iter, self.n_init = int(kmeans_iter), int(n_init)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                                   if device in (None, "auto") else device)
        self.batch_size = batch_size
        self.progress = progress

    # ------------------------------------------------------------------ utils
    def _resolve_range(self, images: np.ndarray) -> tuple[float, float]:
        if self.value_range != "auto":
            lo, hi = self.value_range
            return float(lo), float(hi)
        if np.issubdtype(images.dtype, np.integer):
            return (0.0, 255.0)                # uint8 images
        lo, hi = float(images.min()), float(images.max())
        if lo < 0:
            return (-1.0, 1.0)
        if hi <= 1.0:
            return (0.0, 1.0)
        return (0.0, 255.0)

    def _to255(self, x):
        lo, hi = self.value_range_
        return (x - lo) * (255.0 / (hi - lo))

    def normalize_patches(self, patches: np.ndarray) -> np.ndarray:
        """Brightness/contrast normalisation of P x F patches (0-255 scale)."""
        patches = np.asarray(patches, dtype=np.float64)
        mean = patches.mean(1, keepdims=True)
        var = patches.var(1, ddof=1, keepdims=True)
        return (patches - mean) / np.sqrt(var + self.norm_eps)

    def sample_patches(self, images: Any, n: int | None = None,
                       rng: Any = None) -> np.ndarray:
        """Random raw patches (0-255 scale), n x F with F = C*patch*patch,
        flattened channel-major like ``torch.nn.functional.unfold``."""
        imgs = _to_numpy_images(images)
        if not hasattr(self, "value_range_"):
            self.value_range_ = self._resolve_range(imgs)
        rng = np.random.default_rng(self.seed if rng is None else rng)
        n = self.n_patches if n is None else int(n)
        N, C, H, W = imgs.shape
        p = self.patch
        if H < p or W < p:
            raise ValueError(f"images {H}x{W} smaller than patch {p}")
        ii = rng.integers(0, N, n)
        yy = rng.integers(0, H - p + 1, n)
        xx = rng.integers(0, W - p + 1, n)
        dy, dx = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        # n x C x p x p gather via broadcast fancy indexing
        out = imgs[ii[:, None, None, None], np.arange(C)[None, :, None, None],
                   (yy[:, None, None] + dy)[:, None], (xx[:, None, None] + dx)[:, None]]
        return self._to255(out.reshape(n, C * p * p).astype(np.float64))

    @staticmethod
    def zca_matrix(patches: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, ZCA matrix) of P x F patches: ``(x - mean) @ P`` whitens."""
        mean = patches.mean(0)
        cov = np.cov(patches, rowvar=False)          # ddof=1, like MATLAB cov
        d, V = np.linalg.eigh(cov)
        d = np.clip(d, 0.0, None)                    # tiny negative round-off
        return mean, (V * (1.0 / np.sqrt(d + eps))) @ V.T

    # -------------------------------------------------------------------- fit
    def fit(self, images: Any) -> "KMeansFeatures":
        """Learn whitening and centroids from N x C x H x W training images."""
        from sklearn.cluster import MiniBatchKMeans

        imgs = _to_numpy_images(images)
        self.value_range_ = self._resolve_range(imgs)
        self.image_shape_ = tuple(imgs.shape[1:])
        patches = self.normalize_patches(self.sample_patches(imgs))
        mean, P = self.zca_matrix(patches, self.zca_eps)
        white = (patches - mean) @ P
        km = MiniBatchKMeans(n_clusters=self.k, random_state=self.seed,
                             batch_size=max(2048, 4 * self.k), max_iter=self.kmeans_iter,
                             n_init=self.n_init)
        km.fit(white.astype(np.float32))
        self.patch_mean_ = mean.astype(np.float32)
        self.whitening_ = P.astype(np.float32)
        self.centroids_ = km.cluster_centers_.astype(np.float32)
        return self

    # --------------------------------------------------------------- features
    def _batch_activations(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W images (0-255) -> B x K x H' x W' triangle activations."""
        B, _, H, W = x.shape
        p, s = self.patch, self.stride
        hp, wp = (H - p) // s + 1, (W - p) // s + 1
        cols = F.unfold(x, kernel_size=p, stride=s).transpose(1, 2)   # B x L x F
        mean = cols.mean(-1, keepdim=True)
        var = cols.var(-1, keepdim=True, unbiased=True)
        cols = (cols - mean) / torch.sqrt(var + self.norm_eps)
        cols = (cols - self._M) @ self._P                              # ZCA
        # squared distances via ||x||^2 - 2 x.c + ||c||^2 (one matmul)
        d2 = (cols * cols).sum(-1, keepdim=True) - 2.0 * cols @ self._Ct + self._c2
        z = d2.clamp_(min=0.0).sqrt_()                                  # B x L x K
        act = (z.mean(-1, keepdim=True) - z).clamp_(min=0.0)           # triangle
        return act.transpose(1, 2).reshape(B, self.k, hp, wp)

    def _prepare(self):
        if not hasattr(self, "centroids_"):
            raise RuntimeError("KMeansFeatures is not fitted")
        dev = self.device
        self._M = torch.from_numpy(self.patch_mean_).to(dev)
        self._P = torch.from_numpy(self.whitening_).to(dev)
        C = torch.from_numpy(self.centroids_).to(dev)
        self._Ct = C.T.contiguous()
        self._c2 = (C * C).sum(1)

    def _batches(self, imgs: np.ndarray, desc: str, bs: int | None = None):
        N, C, H, W = imgs.shape
        L = ((H - self.patch) // self.stride + 1) * ((W - self.patch) // self.stride + 1)
        F_ = C * self.patch * self.patch
        bs = bs or self.batch_size or max(1, (256 * 2**20) // (4 * L * (3 * self.k + 2 * F_)))
        starts = range(0, N, bs)
        if self.progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=desc, unit="batch", total=math.ceil(N / bs))
        for a in starts:
            x = torch.from_numpy(np.ascontiguousarray(imgs[a:a + bs], dtype=np.float32))
            yield a, self._to255(x.to(self.device))

    @torch.no_grad()
    def activations(self, images: Any) -> np.ndarray:
        """Unpooled triangle activations, float32 N x K x H' x W'."""
        imgs = _to_numpy_images(images)
        self._prepare()
        out = []
        for _, x in self._batches(imgs, "kmeans-activations"):
            out.append(self._batch_activations(x).cpu().numpy())
        return np.concatenate(out)

    def _quadrants(self, hp: int, wp: int) -> torch.Tensor:
        """4 x L 0/1 matrix: which quadrant (TL, TR, BL, BR) each of the hp x wp locations pools into."""
        hh, hw = _half(hp), _half(wp)
        i = torch.arange(hp)[:, None].expand(hp, wp).reshape(-1)
        j = torch.arange(wp)[None, :].expand(hp, wp).reshape(-1)
        quadrant = (i >= hh).long() * 2 + (j >= hw).long()
        return (quadrant[None, :] == torch.arange(4)[:, None]).float().to(self.device)

    def _batch_pooled(self, x: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        """B x C x H x W images (0-255) -> B x 4K quadrant-summed triangle activations.

        The same arithmetic as :meth:`_batch_activations`, with the elementwise steps done in place
        on one B*L x K buffer and the quadrant sums as one product with ``Q`` (4 x L)."""
        B = x.shape[0]
        cols = F.unfold(x, kernel_size=self.patch, stride=self.stride).transpose(1, 2)   # B x L x F
        mean = cols.mean(-1, keepdim=True)
        var = cols.var(-1, keepdim=True, unbiased=True)
        cols = (cols - mean) / torch.sqrt(var + self.norm_eps)
        flat = ((cols - self._M) @ self._P).reshape(-1, cols.shape[-1])                  # ZCA, B*L x F
        z = torch.addmm(self._c2, flat, self._Ct, alpha=-2.0)                             # B*L x K
        z += (flat * flat).sum(-1, keepdim=True)
        z.clamp_(min=0.0).sqrt_()
        mu = z.mean(-1, keepdim=True)
        act = z.neg_().add_(mu).clamp_(min=0.0).view(B, -1, self.k)                       # triangle
        return (Q @ act).reshape(B, 4 * self.k)

    @torch.no_grad()
    def transform(self, images: Any) -> np.ndarray:
        """Quadrant sum-pooled features, float32 N x 4K (quadrant-major).

        Images go through in small batches (about 8 MB of activations each, so the elementwise
        steps stay in cache): the pass is bound by memory traffic over N x L x K activations,
        not by its arithmetic."""
        imgs = _to_numpy_images(images)
        self._prepare()
        N, _, H, W = imgs.shape
        hp, wp = (H - self.patch) // self.stride + 1, (W - self.patch) // self.stride + 1
        Q = self._quadrants(hp, wp)
        out = np.empty((N, 4 * self.k), dtype=np.float32)
        bs = self.batch_size or max(1, (8 * 2**20) // (4 * hp * wp * self.k))
        for a, x in self._batches(imgs, "kmeans-features", bs):
            out[a:a + len(x)] = self._batch_pooled(x, Q).cpu().numpy()
        return out

    def fit_transform(self, images: Any) -> np.ndarray:
        return self.fit(images).transform(images)


_MEMO: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # the last two (train, test) encodings in this process
MEMO_BYTES = 256 * 2**20


def kmeans_train_test(train: Any, test: Any, *, k: int, seed: int, device: Any = "cpu",
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """K-means features fitted on ``train`` and applied to both sets: (X_train, X_test).

    The same images, K and seed give the same features, so within one process they are encoded once
    (svm-probe and probe-epochs both want them on the same splits in one report); features over
    ``MEMO_BYTES`` are not kept."""
    from ganlab import content_digest

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
