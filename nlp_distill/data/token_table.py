"""Sentences as row ids into a table of their distinct tokens (inference featurisation).

A student's word representation (word vector, char encoder, shape) depends on the token string
alone, so at inference it is computed once per distinct token rather than once per occurrence:
1000 speech sentences hold 40k tokens but a few thousand distinct ones.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch


class TokenTable:
    """Distinct tokens of ``sentences`` and each sentence as ids into them (0 = padding).

    Args:
        sentences: token lists.

    Attributes:
        tokens: the distinct tokens in first-seen order; row id ``i + 1`` is ``tokens[i]``.
        rows: per sentence, (n,) int64 row ids.
        lengths: (N,) words per sentence.
    """

    def __init__(self, sentences: Sequence[Sequence[str]]) -> None:
        index: Dict[str, int] = {}
        self.rows: List[np.ndarray] = [
            np.fromiter((index.setdefault(w, len(index) + 1) for w in s), np.int64, len(s)) for s in sentences]
        self.tokens: List[str] = list(index)
        self.lengths = np.asarray([len(r) for r in self.rows], np.int64)

    def collate(self, idx: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sentences ``idx`` padded: row ids (B, L) and mask (B, L) bool."""
        ids = np.zeros((len(idx), int(self.lengths[list(idx)].max())), np.int64)
        for b, i in enumerate(idx):
            ids[b, : self.lengths[i]] = self.rows[i]
        t = torch.from_numpy(ids)
        return t, t != 0
