"""Teachers from saved folders (one model, an ensemble, out-of-fold teachers) and their own scores."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Union

from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill.ensemble import OutOfFoldTeachers, TeacherEnsemble
from nlp_distill.errors import ConfigError, LabelMismatchError
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.loader import expand_model_paths, load_model
from nlp_distill.models.transformer import TransformerTokenClassifier

logger = logging.getLogger(__name__)


def teacher_paths(paths: Union[str, Sequence[str]]) -> List[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    items = [paths] if isinstance(paths, str) else list(paths)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def _load_one(path: str, labels: Optional[LabelVocab], max_seq_len: Optional[int]) -> TransformerTokenClassifier:
    try:
        teacher = load_model(path, expect="TransformerTokenClassifier")
        if labels is not None:  # by name; teacher labels the data lacks are dropped (warning)
            teacher.select_labels(labels, reorder=False)
    except (ConfigError, LabelMismatchError) as e:
        raise type(e)(f"--teacher_model_path {path}: {e}") from None
    if max_seq_len and teacher.config.max_seq_length != max_seq_len:
        cfg = teacher.config.replace(max_seq_length=max_seq_len)
        teacher = TransformerTokenClassifier(teacher.model, teacher.tokenizer, teacher.labels, cfg)
    return teacher


def load_teacher(paths: Union[str, Sequence[str]], device="cpu", labels: Optional[LabelVocab] = None,
                 max_seq_len: Optional[int] = None):
    """The teacher saved in ``paths``, ready to label words.

    Args:
        paths: one folder (a model, a run folder, or a folder of ``seed-N/`` teachers from
            ``transformer_token --seeds``), a comma list, or a list of them. Several models form a
            ``TeacherEnsemble``; K teachers trained with ``--holdout_fold`` form
            ``OutOfFoldTeachers`` (each training sentence scored by the one that never saw it).
        device: where the teacher runs.
        labels: the data's labels; each teacher's head is cut to them by name.
        max_seq_len: sub-tokens per teacher window (default: each teacher's own).

    Returns:
        a ``TransformerTokenClassifier``, ``TeacherEnsemble`` or ``OutOfFoldTeachers`` (all with
        ``labels``, ``word_logits`` and ``predict``).

    Raises:
        ConfigError: no path, a folder without a teacher, or fold teachers mixed with others.
    """
    given = teacher_paths(paths)
    if not given:
        raise ConfigError("--teacher_model_path is required (a folder written by `nlp-train transformer_token`)")
    folders = expand_model_paths(given)  # a folder of seed-N/ teachers: all of them
    members = [_load_one(p, labels, max_seq_len) for p in folders]
    folded = [bool(m.config.holdout_fold) for m in members]
    if any(folded) and not all(folded):
        raise ConfigError("--teacher_model_path: " + ", ".join(
            p for p, f in zip(folders, folded) if f) + " were trained with --holdout_fold and the "
            "others were not: give all K fold teachers (out-of-fold targets) or none")
    if all(folded):
        teacher = OutOfFoldTeachers(members)
        logger.info("out-of-fold teachers (%d folds): each training sentence and its augmented copies are scored by "
                    "the teacher that never saw it; other text by all %d", teacher.num_folds, len(members))
    else:
        teacher = members[0] if len(members) == 1 else TeacherEnsemble(members)
    return teacher.to(device)


def teacher_scores(teacher, dev: Sequence, test: Optional[Sequence] = None) -> Dict[str, Any]:
    """The teacher's (or ensemble's) own scores on tagged ``dev`` / ``test`` sentences, to write
    beside a student's: ``{"members", "dev", "test"}`` (``test`` None without test data)."""
    n = len(getattr(teacher, "members", [teacher]))
    out = {"members": n, "dev": evaluate_split(teacher.predict, dev),
           "test": evaluate_split(teacher.predict, test) if test else None}
    logger.info("teacher%s: dev F1 %.4f, test F1 %s", f" (ensemble of {n})" if n > 1 else "", out["dev"]["f1"],
                f"{out['test']['f1']:.4f}" if out["test"] else "n/a")
    return out
