"""Product quantisation of an embedding table (Jégou et al., 2011; fastText's ``quantize``).

The table's columns are cut into subspaces of ``dims`` columns; each subspace gets a k-means
codebook of up to 256 centroids, and each row keeps one uint8 code per subspace. A 50-d fp32
row (200 bytes) becomes 10 bytes with ``dims=5``.
"""
from __future__ import annotations

import logging
from typing import Tuple

import numpy as np

logger = logging.getLogger(__name__)


def kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means, seeded and deterministic; an emptied cluster restarts at the worst-fit row.

    Args:
        x: (N, d) float32 rows; k: clusters (at most N).

    Returns:
        (centroids (k, d) float32, assignment (N,) int64)
    """
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(len(x), k, replace=False)].astype(np.float32)
    x_sq = (x * x).sum(1, keepdims=True)  # (N, 1)
    for it in range(iters + 1):
        dist = x_sq - 2.0 * x @ cent.T + (cent * cent).sum(1)[None]  # (N, k) squared distances
        assign = dist.argmin(1)
        if it == iters:
            break
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1)
        full = counts > 0
        cent[full] = (sums[full] / counts[full, None]).astype(np.float32)
        if not full.all():
            worst = np.argsort(dist[np.arange(len(x)), assign])[::-1][: int((~full).sum())]
            cent[~full] = x[worst]
    return cent, assign


def pq_encode(table: np.ndarray, dims: int, centroids: int = 256, iters: int = 25,
              seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Codes and codebooks of ``table``.

    Args:
        table: (V, D) float rows, D a multiple of ``dims``.
        dims: columns per subspace; centroids: codebook size per subspace (<= 256).

    Returns:
        (codes (V, D // dims) uint8, codebooks (D // dims, K, dims) float32), K = min(centroids, V).
    """
    V, D = table.shape
    if D % dims:
        raise ValueError(f"a {D}-column table cannot be cut into subspaces of {dims} columns")
    if not 1 <= centroids <= 256:
        raise ValueError(f"centroids must be in 1..256 (uint8 codes), got {centroids}")
    k = min(centroids, V)
    x = np.ascontiguousarray(table, dtype=np.float32)
    codes = np.empty((V, D // dims), np.uint8)
    books = np.empty((D // dims, k, dims), np.float32)
    for s in range(D // dims):
        sub = x[:, s * dims : (s + 1) * dims]
        distinct, inverse = np.unique(sub, axis=0, return_inverse=True)
        if len(distinct) <= k:  # already quantised (e.g. trained with --embedding_pq_dims): exact codes
            books[s, : len(distinct)], books[s, len(distinct) :] = distinct, distinct[0]
            codes[:, s] = inverse.reshape(-1)
        else:
            books[s], codes[:, s] = kmeans(sub, k, iters, seed + s)
    err = np.square(pq_decode(codes, books) - x).sum() / max(np.square(x).sum(), 1e-12)
    logger.info("product quantisation: %d x %d table, %d subspaces x %d centroids, relative error %.4f",
                V, D, D // dims, k, err)
    return codes, books


def pq_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """(V, S) codes + (S, K, dims) codebooks -> (V, S * dims) float32 table."""
    return np.concatenate([codebooks[s][codes[:, s].astype(np.int64)] for s in range(codes.shape[1])], axis=1)
