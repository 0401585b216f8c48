"""Distillation losses: pure functions over word-level logits with a bool mask of real words.

Every loss sums per-word terms over real words (``mask`` True) only, optionally weighted per
sentence, and returns either that sum (``reduction="sum"``, for the Trainer, which divides by the
word count of the whole accumulation group) or the per-real-word mean (``"mean"``). The
hard-label loss ``ce`` lives in :mod:`nlp_distill.modules.masked_loss` (models use it too).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from nlp_distill.modules.masked_loss import reduce_words


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
          weight: Optional[torch.Tensor] = None, reduction: str = "mean") -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per real word (Hinton et al., 2015).

    The T^2 factor keeps the gradient magnitude independent of T.

    Args:
        student, teacher: (B, L, C) logits; mask: (B, L) bool; temperature: T > 0.
    """
    t = temperature
    log_ps = F.log_softmax(student / t, dim=-1)  # (B, L, C)
    log_pt = F.log_softmax(teacher.to(student.dtype) / t, dim=-1)
    per_word = (log_pt.exp() * (log_pt - log_ps)).sum(-1) * (t * t)  # (B, L)
    return reduce_words(per_word, mask, weight, reduction)


POSTERIOR_LOG_FLOOR = -20.0  # log q floor of the posterior KD (q < 2e-9 counts as 2e-9)


def kd_posterior(student_log_marginals: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                 temperature: float = 1.0, weight: Optional[torch.Tensor] = None,
                 reduction: str = "mean") -> torch.Tensor:
    """Structure-level (posterior) KD for CRF students: ``T^2 * KL(softmax(t/T) || q)`` per real
    word, where ``q`` are the student CRF's per-word marginals (Wang et al., ACL 2020). The CRF's
    transition scores shape ``q``, so they are distilled too, unlike a KL on raw emissions.

    Args:
        student_log_marginals: (B, L, C) log marginals of the CRF at temperature T
            (``CRF.log_marginals(emissions, mask, T)``); teacher: (B, L, C) logits; mask: (B, L).
    """
    t = temperature
    log_pt = F.log_softmax(teacher.to(student_log_marginals.dtype) / t, dim=-1)  # (B, L, C)
    # a constrained CRF gives scheme-invalid labels log q ~ -1e4/T; the teacher's small mass on them
    # would add a huge, unlearnable term whose gradient only inflates those labels' emissions, so
    # log q is floored: below the floor a label costs a bounded constant and sends no gradient
    log_q = student_log_marginals.clamp(min=POSTERIOR_LOG_FLOOR)
    per_word = (log_pt.exp() * (log_pt - log_q)).sum(-1) * (t * t)  # (B, L)
    return reduce_words(per_word, mask, weight, reduction)


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (the cosine of the centred vectors)."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def kd_dist(student_log_probs: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
            weight: Optional[torch.Tensor] = None, reduction: str = "mean") -> torch.Tensor:
    """DIST (Huang et al., 2022): match the teacher's *relations*, not its exact probabilities, so
    a much stronger (sharper) teacher does not push the student past what it can represent::

        T^2 * [(1 - pearson_c(p_s[w], p_t[w]))  +  mean_c (1 - pearson_w(p_s[:, c], p_t[:, c]))]

    per real word ``w``: the inter-class term correlates a word's two label distributions; the
    intra-class term correlates, for each label, its probabilities across the batch's real words
    (one value per batch, counted once per word).

    Args:
        student_log_probs: (B, L, C) student log-probabilities at temperature T (log-softmax of
            the emissions, or a CRF's log marginals); teacher: (B, L, C) logits; mask: (B, L) bool.
    """
    t = temperature
    ps = student_log_probs.exp()  # (B, L, C)
    pt = F.softmax(teacher.to(ps.dtype) / t, dim=-1)
    inter = 1.0 - pearson(ps, pt, dim=-1)  # (B, L)
    real = mask.nonzero(as_tuple=True)
    intra = (1.0 - pearson(ps[real], pt[real], dim=0)).mean() if len(real[0]) > 1 else ps.sum() * 0.0  # (N, C) -> ()
    per_word = (inter + intra) * (t * t)  # (B, L)
    return reduce_words(per_word, mask, weight, reduction)


def kd_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, weight: Optional[torch.Tensor] = None,
           reduction: str = "mean") -> torch.Tensor:
    """Mean squared error between raw logits, averaged over classes, per real word.

    Args:
        student, teacher: (B, L, C) logits; mask: (B, L) bool.
    """
    per_word = ((student - teacher.to(student.dtype)) ** 2).mean(-1)  # (B, L)
    return reduce_words(per_word, mask, weight, reduction)


def hidden_mse(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor,
               weight: Optional[torch.Tensor] = None, reduction: str = "mean") -> torch.Tensor:
    """MSE between hidden states of equal size (project the student first), per real word.

    Args:
        student_h, teacher_h: (B, L, H); mask: (B, L) bool.
    """
    return kd_mse(student_h, teacher_h, mask, weight, reduction)


def cosine(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor,
           weight: Optional[torch.Tensor] = None, reduction: str = "mean") -> torch.Tensor:
    """``1 - cos(student_h, teacher_h)`` per real word.

    Args:
        student_h, teacher_h: (B, L, H); mask: (B, L) bool.
    """
    per_word = 1.0 - F.cosine_similarity(student_h, teacher_h.to(student_h.dtype), dim=-1, eps=1e-8)  # (B, L)
    return reduce_words(per_word, mask, weight, reduction)


def attention_kl(student_att: torch.Tensor, teacher_att: torch.Tensor, mask: torch.Tensor,
                 weight: Optional[torch.Tensor] = None, reduction: str = "mean", eps: float = 1e-12) -> torch.Tensor:
    """KL(teacher || student) between attention distributions, averaged over heads, per real
    query token (TinyBERT-style attention transfer, on probabilities).

    Args:
        student_att, teacher_att: (B, heads, T, T) attention probabilities (rows sum to 1 over
            real keys); mask: (B, T) bool, real tokens.
    """
    t = teacher_att.to(student_att.dtype)
    key = mask[:, None, None, :].to(student_att.dtype)  # (B, 1, 1, T)
    per = (t * (torch.log(t + eps) - torch.log(student_att + eps)) * key).sum(-1)  # (B, heads, T)
    return reduce_words(per.mean(1), mask, weight, reduction)
