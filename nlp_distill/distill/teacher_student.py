"""TeacherStudentDistill: a frozen teacher supplies word-level logits; the combined loss is
``loss_w * student_loss(gold) + dist_w * KD(student, teacher)``."""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

import torch

from nlp_distill.data.batching import Batch
from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill import losses
from nlp_distill.distill.teacher_cache import TeacherLogitsCache
from nlp_distill.errors import ConfigError, LabelMismatchError

logger = logging.getLogger(__name__)

LOSS_FUNCTIONS = ("auto", "kl", "mse", "posterior")


class TeacherStudentDistill:
    """Distillation wrapper around a teacher.

    Args:
        teacher: a ``TransformerTokenClassifier`` (frozen here: eval mode, ``requires_grad=False``;
            its parameters never reach an optimiser because the Trainer only sees the student).
        temperature: softmax temperature T for ``kl``.
        dist_w: weight of the KD term.
        loss_w: weight of the student's hard-label loss (CE or CRF NLL).
        loss_function: ``"kl"`` (T^2 * KL(teacher || student softmax)), ``"mse"`` (raw logits),
            ``"posterior"`` (T^2 * KL(teacher || student CRF marginals); CRF students only) or
            ``"auto"`` (``posterior`` for a CRF student, ``kl`` otherwise).
        map_labels_by_name: when teacher and student hold the same labels in another order, map
            them by name; without it any difference is an error. Never mapped by position.
    """

    def __init__(self, teacher, temperature: float = 1.0, dist_w: float = 1.0, loss_w: float = 1.0,
                 loss_function: str = "kl", map_labels_by_name: bool = True) -> None:
        if loss_function not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown loss_function {loss_function!r}; expected one of {', '.join(LOSS_FUNCTIONS)}")
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.teacher = teacher
        self.temperature = temperature
        self.dist_w = dist_w
        self.loss_w = loss_w
        self.loss_function = loss_function
        self.map_labels_by_name = map_labels_by_name
        self.columns: Optional[List[int]] = None
        self.cache: Optional[TeacherLogitsCache] = None
        self.sentences: Optional[List[List[str]]] = None
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def check_labels(self, student_labels: LabelVocab) -> None:
        """Refuse mismatched label lists; set a by-name column map when only the order differs."""
        t = self.teacher.labels
        if t.labels == student_labels.labels:
            self.columns = None
            return
        if set(t.labels) == set(student_labels.labels) and self.map_labels_by_name:
            self.columns = [t.label2id[l] for l in student_labels.labels]
            logger.info("teacher and student label orders differ: mapping teacher logits by label name")
            return
        only_t = sorted(set(t.labels) - set(student_labels.labels))
        only_s = sorted(set(student_labels.labels) - set(t.labels))
        raise LabelMismatchError(f"teacher and student labels differ: teacher-only {only_t}, student-only {only_s}"
                                 + ("" if only_t or only_s else " (same labels, other order; map_labels_by_name is off)"))

    def attach(self, student_labels: LabelVocab, sentences: Sequence[Sequence[str]],
               cache: Optional[TeacherLogitsCache] = None) -> None:
        """Bind the training sentences (``Batch.index`` refers to them) and optionally their cache."""
        self.check_labels(student_labels)
        if cache is not None:
            if len(cache) != len(sentences):
                raise ValueError(f"cache holds {len(cache)} sentences, training data {len(sentences)}")
            if cache.labels != self.teacher.labels.labels:
                raise LabelMismatchError("cache was built with another label list")
        self.sentences = [list(s) for s in sentences]
        self.cache = cache

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """Teacher logits aligned to the batch's words and the student's label order, (B, L, C)."""
        idx = batch.index.tolist()
        L = batch.mask.size(1)
        if self.cache is not None:
            out = self.cache.batch(idx, L, self.columns)
        else:
            if self.sentences is None:
                raise RuntimeError("call attach() before computing teacher logits")
            arrays = self.teacher.word_logits([self.sentences[i] for i in idx], batch_size=len(idx))
            C = arrays[0].shape[1]
            out = torch.zeros(len(idx), L, C)
            for b, a in enumerate(arrays):
                out[b, : len(a)] = torch.from_numpy(a)
            if self.columns is not None:
                out = out[..., self.columns]
        return out.to(batch.mask.device)

    def loss_for(self, student) -> str:
        """The KD loss used for ``student`` (resolves ``auto``; ``posterior`` needs a CRF)."""
        has_crf = getattr(student, "crf", None) is not None
        if self.loss_function == "auto":
            return "posterior" if has_crf else "kl"
        if self.loss_function == "posterior" and not has_crf:
            raise ConfigError("kd.loss_function (--kd_loss_fn) posterior needs a CRF student (--use_crf)")
        return self.loss_function

    def kd_loss(self, student, emissions: torch.Tensor, teacher_logits: torch.Tensor, batch: Batch,
                reduction: str = "sum") -> torch.Tensor:
        """KD term summed (or averaged) over real words; ``emissions`` (B, L, C) from ``student``."""
        kind = self.loss_for(student)
        if kind == "kl":
            return losses.kd_kl(emissions, teacher_logits, batch.mask, self.temperature, batch.weight, reduction)
        if kind == "posterior":
            log_q = student.crf.log_marginals(emissions, batch.mask, self.temperature)  # (B, L, C)
            return losses.kd_posterior(log_q, teacher_logits, batch.mask, self.temperature, batch.weight, reduction)
        return losses.kd_mse(emissions, teacher_logits, batch.mask, batch.weight, reduction)

    def loss(self, student, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """Combined loss for one batch: (sum over real words, number of real words).

        Gold (or pseudo) labels count where ``batch.tags`` != -100; KD counts on every real word.
        """
        emissions = student(batch)  # (B, L, C)
        teacher = self.teacher_logits(batch)  # (B, L, C)
        total = self.dist_w * self.kd_loss(student, emissions, teacher, batch)
        if batch.tags is not None and self.loss_w:
            gold, _ = student.gold_loss(emissions, batch)
            total = total + self.loss_w * gold
        return total, batch.mask.sum()
