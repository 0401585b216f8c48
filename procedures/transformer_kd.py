"""``nlp-train transformer_kd``: a transformer student cut from its teacher (kept layers, copied
weights) and distilled with logits KD (from one teacher or an ensemble), hidden-state MSE and
attention KL on mapped layers; or another encoder (``--student_model_name_or_path``) distilled
with word-level logits KD alone. The run itself is ``distil_transformer``."""
from __future__ import annotations

from typing import Any, Dict

from nlp_distill.config import (AugmentConfig, LayerDropModelConfig, TeacherTrainerConfig, TrainerConfig,
                                TransformerKDConfig, TransformerStudentConfig)
from nlp_distill.training.fit import distil_transformer
from procedures.common import RunOptions, run_on_data


def do_transformer_kd(data_dir, output_dir, model: LayerDropModelConfig = LayerDropModelConfig(),
                      trainer: TrainerConfig = TeacherTrainerConfig(), kd: TransformerKDConfig = TransformerKDConfig(),
                      student: TransformerStudentConfig = TransformerStudentConfig(),
                      augment: AugmentConfig = AugmentConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Distil ``kd.teacher_model_path`` into a transformer student on ``data_dir`` (+ augmented copies)."""
    sections = {"task": "transformer_kd", "data_dir": str(data_dir), "model": model, "trainer": trainer, "kd": kd,
                "student": student, "augment": augment}
    return run_on_data(data_dir, output_dir, sections, run, distil_transformer, labels_of_teacher=kd.teacher_model_path,
                       kd=kd, student=student, model=model, trainer=trainer, augment=augment)
