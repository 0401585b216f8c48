"""``nlp-train transformer_kd``: a transformer student cut from its teacher (kept layers, copied
weights) and distilled with logits KD, hidden-state MSE and attention KL on mapped layers."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from nlp_distill.config import (AugmentConfig, KDConfig, TeacherTrainerConfig, TrainerConfig, TransformerConfig,
                                TransformerStudentConfig)
from nlp_distill.data.augment import augment_corpus
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.distill.pseudo_label import label_from_logits, write_pseudo_labeled
from nlp_distill.distill.transformer_kd import TransformerDistill, layer_mapping
from nlp_distill.errors import ConfigError
from nlp_distill.models.layer_drop import drop_layers, encoder_layers, evenly_spaced
from nlp_distill.training.checkpoint import seed_everything
from procedures.common import RunOptions, pick_device, run_folder
from procedures.tagger_kd import load_teacher, teacher_scores
from procedures.transformer_token import fit_transformer

logger = logging.getLogger(__name__)


def teacher_labeled_augmentation(teacher, d: TaggingData, augment: AugmentConfig, path) -> List[Sentence]:
    """``augment.copies`` augmented copies of each training sentence, tagged by the teacher's argmax
    (the same operators as the tagger students), written to ``path``."""
    if not augment.copies:
        return []
    aug = augment_corpus(d.train, augment.copies, augment.ops, augment.seed, d.labels.scheme)
    logits = teacher.word_logits([s.tokens for s in aug])
    labeled = [label_from_logits(s.tokens, lg, teacher.labels) for s, lg in zip(aug, logits)]
    write_pseudo_labeled(path, labeled)
    return [p.sentence for p in labeled]


def do_transformer_kd(data_dir, output_dir, model: TransformerConfig = TransformerConfig(),
                      trainer: TrainerConfig = TeacherTrainerConfig(), kd: KDConfig = KDConfig(),
                      student: TransformerStudentConfig = TransformerStudentConfig(),
                      augment: AugmentConfig = AugmentConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Cut a student from ``kd.teacher_model_path`` and distil it on ``data_dir`` (+ augmented copies).

    ``model`` supplies the student's batch size (its window settings are the teacher's).
    """
    sections = {"task": "transformer_kd", "data_dir": str(data_dir), "model": model, "trainer": trainer, "kd": kd,
                "student": student, "augment": augment}
    with run_folder(output_dir, sections, run) as out:
        if len(kd.teacher_model_path) != 1:
            raise ConfigError("transformer_kd takes one --teacher_model_path (its layers are copied into the student)")
        seed_everything(trainer.seed)
        d = load_data_dir(data_dir, encoding=run.encoding)
        teacher = load_teacher(kd, pick_device(run.device))
        if teacher.labels != d.labels:
            raise ConfigError(f"the teacher's labels {teacher.labels.labels} differ from {data_dir}'s {d.labels.labels}")
        scores = teacher_scores(teacher, d)
        n_teacher = len(encoder_layers(teacher.model))
        kept = student.student_layers or evenly_spaced(n_teacher, student.num_student_layers)
        clf = drop_layers(teacher, kept)
        ignored = [f for f in ("model_name_or_path", "max_seq_length", "stride", "pooling", "holdout_fold")
                   if getattr(model, f) != getattr(TransformerConfig(), f)]
        if ignored:
            logger.warning("ignored for a layer-dropped student (it keeps the teacher's tokenizer and windows): %s",
                           ", ".join(ignored))
        clf.config = clf.config.replace(batch_size=model.batch_size, holdout_fold=[])  # a student of all of train
        mapping = layer_mapping(student, kept, n_teacher)
        logger.info("student: teacher layers %s of %d (%.1fM of %.1fM parameters); layer pairs %s", kept, n_teacher,
                    clf.num_parameters() / 1e6, teacher.num_parameters() / 1e6, mapping)
        train = list(d.train) + teacher_labeled_augmentation(teacher, d, augment, out / "augmented.txt")
        dist = TransformerDistill(teacher, clf, kd, student, mapping)
        return fit_transformer(out, clf, train, d, trainer, run, loss_fn=lambda b: (*dist.loss(b), dist.last_parts),
                               extra_metrics={"teacher": scores, "student_layers": kept})
