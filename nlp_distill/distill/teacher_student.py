"""TeacherStudentDistill: a frozen teacher (or ensemble) supplies word-level logits and hidden
states; the combined loss is ``student_w * gold + dist_w * KD + hidden_w * H`` (``KDConfig``)."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nlp_distill.config import KDConfig
from nlp_distill.data.batching import Batch
from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill import losses
from nlp_distill.distill.objectives import resolve_kd_loss
from nlp_distill.distill.teacher_cache import TeacherLogitsCache
from nlp_distill.errors import LabelMismatchError

logger = logging.getLogger(__name__)



class TeacherStudentDistill:
    """Distillation wrapper around a teacher; reads every setting from ``kd`` at its point of use.

    Loss per batch (see ``KDConfig`` for the formula and the staged schedule)::

        kd.student_w * gold + kd.dist_w * KD(kd.loss_function, kd.temperature) + kd.hidden_w * H

    Args:
        teacher: a ``TransformerTokenClassifier`` or ``TeacherEnsemble`` (frozen here: eval mode,
            ``requires_grad=False``; its parameters never reach an optimiser).
        kd: the distillation settings.
        map_labels_by_name: when teacher and student hold the same labels in another order, map
            them by name; without it any difference is an error. Never mapped by position.

    Attributes:
        projection: ``Linear(student H -> teacher H)`` for the hidden-state loss, trained with the
            student (``init_projection``); ``None`` when the loss is off.
        epoch: the current epoch (0-based), set by the training loop; selects the stage.
        last_parts: the weighted gold / kd / hidden sums of the last ``loss`` call (for logs).
    """

    def __init__(self, teacher, kd: KDConfig = KDConfig(), map_labels_by_name: bool = True) -> None:
        self.teacher = teacher
        self.kd = kd
        self.map_labels_by_name = map_labels_by_name
        self.columns: Optional[List[int]] = None
        self.cache: Optional[TeacherLogitsCache] = None
        self.sentences: Optional[List[List[str]]] = None
        self.projection: Optional[nn.Linear] = None
        self.epoch = 0
        self.last_parts: Dict[str, float] = {}
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    @property
    def uses_hidden(self) -> bool:
        """Whether any epoch uses the hidden-state loss (then teacher hidden states are needed)."""
        return self.kd.uses_hidden

    def init_projection(self, student_dim: int, teacher_dim: Optional[int] = None) -> nn.Linear:
        """Create the learned projection of the student's encoder output onto the teacher's width."""
        if teacher_dim is None:
            teacher_dim = (self.cache.hidden.shape[1] if self.cache is not None and self.cache.hidden is not None
                           else self.teacher.members[0].model.config.hidden_size)
        self.projection = nn.Linear(student_dim, teacher_dim)
        return self.projection

    def weights(self) -> Dict[str, float]:
        """Weights of the gold, KD and hidden terms in the current epoch."""
        kd = self.kd
        if not kd.stages:
            return {"gold": kd.student_w, "kd": kd.dist_w, "hidden": kd.hidden_w}
        e1, e2 = kd.stages
        if self.epoch < e1:
            return {"gold": 0.0, "kd": 0.0, "hidden": kd.hidden_w or 1.0}
        if self.epoch < e1 + e2:
            return {"gold": 0.0, "kd": kd.dist_w or 1.0, "hidden": 0.0}
        return {"gold": kd.student_w or 1.0, "kd": 0.0, "hidden": 0.0}

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

    def attach(self, student_labels: LabelVocab, sentences: Optional[Sequence[Sequence[str]]],
               cache: Optional[TeacherLogitsCache] = None) -> None:
        """Bind the training sentences (``Batch.index`` refers to them) and optionally their cache;
        with a cache the sentences may be ``None`` (the cache alone serves every batch)."""
        self.check_labels(student_labels)
        if cache is None and sentences is None:
            raise ValueError("attach() needs the sentences or a cache of their teacher logits")
        if cache is not None:
            if sentences is not None and len(cache) != len(sentences):
                raise ValueError(f"cache holds {len(cache)} sentences, training data {len(sentences)}")
            if cache.labels != self.teacher.labels.labels:
                raise LabelMismatchError("cache was built with another label list")
        self.sentences = [list(s) for s in sentences] if sentences is not None else None
        self.cache = cache

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """Teacher logits aligned to the batch's words and the student's label order, (B, L, C)."""
        return self.teacher_targets(batch, hidden=False)[0]

    @torch.no_grad()
    def teacher_targets(self, batch: Batch, hidden: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(logits (B, L, C) in the student's label order, hidden states (B, L, H) or ``None``)."""
        idx = batch.index.tolist()
        L = batch.mask.size(1)
        if self.cache is not None:
            logits = self.cache.batch(idx, L, self.columns)
            states = self.cache.hidden_batch(idx, L) if hidden else None
        else:
            if self.sentences is None:
                raise RuntimeError("call attach() before computing teacher logits")
            arrays, hid = self.teacher.word_outputs([self.sentences[i] for i in idx], len(idx), hidden=hidden)
            logits, states = _pad(arrays, L), (_pad(hid, L) if hid is not None else None)
            if self.columns is not None:
                logits = logits[..., self.columns]
        dev = batch.mask.device
        return logits.to(dev), (states.to(dev) if states is not None else None)

    def loss_for(self, student) -> str:
        """The KD loss used for ``student`` (resolves ``auto``; ``posterior`` needs a CRF)."""
        return resolve_kd_loss(self.kd.loss_function, getattr(student, "crf", None) is not None).name

    def kd_loss(self, student, emissions: torch.Tensor, teacher_logits: torch.Tensor, batch: Batch,
                reduction: str = "sum") -> torch.Tensor:
        """KD term summed (or averaged) over real words; ``emissions`` (B, L, C) from ``student``
        (``objectives.KD_LOSSES``; the student's distribution: its CRF marginals, else its softmax)."""
        crf = getattr(student, "crf", None)
        entry = resolve_kd_loss(self.kd.loss_function, crf is not None)

        def log_probs(t: float) -> torch.Tensor:  # (B, L, C)
            return crf.log_marginals(emissions, batch.mask, t) if crf is not None else torch.log_softmax(emissions / t, -1)

        return entry(emissions, teacher_logits, batch.mask, self.kd.temperature, batch.weight, reduction, log_probs)

    def hidden_loss(self, student_h: torch.Tensor, teacher_h: torch.Tensor, batch: Batch,
                    reduction: str = "sum") -> torch.Tensor:
        """``kd.hidden_loss`` between the projected student encoder output (B, L, H_s) and the
        teacher's hidden states (B, L, H_t), over real words."""
        if self.projection is None:
            raise RuntimeError("call init_projection() before using the hidden-state loss")
        fn = losses.hidden_mse if self.kd.hidden_loss == "mse" else losses.cosine
        return fn(self.projection(student_h), teacher_h, batch.mask, batch.weight, reduction)

    def loss(self, student, batch: Batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """Combined loss for one batch: (sum over real words, number of real words).

        Gold (or pseudo) labels count where ``batch.tags`` != -100; KD and the hidden-state loss
        count on every real word. Terms whose weight is 0 in this epoch are not computed.
        """
        w = self.weights()
        h = student.features(batch)  # (B, L, H_s)
        emissions = student.proj(h)  # (B, L, C)
        logits, states = self.teacher_targets(batch, hidden=w["hidden"] > 0)
        total = emissions.sum() * 0.0
        parts: Dict[str, torch.Tensor] = {}
        if w["kd"]:
            parts["kd"] = w["kd"] * self.kd_loss(student, emissions, logits, batch)
        if w["hidden"]:
            parts["hidden"] = w["hidden"] * self.hidden_loss(h, states, batch)
        if w["gold"] and batch.tags is not None:
            parts["gold"] = w["gold"] * student.gold_loss(emissions, batch)[0]
        for v in parts.values():
            total = total + v
        self.last_parts = {k: float(v.detach()) for k, v in parts.items()}
        return total, batch.mask.sum()


def _pad(arrays: Sequence[np.ndarray], L: int) -> torch.Tensor:
    """Per-sentence (n_i, D) arrays -> (B, L, D) float32, zeros on padding."""
    out = torch.zeros(len(arrays), L, arrays[0].shape[1])
    for b, a in enumerate(arrays):
        out[b, : len(a)] = torch.from_numpy(a)
    return out
