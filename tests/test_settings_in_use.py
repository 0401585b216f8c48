"""Distillation settings typed on the command line reach the loss the student trains on.

Each test runs a command through the CLI up to the first training step (``tests/option_probe``)
and compares what the Trainer would optimise with a formula written out here from the flag's
value, so a setting dropped anywhere between the flag and the loss fails the test (reading
config.json back would not: it only proves the echo).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nlp_distill.data.conll import read_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_train
from tests.option_probe import STUDENT_ARGS, capture, first_batches, loss_on, save_teacher, small_data_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("settings")
    d = small_data_dir(root / "data")
    labels = load_data_dir(d).labels
    return {"root": root, "data": d, "labels": labels, "train": read_conll(d / "train.txt"),
            "teacher": save_teacher(root / "teacher", tiny_encoder_dir, labels)}


def _kd(monkeypatch, setup, tmp_path, *flags, task="tagger_kd"):
    return capture(monkeypatch, nlp_train, [task, "--data_dir", setup["data"], "--output_dir", tmp_path / "run",
                                            "--teacher_model_path", setup["teacher"], *STUDENT_ARGS, *flags]).trainer


def _teacher_outputs(setup, sentences, hidden=False):
    t = TransformerTokenClassifier.from_pretrained(str(setup["teacher"])).eval()
    return t.word_outputs([list(s) for s in sentences], hidden=hidden)


def _padded(arrays, L):
    out = torch.zeros(len(arrays), L, arrays[0].shape[1])
    for b, a in enumerate(arrays):
        out[b, : len(a)] = torch.from_numpy(np.asarray(a, np.float32))
    return out


def _softmax_np(x, T):
    z = x / T - (x / T).max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


@pytest.mark.parametrize("T", [3.0, 0.5])
def test_kd_temp_reaches_the_kl_term(monkeypatch, setup, tmp_path, T):
    """--kd_temp T: the loss is T^2 * sum_words KL(softmax(t/T) || softmax(s/T)), written out here."""
    tr = _kd(monkeypatch, setup, tmp_path, "--kd_temp", T, "--kd_loss_fn", "kl", "--kd_student_w", 0,
             "--kd_dist_w", 1.5)
    batch = first_batches(tr, 1)[0]
    got = loss_on(tr, batch)["loss"]
    with torch.no_grad():
        em = tr.model(batch).numpy()  # (B, L, C)
    sents = [setup["train"][i].tokens for i in batch.index.tolist()]
    t_logits = _teacher_outputs(setup, sents)[0]
    naive = 0.0
    for b, tl in enumerate(t_logits):
        for w in range(len(tl)):
            pt, ps = _softmax_np(tl[w].astype(np.float64), T), _softmax_np(em[b, w].astype(np.float64), T)
            naive += T * T * float((pt * (np.log(pt) - np.log(ps))).sum())
    assert got == pytest.approx(1.5 * naive, rel=2e-3)  # teacher logits are cached in float16


def test_kd_hidden_loss_cosine_reaches_the_hidden_term(monkeypatch, setup, tmp_path):
    """--kd_hidden_loss cosine: the hidden term is sum_words 1 - cos(P h_s, h_t); mse gives another value."""
    tr = _kd(monkeypatch, setup, tmp_path, "--kd_hidden_w", 2.0, "--kd_hidden_loss", "cosine", "--kd_dist_w", 0,
             "--kd_student_w", 0)
    batch = first_batches(tr, 1)[0]
    got = loss_on(tr, batch)
    student, proj = tr.model["student"], tr.model["projection"]
    with torch.no_grad():
        hs = proj(student.features(batch))  # (B, L, H_t)
    sents = [setup["train"][i].tokens for i in batch.index.tolist()]
    th = _padded(_teacher_outputs(setup, sents, hidden=True)[1], batch.mask.size(1))
    naive = 0.0
    for b in range(len(sents)):
        for w in range(len(sents[b])):
            u, v = hs[b, w].double(), th[b, w].double()
            naive += 1.0 - float(u @ v / (u.norm() * v.norm()))
    assert got["part_hidden"] == pytest.approx(2.0 * naive, rel=2e-3)
    mse = 2.0 * float(((hs - th) ** 2).mean(-1)[batch.mask].sum())
    assert abs(got["part_hidden"] - mse) > 1e-3 * mse


def test_kd_stages_advance_with_the_epochs(monkeypatch, setup, tmp_path):
    """--kd_stages 1,2: epoch 1 the hidden term alone, epochs 2-3 KD alone, then gold alone; early
    stopping does not count the stages."""
    tr = _kd(monkeypatch, setup, tmp_path, "--kd_stages", "1,2", "--kd_hidden_w", 0.5, "--epochs", 5)
    seen = []
    for epoch in range(5):
        batch = first_batches(tr, 1, epoch)[0]  # asking for the epoch's batches selects its stage
        seen.append(sorted(k[5:] for k in loss_on(tr, batch) if k.startswith("part_")))
    assert seen == [["hidden"], ["kd"], ["kd"], ["gold"], ["gold"]]
    assert tr.patience_start == 3


def _confidences(setup, sentences):
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.distill.pseudo_label import label_from_logits

    logits = _teacher_outputs(setup, sentences)[0]
    return [label_from_logits(s, lg, LabelVocab(setup["labels"].labels)).confidence for s, lg in zip(sentences, logits)]


def test_pseudo_threshold_and_unlabeled_weight_reach_the_store_rows(monkeypatch, setup, tmp_path):
    """tagger_kd_pseudo's default path labels the unlabeled text into a transfer store: its rows
    carry --unlabeled_weight, and those under --pseudo_threshold have no tags (KD only)."""
    from nlp_distill.data.unlabeled import iter_unlabeled

    unl = [s.tokens for s in iter_unlabeled(setup["data"] / "unlabeled.txt")][:20]
    conf = _confidences(setup, unl)
    uniq = sorted({round(c, 3) for c in conf})
    k = len(uniq) // 2
    threshold = (uniq[k - 1] + uniq[k]) / 2  # between two distinct confidences: float16 cannot flip a side
    tr = _kd(monkeypatch, setup, tmp_path, "--pseudo_threshold", threshold, "--unlabeled_weight", 0.25,
             "--max_unlabeled", 20, task="tagger_kd_pseudo")
    n = len(setup["train"])
    batch = tr.collate(list(range(n, n + len(unl))))
    assert (tr.collate(list(range(n))).weight == 1.0).all()
    assert torch.equal(batch.weight, torch.full((len(unl),), 0.25))
    untagged = [bool((batch.tags[b][batch.mask[b]] == -100).all()) for b in range(len(unl))]
    assert untagged == [c < threshold for c in conf]
    assert 0 < sum(untagged) < len(unl)
    # and the loss weighs them: the same rows at weight 1 give 4x the loss
    tr1 = _kd(monkeypatch, setup, tmp_path / "w1", "--pseudo_threshold", threshold, "--max_unlabeled", 20,
              task="tagger_kd_pseudo")
    l25 = loss_on(tr, batch)["loss"]
    l1 = loss_on(tr1, tr1.collate(list(range(n, n + len(unl)))))["loss"]
    assert l25 == pytest.approx(0.25 * l1, rel=1e-5)


def test_out_of_fold_teachers_in_another_label_order_are_mapped_by_name(monkeypatch, setup, tmp_path,
                                                                        tiny_encoder_dir):
    """Two fold teachers whose heads list the labels in other orders than the data: each training
    sentence's KD target is the held-out teacher's distribution with its columns mapped by name."""
    labels = setup["labels"].labels
    orders = [list(reversed(labels)), labels[1:] + labels[:1]]
    folds = [save_teacher(tmp_path / f"fold{k}", tiny_encoder_dir, setup["labels"], seed=10 + k,
                          holdout_fold=[2, k], label_order=orders[k]) for k in range(2)]
    tr = capture(monkeypatch, nlp_train, ["tagger_kd", "--data_dir", setup["data"], "--output_dir", tmp_path / "run",
                                          "--teacher_model_path", f"{folds[0]},{folds[1]}", *STUDENT_ARGS,
                                          "--kd_loss_fn", "kl", "--kd_student_w", 0]).trainer
    batch = first_batches(tr, 1)[0]
    got = loss_on(tr, batch)["loss"]
    labels = tr.model.labels.labels  # without labels.txt: the first teacher's labels, in its order
    assert labels == orders[0] and labels != setup["labels"].labels
    with torch.no_grad():
        log_ps = torch.log_softmax(tr.model(batch), -1).double()  # (B, L, C)
    naive = 0.0
    for b, i in enumerate(batch.index.tolist()):
        t = TransformerTokenClassifier.from_pretrained(str(folds[i % 2])).eval()
        raw = t.word_logits([setup["train"][i].tokens])[0].astype(np.float64)  # columns in the fold's order
        assert t.labels.labels == orders[i % 2]
        by_name = raw[:, [orders[i % 2].index(l) for l in labels]]
        pt = _softmax_np(by_name, 1.0)
        naive += float((pt * (np.log(pt) - log_ps[b, : len(pt)].numpy())).sum())
    assert got == pytest.approx(naive, rel=2e-3)
