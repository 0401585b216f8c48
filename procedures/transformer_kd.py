"""``nlp-train transformer_kd``: a transformer student cut from its teacher (kept layers, copied
weights) and distilled with logits KD (from one teacher or an ensemble), hidden-state MSE and
attention KL on mapped layers; or another encoder (``--student_model_name_or_path``) distilled
with word-level logits KD alone."""
from __future__ import annotations

from typing import Any, Dict

from nlp_distill.config import (AugmentConfig, LayerDropModelConfig, TeacherTrainerConfig, TrainerConfig,
                                TransformerKDConfig, TransformerStudentConfig)
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.ensemble import OutOfFoldTeachers, TeacherEnsemble
from nlp_distill.distill.teachers import load_teacher, teacher_scores
from nlp_distill.distill.transfer_set import label_copies_in_memory
from nlp_distill.distill.transformer_kd import TransformerDistill, transformer_student
from nlp_distill.errors import ConfigError
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.fit import fit_transformer
from nlp_distill.utils.device import pick_device
from procedures.common import RunOptions, run_folder


def do_transformer_kd(data_dir, output_dir, model: LayerDropModelConfig = LayerDropModelConfig(),
                      trainer: TrainerConfig = TeacherTrainerConfig(), kd: TransformerKDConfig = TransformerKDConfig(),
                      student: TransformerStudentConfig = TransformerStudentConfig(),
                      augment: AugmentConfig = AugmentConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Cut a student from ``kd.teacher_model_path`` and distil it on ``data_dir`` (+ augmented copies).

    Several teacher folders form an ensemble: the student is cut from the first, which also gives
    the hidden/attention targets; the logit targets are the ensemble's (mean member log-probabilities),
    computed once for every training sentence. ``model`` supplies the student's batch sizes and
    precision (its tokenizer, windows and pooling are the teacher's). ``student.model_name_or_path``
    fine-tunes that encoder instead (its own tokenizer; the teacher's window lengths and pooling),
    taught by the teacher's word-level logits, computed once.
    """
    sections = {"task": "transformer_kd", "data_dir": str(data_dir), "model": model, "trainer": trainer, "kd": kd,
                "student": student, "augment": augment}
    with run_folder(output_dir, sections, run) as out:
        seed_everything(trainer.seed)
        d = load_data_dir(data_dir, encoding=run.encoding)
        teacher = load_teacher(kd.teacher_model_path, pick_device(run.device), d.labels, kd.teacher_max_seq_len)
        if isinstance(teacher, OutOfFoldTeachers):
            raise ConfigError("transformer_kd does not route sentences to out-of-fold teachers (tagger_kd does): "
                              "give teachers trained on all of train")
        source = teacher.members[0] if isinstance(teacher, TeacherEnsemble) else teacher
        if source is teacher:  # the student cut from it predicts in the data's label order
            teacher.select_labels(d.labels)
        if teacher.labels != d.labels:
            raise ConfigError(f"the teacher's labels {teacher.labels.labels} differ from {data_dir}'s {d.labels.labels}")
        scores = teacher_scores(teacher, d.dev, d.test)
        clf, kept, mapping = transformer_student(source, student, kd, d.labels)
        clf.config = clf.config.replace(batch_size=model.batch_size, eval_batch_size=model.eval_batch_size,
                                        precision=model.precision, holdout_fold=[],  # a student of all of train
                                        head_lr=None)
        own = bool(student.model_name_or_path)  # a separate encoder: the teacher's logits are its only targets
        train, targets = label_copies_in_memory(teacher, d.train, augment, d.labels.scheme, out / "augmented.txt",
                                                soft_targets=own or source is not teacher,
                                                batch_size=kd.teacher_batch_size)
        dist = TransformerDistill(source, clf, kd, student, mapping)
        return fit_transformer(output_dir=out, model=clf, train=train, dev=d.dev, test=d.test, labels=d.labels,
                               trainer=trainer, loss_fn=lambda b: (*dist.loss(b), dist.last_parts), targets=targets,
                               extra_metrics={"teacher": scores, "student_layers": kept,
                                              "student_model": student.model_name_or_path or None},
                               device=run.device, resume=run.resume).metrics

