"""Teacher ensembles: mean of member log-probabilities with labels mapped by name."""
from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill.ensemble import TeacherEnsemble
from nlp_distill.errors import LabelMismatchError


class FixedTeacher(nn.Module):
    """A stand-in teacher returning fixed word logits."""

    def __init__(self, labels, arrays):
        super().__init__()
        self.labels = LabelVocab(labels)
        self.arrays = arrays

    def word_logits(self, sentences, batch_size=None, show_progress=False):
        return [self.arrays[i] for i in range(len(sentences))]


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def test_mean_of_log_probs_with_labels_in_other_order():
    a_labels, b_labels = ["O", "B-x", "I-x"], ["I-x", "O", "B-x"]
    a = [np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], np.float32)]
    b = [np.array([[0.3, -2.0, 1.5], [4.0, 0.0, 0.2]], np.float32)]  # columns I-x, O, B-x
    ens = TeacherEnsemble([FixedTeacher(a_labels, a), FixedTeacher(b_labels, b)])
    out = ens.word_logits([["w1", "w2"]])[0]
    assert ens.labels.labels == a_labels
    for w in range(2):
        la = _log_softmax(a[0][w])
        b_in_a_order = [b[0][w][b_labels.index(l)] for l in a_labels]
        lb = _log_softmax(b_in_a_order)
        np.testing.assert_allclose(out[w], (la + lb) / 2, rtol=1e-5, atol=1e-6)
    # predictions: argmax of the mean, decoded with the first member's labels
    assert ens.predict([["w1", "w2"]]) == [[a_labels[int(np.argmax(out[0]))], a_labels[int(np.argmax(out[1]))]]]


def test_one_member_is_its_log_softmax_and_mismatch_refused():
    a = [np.array([[2.0, 0.5, -1.0]], np.float32)]
    ens = TeacherEnsemble([FixedTeacher(["O", "B-x", "I-x"], a)])
    np.testing.assert_allclose(ens.word_logits([["w"]])[0][0], _log_softmax(a[0][0]), rtol=1e-6, atol=1e-6)
    with pytest.raises(LabelMismatchError, match="teacher 2"):
        TeacherEnsemble([FixedTeacher(["O", "B-x", "I-x"], a), FixedTeacher(["O", "B-y", "I-y"], a)])
    with pytest.raises(ValueError):
        TeacherEnsemble([])
