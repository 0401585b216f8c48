"""Viterbi decoding shared by the torch CRF and the torch-free ONNX runtime (numpy only).

The forward recursion runs over the padded length without masking: a sentence's best scores at
its last real word are read from the step that reached them, and the back-pointers before that
step come from real words only. Fewer operations per step than masking every step.
"""
from __future__ import annotations

from typing import List

import numpy as np


def backtrace(scores: np.ndarray, back: np.ndarray, mask: np.ndarray, end: np.ndarray) -> List[List[int]]:
    """Best path per sentence from an unmasked forward recursion.

    Args:
        scores: (B, L, C) best path score ending in each label at each step (end scores not added).
        back: (B, L - 1, C) ``back[b, t - 1, c]`` = best previous label of label ``c`` at step ``t``.
        mask: (B, L) bool, left-aligned.
        end: (C,) end scores.

    Returns:
        B label-id lists, one id per real word.
    """
    B, L, _ = scores.shape
    last = mask.sum(1) - 1  # (B,) each sentence's last real word
    rows = np.arange(B)
    best_end = (scores[rows, last] + end).argmax(1)  # (B,)
    paths = np.zeros((B, L), np.int64)
    cur = np.zeros(B, np.int64)
    for t in range(L - 1, -1, -1):
        cur = np.where(last == t, best_end, cur)  # a sentence's path starts at its own last word
        paths[:, t] = cur
        if t:
            cur = back[rows, t - 1, cur]
    return [paths[b, : last[b] + 1].tolist() for b in range(B)]


def viterbi(emissions: np.ndarray, mask: np.ndarray, start: np.ndarray, trans: np.ndarray,
            end: np.ndarray) -> List[List[int]]:
    """Best CRF path per sentence in numpy (scores include the constraint penalties).

    Args:
        emissions: (B, L, C); mask: (B, L) bool, left-aligned; start, end: (C,); trans: (C, C) [from, to].
    """
    B, L, C = emissions.shape
    score = start + emissions[:, 0]  # (B, C)
    scores, back = [score], np.zeros((B, max(L - 1, 0), C), np.int64)
    for t in range(1, L):
        cand = score[:, :, None] + trans[None]  # (B, C_from, C_to)
        back[:, t - 1] = idx = cand.argmax(1)  # (B, C)
        score = np.take_along_axis(cand, idx[:, None, :], 1)[:, 0] + emissions[:, t]
        scores.append(score)
    return backtrace(np.stack(scores, 1), back, mask, end)
