"""Distillation between transformers (a layer-dropped student and its teacher, or another
encoder taught by word-level logits alone): word-level logits KD, hidden-state MSE and attention
KL on mapped layers, gold CE.
The teacher runs under ``no_grad`` on the same windows every step (its hidden states and
attention maps are too large to cache); an ensemble's word logits are computed once instead and
arrive with the batch, while the member the student was cut from gives the hidden/attention
targets."""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Dict, List, Sequence, Tuple

import torch

from nlp_distill.config import TransformerKDConfig, TransformerStudentConfig
from nlp_distill.data.alignment import pool_words
from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill import losses
from nlp_distill.distill.objectives import resolve_kd_loss
from nlp_distill.errors import ConfigError
from nlp_distill.models.layer_drop import bottom_layers, drop_layers, encoder_layers
from nlp_distill.models.transformer import TransformerTokenClassifier
from nlp_distill.modules.masked_loss import ce

logger = logging.getLogger(__name__)


def layer_mapping(cfg: TransformerStudentConfig, kept: Sequence[int], n_teacher: int) -> List[Tuple[int, int]]:
    """(teacher layer, student layer) pairs, 0-based: ``cfg.layer_mappings`` or each student layer
    with the teacher layer it was copied from."""
    if not cfg.layer_mappings:
        return [(t, s) for s, t in enumerate(kept)]
    pairs = []
    for item in cfg.layer_mappings:
        try:
            t, s = (int(x) for x in item.split(":"))
        except ValueError:
            raise ConfigError(f"--layer_mappings {item!r}: expected TEACHER:STUDENT, e.g. 5:2") from None
        if not (0 <= t < n_teacher and 0 <= s < len(kept)):
            raise ConfigError(f"--layer_mappings {item}: teacher layers are 0..{n_teacher - 1}, student 0..{len(kept) - 1}")
        pairs.append((t, s))
    return pairs


def transformer_student(source, student: TransformerStudentConfig, kd: TransformerKDConfig, labels: LabelVocab
                        ) -> Tuple[TransformerTokenClassifier, List[int], List[Tuple[int, int]]]:
    """The student and its (kept layers, layer pairs): layers cut from ``source``, or a new
    classifier on ``student.model_name_or_path`` (no layers kept, no pairs).

    Raises:
        ConfigError: a separate encoder asked for layer-wise losses or layers to keep.
    """
    n_teacher = len(encoder_layers(source.model))
    if student.model_name_or_path:
        asked = [f for f, v in (("--kd_hidden_w", kd.hidden_w), ("--kd_attention_w", student.attention_w),
                                ("--student_layers", student.student_layers),
                                ("--layer_mappings", student.layer_mappings)) if v]
        if asked:
            raise ConfigError(f"--student_model_name_or_path {student.model_name_or_path}: {', '.join(asked)} "
                              "need a student cut from the teacher (layers of the same model); drop them")
        cfg = source.config.replace(model_name_or_path=student.model_name_or_path)
        clf = TransformerTokenClassifier.from_pretrained(student.model_name_or_path, labels, cfg)
        logger.info("student: %s (%.1fM parameters), taught by a %d-layer teacher of %.1fM through word-level logits",
                    student.model_name_or_path, clf.num_parameters() / 1e6, n_teacher, source.num_parameters() / 1e6)
        return clf, [], []
    kept = student.student_layers or bottom_layers(n_teacher, student.num_student_layers)
    clf = drop_layers(source, kept)
    mapping = layer_mapping(student, kept, n_teacher)
    logger.info("student: teacher layers %s of %d (%.1fM of %.1fM parameters); layer pairs %s", kept, n_teacher,
                clf.num_parameters() / 1e6, source.num_parameters() / 1e6, mapping)
    return clf, kept, mapping


