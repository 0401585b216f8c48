"""One tiny model folder of every kind the library saves (random weights, built in seconds): softmax
and CRF students, a compact student, a transformer teacher and a transformer student, ONNX
exports of the CRF student and of the teacher (when onnx and onnxruntime are installed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from nlp_distill.config import TaggerConfig, TransformerConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.data.labels import LabelVocab
from nlp_distill.models.neural_tagger import NeuralTagger
from tests.conftest import TINY

TRAIN = read_conll(TINY / "train.txt")
LABELS = LabelVocab.from_sentences(s.tags for s in TRAIN)


def _student(folder, **cfg) -> None:
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, precision="fp32",
                                            **cfg), TRAIN, LABELS)
    with torch.no_grad():  # scores far from uniform, and entities in the output
        model.proj.weight.normal_(0, 1.0)
        if model.crf is not None:
            model.crf.trans.normal_(0, 1.0)
    model.save_pretrained(folder)


def build_model_folders(root: Path, encoder_dir: Path) -> Dict[str, Path]:
    """Kind name -> model folder under ``root``; ``encoder_dir``: the tiny BERT of ``tiny_encoder_dir``."""
    from nlp_distill.export.compact import compact_tagger
    from nlp_distill.models.layer_drop import drop_layers
    from nlp_distill.models.transformer import TransformerTokenClassifier

    _student(root / "student")
    _student(root / "crf", use_crf=True, model_type="id-cnn")
    compact_tagger(root / "crf", root / "compact")
    torch.manual_seed(0)
    teacher = TransformerTokenClassifier.from_pretrained(str(encoder_dir), labels=LABELS, config=TransformerConfig(
        max_seq_length=16, stride=4, precision="fp32"))  # 16 sub-tokens: the longer texts take several windows
    with torch.no_grad():
        teacher.model.classifier.weight.normal_(0, 1.0)
    teacher.save_pretrained(root / "teacher")
    drop_layers(teacher, [1]).save_pretrained(root / "transformer_student")
    out = {k: root / k for k in ("student", "crf", "compact", "teacher", "transformer_student")}
    try:
        from nlp_distill.export.backends import export_model

        import onnxruntime  # noqa: F401

        export_model(root / "crf", root / "onnx_crf")
        export_model(root / "teacher", root / "onnx_teacher")
        out.update(onnx_crf=root / "onnx_crf", onnx_teacher=root / "onnx_teacher")
    except ModuleNotFoundError:
        pass
    return out


