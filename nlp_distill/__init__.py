"""nlp-distill: distil transformer sequence taggers into small, fast BiLSTM / ID-CNN students.

Library use::

    from nlp_distill import NeuralTagger, TransformerTokenClassifier, TeacherStudentDistill
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module; imported lazily so `import nlp_distill` and the CLI start fast
_EXPORTS = {
    "Sentence": "nlp_distill.data.conll",
    "read_conll": "nlp_distill.data.conll",
    "write_conll": "nlp_distill.data.conll",
    "LabelVocab": "nlp_distill.data.labels",
    "load_data_dir": "nlp_distill.data.dataset_dir",
    "TransformerTokenClassifier": "nlp_distill.models.transformer",
    "NeuralTagger": "nlp_distill.models.neural_tagger",
    "TeacherStudentDistill": "nlp_distill.distill.teacher_student",
    "TeacherLogitsCache": "nlp_distill.distill.teacher_cache",
    "TeacherEnsemble": "nlp_distill.distill.ensemble",
    "augment_corpus": "nlp_distill.data.augment",
    "load_model": "nlp_distill.models.loader",
    "build_student": "nlp_distill.models.student",
    "load_teacher": "nlp_distill.distill.teachers",
    "teacher_scores": "nlp_distill.distill.teachers",
    "teacher_labels": "nlp_distill.distill.teachers",
    "label_augmented": "nlp_distill.distill.transfer_set",
    "label_text": "nlp_distill.distill.transfer_set",
    "label_copies_in_memory": "nlp_distill.distill.transfer_set",
    "TransferStore": "nlp_distill.distill.transfer_store",
    "evaluate_split": "nlp_distill.metrics",
    "pipeline": "nlp_distill.pipelines",
    "NerPipeline": "nlp_distill.pipelines",
    "tokenize": "nlp_distill.data.tokenize",
    "pseudo_label": "nlp_distill.distill.pseudo_label",
    "Trainer": "nlp_distill.training.trainer",
    "TrainResult": "nlp_distill.training.result",
    "train_student": "nlp_distill.training.student",
    "distil_student": "nlp_distill.training.student",
    "fit_transformer": "nlp_distill.training.fit",
    "train_teacher": "nlp_distill.training.fit",
    "distil_transformer": "nlp_distill.training.fit",
    "assemble_transfer_set": "nlp_distill.distill.transfer_set",
    "TransferSet": "nlp_distill.distill.transfer_set",
    "tagging_metrics": "nlp_distill.metrics",
    "cross_validate": "nlp_distill.evaluation.crossval",
    "CrossvalSpec": "nlp_distill.evaluation.crossval",
    "Recipe": "nlp_distill.evaluation.crossval",
    "TrainerConfig": "nlp_distill.config",
    "TaggerConfig": "nlp_distill.config",
    "TransformerConfig": "nlp_distill.config",
    "KDConfig": "nlp_distill.config",
    "PseudoConfig": "nlp_distill.config",
    "AugmentConfig": "nlp_distill.config",
    "StudentDataConfig": "nlp_distill.config",
    "TeacherTrainerConfig": "nlp_distill.config",
    "StudentTrainerConfig": "nlp_distill.config",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nlp_distill' has no attribute {name!r}")
