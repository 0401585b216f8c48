"""Per-word label distributions in numpy (torch-free, shared with the ONNX runtime): softmax of
logits and the marginals p(y_t = c | x) of a linear-chain CRF by forward-backward in log space."""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis (max subtracted first), in the input's dtype."""
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32 (max subtracted first, so large logits do not overflow)."""
    z = logits.astype(np.float32) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def crf_marginals(emissions: np.ndarray, mask: np.ndarray, start: np.ndarray, trans: np.ndarray,
                  end: np.ndarray) -> np.ndarray:
    """Label marginals of a linear-chain CRF (the numpy twin of ``CRF.marginals``).

    Args:
        emissions: (B, L, C) scores; mask: (B, L) bool, left-aligned, ``mask[:, 0]`` all True.
        start, end: (C,) scores (constraint penalties included); trans: (C, C) ``[from, to]``.

    Returns:
        (B, L, C) float32 marginals, zeros on padding.
    """
    e = emissions.astype(np.float64)  # (B, L, C); float64: exp of large path-score differences
    B, L, C = e.shape
    alpha = np.empty_like(e)
    alpha[:, 0] = start + e[:, 0]
    for t in range(1, L):
        nxt = _logsumexp(alpha[:, t - 1, :, None] + trans[None], axis=1) + e[:, t]  # (B, C)
        alpha[:, t] = np.where(mask[:, t, None], nxt, alpha[:, t - 1])
    log_z = _logsumexp(alpha[:, -1] + end, axis=1)  # (B,)
    beta = np.empty_like(e)
    beta[:, -1] = end
    for t in range(L - 2, -1, -1):
        nxt = _logsumexp(trans[None] + (e[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)  # (B, C)
        beta[:, t] = np.where(mask[:, t + 1, None], nxt, end)
    marg = np.exp(alpha + beta - log_z[:, None, None])  # (B, L, C)
    return (marg * mask[:, :, None]).astype(np.float32)
