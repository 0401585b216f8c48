"""Per-word losses over a bool mask of real words: the shared reduction and the hard-label
cross-entropy that models (``NeuralTagger.gold_loss``) and distillers use alike.

A loss sums per-word terms over real words (``mask`` True) only, optionally weighted per
sentence, and returns that sum (``reduction="sum"``, for the Trainer, which divides by the word
count of the whole accumulation group) or the per-real-word mean (``"mean"``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def reduce_words(per_word: torch.Tensor, mask: torch.Tensor, weight: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Sum (``"sum"``) or per-real-word mean (``"mean"``) of per-word terms.

    Args:
        per_word: (B, L) terms; mask: (B, L) bool, real words; weight: (B,) per-sentence or None.
    """
    per_word = per_word.masked_fill(~mask, 0.0)
    if weight is not None:
        per_word = per_word * weight.unsqueeze(1)
    total = per_word.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum().clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}; expected 'sum' or 'mean'")


def ce(logits: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, weight: Optional[torch.Tensor] = None,
       reduction: str = "mean") -> torch.Tensor:
    """Hard-label cross-entropy over real, labeled words (tags != -100).

    Args:
        logits: (B, L, C); tags: (B, L) ids or -100; mask: (B, L) bool; weight: (B,) optional.
    """
    labeled = mask & (tags != -100)
    per_word = F.cross_entropy(logits.transpose(1, 2), tags.masked_fill(~labeled, 0), reduction="none")  # (B, L)
    return reduce_words(per_word, labeled, weight, reduction)