class TransformerDistill:
    """Loss for a transformer student: per window batch, summed over owned words (the Trainer
    divides by their number)::

        student_w * CE(gold) + dist_w * KD(word logits)
          + hidden_w * Σ_mapped H(hidden states) + attention_w * Σ_mapped KL(attention)

    KD is ``T^2 KL`` (``kd.loss_function`` kl / auto), MSE on raw word logits (mse) or the
    correlation loss ``dist`` (``losses.kd_dist``); H is
    ``kd.hidden_loss`` (mse or cosine). Hidden and attention terms are summed over real sub-tokens
    of the mapped layers.
    """

    def __init__(self, teacher, student, kd: TransformerKDConfig, cfg: TransformerStudentConfig,
                 mapping: Sequence[Tuple[int, int]]) -> None:
        self.kd_entry = resolve_kd_loss(kd.loss_function, has_crf=False)  # no CRF: posterior is refused
        t_h, s_h = teacher.model.config.hidden_size, student.model.config.hidden_size
        if kd.hidden_w and t_h != s_h:
            raise ConfigError(f"hidden-state loss needs equal widths (teacher {t_h}, student {s_h})")
        self.teacher, self.student, self.kd, self.cfg, self.mapping = teacher, student, kd, cfg, list(mapping)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.attention_w:  # the fused attention kernels do not return attention maps
            teacher.model.set_attn_implementation("eager")
            student.model.set_attn_implementation("eager")
        self.last_parts: Dict[str, float] = {}

    def _run(self, model, batch: Dict[str, torch.Tensor]) -> SimpleNamespace:
        """Logits, hidden states and attentions in fp32 (the forward may run under bf16 autocast)."""
        with model.autocast():
            out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              output_hidden_states=bool(self.kd.hidden_w), output_attentions=bool(self.cfg.attention_w))
        as_fp32 = lambda xs: tuple(x.float() for x in xs) if xs is not None else None
        return SimpleNamespace(logits=out.logits.float(), hidden_states=as_fp32(out.hidden_states),
                               attentions=as_fp32(out.attentions))

    def loss(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and the number of owned words. ``batch["teacher_logits"]`` (B, W, C), when
        present, are the logit targets (e.g. an ensemble's, computed once); the teacher then runs
        only for the hidden and attention terms."""
        kd, pool = self.kd, self.student.config.pooling
        cached = batch.get("teacher_logits")
        if cached is None and self.student.tokenizer is not self.teacher.tokenizer:
            # a student with its own tokenizer cannot feed its input ids to the teacher
            raise ConfigError("a student with its own encoder needs the teacher's word logits in every batch "
                              "(teacher_logits): compute them once with label_copies_in_memory(soft_targets=True)")
        t = None
        if cached is None or kd.hidden_w or self.cfg.attention_w:
            with torch.no_grad():
                t = self._run(self.teacher, batch)
        s = self._run(self.student, batch)
        words = (batch["word_start"], batch["word_len"])
        s_words = pool_words(s.logits, *words, pool)  # (B, W, C)
        owned = batch["owned"] & batch["word_mask"]  # (B, W): each word once
        tokens = batch["attention_mask"].bool()  # (B, T)
        parts: Dict[str, torch.Tensor] = {}
        if kd.dist_w:
            t_words = cached if cached is not None else pool_words(t.logits, *words, pool)
            parts["kd"] = kd.dist_w * self.kd_entry(s_words, t_words, owned, kd.temperature, None, "sum",
                                                    lambda temp: torch.log_softmax(s_words / temp, dim=-1))  # (B, W, C)
        if kd.student_w and "labels" in batch:
            parts["gold"] = kd.student_w * ce(s_words, batch["labels"], owned, None, "sum")
        if kd.hidden_w:  # hidden_states[0] is the embedding output: layer k's output is index k + 1
            h_loss = losses.cosine if kd.hidden_loss == "cosine" else losses.hidden_mse
            parts["hidden"] = kd.hidden_w * sum(h_loss(s.hidden_states[j + 1], t.hidden_states[i + 1], tokens, None, "sum")
                                                for i, j in self.mapping)
        if self.cfg.attention_w:
            parts["attention"] = self.cfg.attention_w * sum(
                losses.attention_kl(s.attentions[j], t.attentions[i], tokens, None, "sum") for i, j in self.mapping)
        total = s_words.sum() * 0.0
        for v in parts.values():
            total = total + v
        self.last_parts = {k: float(v.detach()) for k, v in parts.items()}
        return total, owned.sum()
