"""Teachers from saved folders (one model, an ensemble, out-of-fold teachers) and their own scores."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Union

from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab, is_plain_tag_set, normalize_tag
from nlp_distill.distill.ensemble import OutOfFoldTeachers, TeacherEnsemble
from nlp_distill.errors import ConfigError, LabelMismatchError
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.folders import NLP_DISTILL_FILE, hf_classifier_labels, read_model_json
from nlp_distill.models.loader import TEACHER, TEACHER_MADE_BY, expand_model_paths, load_model, model_class_of
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


def _saved_labels(path: str) -> List[str]:
    """The label list a teacher folder predicts, read from its files (no weights loaded): this
    library's ``nlp_distill.json``, or a plain HF folder's ``id2label`` (span spellings
    normalised as the data reader normalises tags)."""
    cls, folder = model_class_of(path)
    if cls != TEACHER.model_class:
        load_model(path, expect=TEACHER.model_class)  # the loader's own error: damaged, other kind, no model
        raise ConfigError(f"{path} holds no teacher; a teacher comes from `{TEACHER_MADE_BY}`")
    if (folder / NLP_DISTILL_FILE).is_file():
        return list(read_model_json(folder / NLP_DISTILL_FILE)["labels"])
    hf = hf_classifier_labels(folder)
    if hf is None:
        raise ConfigError(f"{folder} holds an encoder without a classification head: it predicts no labels yet; "
                          f"fine-tune it first (`{TEACHER_MADE_BY}`)")
    return hf if is_plain_tag_set(hf) else [normalize_tag(l) for l in hf]


def teacher_labels(paths: Union[str, Sequence[str]]) -> LabelVocab:
    """The labels the teacher(s) of ``paths`` predict (``id2label`` order of the first), read
    without loading any weights: a distilled student's label list when no ``labels.txt`` is
    given. An ensemble's members must hold the same labels.

    Raises:
        ConfigError: no path, or a folder without a teacher.
        LabelMismatchError: members with different label sets (one line, both sides).
    """
    given = teacher_paths(paths)
    if not given:
        raise ConfigError("--teacher_model_path is required (a folder written by `nlp-train transformer_token`)")
    folders = expand_model_paths(given)
    first: Optional[List[str]] = None
    for k, path in enumerate(folders):
        labels = _saved_labels(path)
        if first is None:
            first = labels
        elif set(labels) != set(first):
            raise LabelMismatchError(f"--teacher_model_path: the teachers disagree on their labels: {path} lacks "
                                     f"{sorted(set(first) - set(labels)) or 'none'} and adds "
                                     f"{sorted(set(labels) - set(first)) or 'none'} (against {folders[0]}); an "
                                     "ensemble's members must predict the same labels")
    return LabelVocab(first)  # type: ignore[arg-type]


def data_labels(data_dir, paths: Union[str, Sequence[str]], encoding: str = "utf-8") -> LabelVocab:
    """The labels a student distilled from the teacher(s) of ``paths`` on ``data_dir`` gets:
    ``data_dir/labels.txt`` when present, else the teacher's (``teacher_labels``); the data's
    tags are checked against them (``load_data_dir``)."""
    return load_data_dir(data_dir, encoding=encoding, teacher_labels=teacher_labels(paths), gold_optional=True).labels


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
    beside a student's: ``{"members", "dev", "test"}`` (``None`` for a split without sentences)."""
    n = len(teacher.members)
    out = {"members": n, "dev": evaluate_split(teacher.predict, dev) if dev else None,
           "test": evaluate_split(teacher.predict, test) if test else None}
    logger.info("teacher%s: dev F1 %s, test F1 %s", f" (ensemble of {n})" if n > 1 else "",
                f"{out['dev']['f1']:.4f}" if out["dev"] else "n/a (no gold dev)",
                f"{out['test']['f1']:.4f}" if out["test"] else "n/a")
    return out
