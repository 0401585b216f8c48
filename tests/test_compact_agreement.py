"""A compact student (``nlp-export compact``) tags like the ORIGINAL student it was made from,
not merely like a reload of itself."""
from __future__ import annotations

import pytest
import torch

from nlp_distill.config import CompactConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.export.compact import compact_tagger
from nlp_distill.io import folder_size
from nlp_distill.models.neural_tagger import NeuralTagger
from tests.conftest import TINY
from tests.model_zoo import _student

SENTS = [s.tokens for f in ("train", "dev", "test") for s in read_conll(TINY / f"{f}.txt")]


def _agreement(a, b) -> float:
    pairs = [(x, y) for s1, s2 in zip(a, b) for x, y in zip(s1, s2)]
    assert len(pairs) == sum(len(s) for s in SENTS)
    return sum(x == y for x, y in pairs) / len(pairs)


@pytest.mark.parametrize("student", [dict(use_crf=True), dict(use_crf=True, model_type="id-cnn"), dict(use_crf=False)])
def test_compact_student_tags_like_the_original(tmp_path, student):
    torch.set_num_threads(1)
    _student(tmp_path / "orig", **student)  # random weights with a decisive output layer
    original = NeuralTagger.from_pretrained(tmp_path / "orig").predict(SENTS)
    for name, storage in (("default", CompactConfig()), ("codes", CompactConfig(pq_head=0))):
        compact_tagger(tmp_path / "orig", tmp_path / name, storage)
        assert folder_size(tmp_path / name) < folder_size(tmp_path / "orig")
        assert _agreement(original, NeuralTagger.from_pretrained(tmp_path / name).predict(SENTS)) >= 0.99, name
    # the measure can fail: 4 centroids per subspace lose the words' identity
    compact_tagger(tmp_path / "orig", tmp_path / "coarse", CompactConfig(pq_head=0, pq_centroids=4))
    assert _agreement(original, NeuralTagger.from_pretrained(tmp_path / "coarse").predict(SENTS)) < 0.99
