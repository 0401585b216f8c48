"""Softmax taggers (teachers, transformer students, softmax students, pseudo-labels) decode the
most probable tag sequence their scheme allows: checked against brute-force enumeration."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nlp_distill.data.labels import LabelVocab, is_valid
from nlp_distill.modules.viterbi import best_valid_paths, log_softmax


def _brute_force(logits: np.ndarray, labels: LabelVocab):
    """The valid sequence with the largest sum of log-probabilities, by enumeration."""
    lp = log_softmax(logits)
    best, best_score = None, -np.inf
    for seq in itertools.product(range(len(labels)), repeat=len(logits)):
        if not is_valid(labels.decode(list(seq)), labels.scheme):
            continue
        score = sum(lp[t, c] for t, c in enumerate(seq))
        if score > best_score:
            best, best_score = list(seq), score
    return best


@pytest.mark.parametrize("tags", [["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
                                  ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]])
def test_best_valid_paths_match_brute_force(tags):
    labels = LabelVocab(tags)
    rng = np.random.default_rng(len(tags))
    sents = [rng.normal(0, 3, size=(n, len(tags))).astype(np.float32) for n in (1, 2, 3, 4, 1, 3)]
    got = best_valid_paths(sents + [np.zeros((0, len(tags)), np.float32)], labels)
    assert got[-1] == []
    for lg, path in zip(sents, got):
        assert path == _brute_force(lg, labels)
        assert is_valid(labels.decode(path), labels.scheme)


def test_an_orphan_inside_tag_is_not_decoded():
    """The case argmax gets wrong: 'I-LOC' most probable right after 'O'."""
    labels = LabelVocab(["O", "B-LOC", "I-LOC"])
    lg = np.log(np.array([[0.9, 0.05, 0.05], [0.1, 0.4, 0.5], [0.1, 0.1, 0.8]], np.float32))
    assert labels.decode(lg.argmax(-1).tolist()) == ["O", "I-LOC", "I-LOC"]
    assert labels.decode(best_valid_paths([lg], labels)[0]) == ["O", "B-LOC", "I-LOC"]


def test_io_and_plain_tags_keep_argmax():
    for tags in (["O", "I-PER", "I-LOC"], ["NN", "VB", "DT"]):
        labels = LabelVocab(tags)
        lg = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
        assert best_valid_paths([lg], labels)[0] == lg.argmax(-1).tolist()


def test_teacher_and_pseudo_labels_decode_valid_sequences(model_folders):
    """The tiny random teacher's argmax holds orphan I- tags; its predictions and pseudo-labels don't."""
    from nlp_distill.distill.pseudo_label import pseudo_tags
    from nlp_distill.models.loader import load_model
    from tests.model_zoo import TRAIN

    teacher = load_model(model_folders["teacher"])
    sents = [s.tokens for s in TRAIN[:40]]
    logits = teacher.word_logits(sents)
    raw = [teacher.labels.decode(l.argmax(-1).tolist()) for l in logits]
    assert any(not is_valid(t, teacher.labels.scheme) for t in raw)  # the fault the decoder removes
    pred = teacher.predict(sents)
    assert all(is_valid(t, teacher.labels.scheme) for t in pred)
    assert pred == [teacher.labels.decode(p) for p in best_valid_paths(logits, teacher.labels)]
    assert teacher.predict_with_probs(sents)[0] == pred
    assert [pseudo_tags(l, teacher.labels)[0] for l in logits] == pred


def test_softmax_student_decodes_valid_sequences():
    from nlp_distill.config import TaggerConfig
    from nlp_distill.models.neural_tagger import NeuralTagger
    from tests.model_zoo import LABELS, TRAIN

    torch.manual_seed(0)
    student = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8,
                                              precision="fp32", use_crf=False), TRAIN, LABELS).eval()
    with torch.no_grad():
        student.proj.weight.normal_(0, 1.0)
    sents = [s.tokens for s in TRAIN[:40]]
    pred = student.predict(sents)
    assert all(is_valid(t, student.labels.scheme) for t in pred)
    b = student.encode(TRAIN[:40]).collate(list(range(40)))
    with torch.no_grad():
        em = student(b)  # (B, L, C)
    raw = [student.labels.decode(em[i, : len(s)].argmax(-1).tolist()) for i, s in enumerate(sents)]
    assert any(not is_valid(t, student.labels.scheme) for t in raw)  # what argmax would have given
    assert pred == [student.labels.decode(p) for p in best_valid_paths([em[i, : len(s)].numpy()
                                                                         for i, s in enumerate(sents)], student.labels)]


def test_onnx_teacher_decodes_like_the_torch_teacher(model_folders):
    pytest.importorskip("onnxruntime")
    from nlp_distill.export.runtime import OnnxTransformer
    from nlp_distill.models.loader import load_model
    from tests.model_zoo import TRAIN

    sents = [s.tokens for s in TRAIN[:40]]
    onnx = OnnxTransformer.from_pretrained(model_folders["onnx_teacher"])
    pred = onnx.predict(sents)
    assert all(is_valid(t, onnx.labels.scheme) for t in pred)
    assert pred == load_model(model_folders["teacher"]).predict(sents)
