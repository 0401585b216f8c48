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


class FoldTeacher(nn.Module):
    """A stand-in fold teacher: logits that depend on the sentence (its first word) and the member."""

    def __init__(self, labels, K, k, scale):
        super().__init__()
        self.labels = LabelVocab(labels)
        self.config = type("C", (), {"holdout_fold": [K, k], "max_seq_length": 32, "stride": 8, "pooling": "first"})()
        self.scale = scale

    def word_logits(self, sentences, batch_size=None, show_progress=False):
        return [np.array([[self.scale * len(s[0]), 0.0, -self.scale]] * len(s), np.float32) for s in sentences]


def test_out_of_fold_routes_train_sentences_and_copies_to_the_teacher_that_held_them_out():
    from nlp_distill.distill.ensemble import OutOfFoldTeachers
    from nlp_distill.distill.teacher_cache import teacher_fingerprint
    labels = ["O", "B-x", "I-x"]
    members = [FoldTeacher(labels, 3, k, scale) for k, scale in ((2, 3.0), (0, 1.0), (1, 2.0))]  # any order
    oof = OutOfFoldTeachers(members)
    train = [["a", "b"], ["cc"], ["ddd", "e"], ["ffff"]]  # folds 0, 1, 2, 0
    copies, sources = [["zz", "b"], ["y"]], [2, 3]  # copies of train 2 (fold 2) and train 3 (fold 0)
    before = teacher_fingerprint(oof)
    oof.set_route(train + copies, [0, 1, 2, 3] + sources)
    assert teacher_fingerprint(oof) != before  # the cache key knows the routing
    other = [["unseen", "w"]]
    out = oof.word_logits(train + copies + other)
    scale_of_fold = {2: 3.0, 0: 1.0, 1: 2.0}
    expected_folds = [0, 1, 2, 0, 2, 0]
    for s, got, fold in zip(train + copies, out, expected_folds):
        one = FoldTeacher(labels, 3, fold, scale_of_fold[fold]).word_logits([s])[0]
        np.testing.assert_allclose(got, np.stack([_log_softmax(r) for r in one]), rtol=1e-5, atol=1e-6)
    mean = np.mean([np.stack([_log_softmax(r) for r in m.word_logits(other)[0]]) for m in members], axis=0)
    np.testing.assert_allclose(out[-1], mean, rtol=1e-5, atol=1e-6)  # unrouted text: all K teachers


def test_out_of_fold_needs_each_fold_once():
    from nlp_distill.distill.ensemble import OutOfFoldTeachers
    from nlp_distill.errors import ConfigError
    labels = ["O", "B-x", "I-x"]
    with pytest.raises(ConfigError, match="folds 0..2 of 3"):
        OutOfFoldTeachers([FoldTeacher(labels, 3, 0, 1.0), FoldTeacher(labels, 3, 1, 1.0), FoldTeacher(labels, 3, 1, 1.0)])
    with pytest.raises(ConfigError, match="folds 0..1 of 2"):
        OutOfFoldTeachers([FoldTeacher(labels, 2, 0, 1.0), FoldTeacher(labels, 3, 1, 1.0)])


def test_every_teacher_kind_satisfies_the_teacher_protocol(tiny_encoder_dir, tmp_path):
    """One teacher, an ensemble and out-of-fold teachers answer members and routed alike."""
    from nlp_distill.distill.teacher import Teacher
    from nlp_distill.distill.teachers import load_teacher
    from tests.option_probe import save_teacher

    from nlp_distill.data.dataset_dir import load_data_dir
    from tests.conftest import TINY

    labels = load_data_dir(TINY).labels
    a = save_teacher(tmp_path / "a", tiny_encoder_dir, labels, seed=0)
    b = save_teacher(tmp_path / "b", tiny_encoder_dir, labels, seed=1)
    f0 = save_teacher(tmp_path / "f0", tiny_encoder_dir, labels, seed=0, holdout_fold=(2, 0))
    f1 = save_teacher(tmp_path / "f1", tiny_encoder_dir, labels, seed=1, holdout_fold=(2, 1))
    for paths, n, routed in (([a], 1, False), ([a, b], 2, False), ([f0, f1], 2, True)):
        t = load_teacher([str(p) for p in paths])
        assert isinstance(t, Teacher) and len(t.members) == n and t.routed is routed
        assert t.members[0].members == [t.members[0]]
