"""The KD loss registry: one entry per loss between a student's word scores and its teacher's word
logits, shared by ``NeuralTagger`` students (``TeacherStudentDistill``) and transformer students
(``TransformerDistill``). A new KD loss is one entry here (its formula goes in ``losses``; its name
in the ``choices`` of ``KDConfig.loss_function``, which a test checks against this registry).

Every entry is called the same way::

    KD_LOSSES[name](scores, teacher_logits, mask, temperature, weight, reduction, log_probs)

with ``scores`` (B, L, C) the student's emissions / word logits, ``teacher_logits`` (B, L, C),
``mask`` (B, L) bool and ``log_probs(T)`` the student's log label distribution at temperature T
(a CRF's log marginals, else the log-softmax of ``scores / T``), computed only by the losses that
use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from nlp_distill.distill import losses
from nlp_distill.errors import ConfigError

LogProbs = Callable[[float], torch.Tensor]


@dataclass(frozen=True)
class KDLoss:
    """One KD loss: its name, what it is (for docs and errors), whether it needs a CRF student,
    and its formula ``fn(scores, teacher, mask, T, weight, reduction, log_probs)``."""

    name: str
    doc: str
    fn: Callable[..., torch.Tensor]
    needs_crf: bool = False

    def __call__(self, scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float,
                 weight: Optional[torch.Tensor], reduction: str, log_probs: LogProbs) -> torch.Tensor:
        return self.fn(scores, teacher, mask, temperature, weight, reduction, log_probs)


KD_LOSSES: Dict[str, KDLoss] = {k.name: k for k in (
    KDLoss("kl", "T^2 KL(p_t^T || p_s^T) (Hinton et al., 2015)",
           lambda s, t, m, T, w, r, lp: losses.kd_kl(s, t, m, T, w, r)),
    KDLoss("mse", "MSE between raw logits",
           lambda s, t, m, T, w, r, lp: losses.kd_mse(s, t, m, w, r)),
    KDLoss("posterior", "T^2 KL(p_t^T || CRF marginals at T)",
           lambda s, t, m, T, w, r, lp: losses.kd_posterior(lp(T), t, m, T, w, r), needs_crf=True),
    KDLoss("dist", "T^2 (1 - Pearson) of the label distributions per word and per label (Huang et al., 2022)",
           lambda s, t, m, T, w, r, lp: losses.kd_dist(lp(T), t, m, T, w, r)),
)}


def resolve_kd_loss(name: str, has_crf: bool) -> KDLoss:
    """The entry for ``--kd_loss_fn NAME``; ``auto`` is ``posterior`` for a CRF student, else ``kl``.

    Raises:
        ConfigError: an unknown name, or a loss that needs a CRF for a student without one.
    """
    if name == "auto":
        name = "posterior" if has_crf else "kl"
    if name not in KD_LOSSES:
        raise ConfigError(f"--kd_loss_fn {name}: one of auto, {', '.join(KD_LOSSES)}")
    entry = KD_LOSSES[name]
    if entry.needs_crf and not has_crf:
        raise ConfigError(f"kd.loss_function (--kd_loss_fn) {name} needs a CRF student (--use_crf)")
    return entry
