"""Distillation: TeacherStudentDistill, TeacherLogitsCache, pseudo-labels, and KD vs few gold labels."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_distill.config import (AugmentConfig, KDConfig, PseudoConfig, StudentDataConfig, TaggerConfig, TrainerConfig,
                                TransformerConfig)
from nlp_distill.data.batching import EncodedData
from nlp_distill.data.conll import read_conll, write_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab, is_valid, repair
from nlp_distill.distill import losses
from nlp_distill.distill.pseudo_label import label_from_logits, pseudo_label, write_pseudo_labeled
from nlp_distill.distill.teacher_cache import TeacherLogitsCache
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.errors import ConfigError, LabelMismatchError
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.common import RunOptions

TINY = Path(__file__).parent / "fixtures" / "tiny"


FP16 = dict(rtol=2e-3, atol=2e-3)  # float16 storage of logits of magnitude <~ 10


def _new_teacher(tiny_encoder_dir, labels, max_seq_length: int = 32) -> TransformerTokenClassifier:
    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=labels,
                                                      config=TransformerConfig(max_seq_length=max_seq_length))


@pytest.fixture(scope="module")
def data():
    return load_data_dir(TINY)


@pytest.fixture(scope="module")
def teacher(tiny_encoder_dir, data):
    """A tiny BERT teacher fine-tuned for a few steps (non-trivial, non-uniform logits)."""
    clf = _new_teacher(tiny_encoder_dir, data.labels)
    windows = clf.windows([s.tokens for s in data.train])
    tags = [data.labels.encode(s.tags) for s in data.train]
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3)
    clf.train()
    for _ in range(3):
        for i in range(0, len(windows), 16):
            loss, n = clf.loss(clf.collate(windows[i : i + 16], tags))
            (loss / n).backward()
            opt.step()
            opt.zero_grad()
    clf.eval()
    return clf


def _tagger_config() -> TaggerConfig:
    return TaggerConfig(hidden=16, word_emb_dim=16, char_emb_dim=8, char_hidden=16, dropout=0.0, word_dropout=0.0,
                        use_crf=False)


def _student(data, labels=None) -> NeuralTagger:
    torch.manual_seed(0)
    return NeuralTagger.build(_tagger_config(), data.train, labels or data.labels)


def _teacher_padded(teacher, sentences, idx, L, columns=None):
    arrays = teacher.word_logits([sentences[i] for i in idx])
    out = torch.zeros(len(idx), L, len(teacher.labels))
    for b, a in enumerate(arrays):
        out[b, : len(a)] = torch.from_numpy(a)
    return out if columns is None else out[..., columns]


# ------------------------------------------------------------------ TeacherStudentDistill
def test_teacher_frozen_through_student_step(teacher, data):
    student = _student(data)
    student.train()
    sents = [s.tokens for s in data.train]
    dist = TeacherStudentDistill(teacher, KDConfig(temperature=2.0))
    dist.attach(data.labels, sents)
    before = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.detach().clone() for k, v in student.state_dict().items()}
    batch = student.encode(data.train).collate([0, 5, 9, 20])
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(2):
        loss, n = dist.loss(student, batch)
        (loss / n).backward()
        opt.step()
        opt.zero_grad()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


@pytest.mark.parametrize("loss_function", ["kl", "mse", "dist"])
def test_total_loss_is_weighted_sum(teacher, data, loss_function):
    student = _student(data)
    student.eval()
    sents = [s.tokens for s in data.train]
    enc = student.encode(data.train, weights=[1.0 + (i % 3) * 0.5 for i in range(len(data.train))])
    idx = [2, 7, 11, 30, 31]
    batch = enc.collate(idx)
    dist = TeacherStudentDistill(teacher, KDConfig(temperature=3.0, dist_w=2.5, student_w=0.3, loss_function=loss_function))
    dist.attach(data.labels, sents)
    total, n = dist.loss(student, batch)
    assert int(n) == sum(len(sents[i]) for i in idx)

    with torch.no_grad():
        em = student(batch)
        t = _teacher_padded(teacher, sents, idx, batch.mask.size(1))
        if loss_function == "kl":
            kd = losses.kd_kl(em, t, batch.mask, 3.0, batch.weight, "sum")
        elif loss_function == "dist":  # a softmax student: its log-softmax at T
            kd = losses.kd_dist(torch.log_softmax(em / 3.0, -1), t, batch.mask, 3.0, batch.weight, "sum")
        else:
            kd = losses.kd_mse(em, t, batch.mask, batch.weight, "sum")
        gold, _ = student.gold_loss(em, batch)
    assert float(kd) > 0 and float(gold) > 0
    assert float(total.detach()) == pytest.approx(0.3 * float(gold) + 2.5 * float(kd), rel=1e-5)
    # the gold term really is there: loss_w = 0 gives the KD term alone
    dist0 = TeacherStudentDistill(teacher, KDConfig(temperature=3.0, dist_w=2.5, student_w=0.0, loss_function=loss_function))
    dist0.attach(data.labels, sents)
    assert float(dist0.loss(student, batch)[0].detach()) == pytest.approx(2.5 * float(kd), rel=1e-5)


def test_kd_only_sentences_without_tags(teacher, data):
    """Untagged sentences (tags None) contribute KD only."""
    from nlp_distill.data.conll import Sentence

    student = _student(data)
    student.eval()
    untagged = [Sentence(s.tokens, None) for s in data.train[:4]]
    enc = student.encode(untagged)
    batch = enc.collate([0, 1, 2, 3])
    assert batch.tags is None
    dist = TeacherStudentDistill(teacher, KDConfig(dist_w=1.0, student_w=1.0))
    dist.attach(data.labels, [s.tokens for s in untagged])
    total, _ = dist.loss(student, batch)
    with torch.no_grad():
        t = _teacher_padded(teacher, [s.tokens for s in untagged], [0, 1, 2, 3], batch.mask.size(1))
        kd = losses.kd_kl(student(batch), t, batch.mask, 1.0, batch.weight, "sum")
    assert float(total.detach()) == pytest.approx(float(kd), rel=1e-5)


def test_label_mismatch_raises(teacher, data):
    dist = TeacherStudentDistill(teacher)
    with pytest.raises(LabelMismatchError):
        dist.check_labels(LabelVocab(["O", "B-PER", "I-PER"]))
    with pytest.raises(LabelMismatchError):
        dist.attach(LabelVocab(data.labels.labels + ["B-MISC", "I-MISC"]), [s.tokens for s in data.train])
    reordered = LabelVocab(list(reversed(data.labels.labels)))
    strict = TeacherStudentDistill(teacher, map_labels_by_name=False)
    with pytest.raises(LabelMismatchError):
        strict.check_labels(reordered)


@pytest.mark.parametrize("cached", [False, True])
def test_reordered_labels_mapped_by_name(teacher, data, tmp_path, cached):
    perm = [3, 0, 6, 1, 5, 2, 4]
    student_labels = LabelVocab([data.labels.labels[i] for i in perm])
    assert student_labels != data.labels
    sents = [s.tokens for s in data.train]
    dist = TeacherStudentDistill(teacher)
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False) if cached else None
    dist.attach(student_labels, sents, cache)
    assert dist.columns == perm
    student = NeuralTagger.build(_tagger_config(), data.train, student_labels)
    enc = EncodedData(data.train, student.word_vocab, student.char_vocab, student_labels)
    idx = [1, 4, 8]
    batch = enc.collate(idx)
    got = dist.teacher_logits(batch)
    raw = teacher.word_logits([sents[i] for i in idx])
    for b, i in enumerate(idx):
        for j, name in enumerate(student_labels.labels):
            col = teacher.labels.label2id[name]
            np.testing.assert_allclose(got[b, : len(sents[i]), j].numpy(), raw[b][:, col], **FP16)
    # the mapping is not the identity: student column 0 is teacher's 'B-ORG', not 'O'
    assert not np.allclose(got[0, : len(sents[1]), 0].numpy(), raw[0][:, 0], atol=1e-3)


# ---------------------------------------------------------------------- TeacherLogitsCache
def _counting(monkeypatch, teacher):
    calls = {"n": 0}
    real = teacher.word_logits

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(teacher, "word_logits", counted)
    return calls


def test_cache_hit_and_values(teacher, data, tmp_path, monkeypatch):
    sents = [s.tokens for s in data.train[:20]]
    folder = tmp_path / "cache"
    cache = TeacherLogitsCache.build(teacher, sents, folder, batch_size=8, show_progress=False)
    assert len(cache) == len(sents)
    assert cache.labels == teacher.labels.labels
    ref = teacher.word_logits(sents)
    for i, r in enumerate(ref):
        assert cache.sentence(i).shape == r.shape
        assert cache.sentence(i).dtype == np.float16
        np.testing.assert_allclose(cache.sentence(i).astype(np.float32), r, **FP16)

    def boom(*a, **k):
        raise AssertionError("teacher must not run on a cache hit")

    monkeypatch.setattr(teacher, "word_logits", boom)
    again = TeacherLogitsCache.build(teacher, sents, folder, batch_size=8, show_progress=False)
    assert again.key == cache.key
    np.testing.assert_array_equal(np.asarray(again.logits), np.asarray(cache.logits))


def test_cache_chunks_and_batch_padding(teacher, data, tmp_path):
    sents = [s.tokens for s in data.train[:7]]
    one = TeacherLogitsCache.build(teacher, sents, tmp_path / "a", chunk=3, batch_size=2, show_progress=False)
    whole = TeacherLogitsCache.build(teacher, sents, tmp_path / "b", show_progress=False)
    np.testing.assert_array_equal(one.offsets, np.cumsum([0] + [len(s) for s in sents]))
    np.testing.assert_allclose(np.asarray(one.logits, np.float32), np.asarray(whole.logits, np.float32), **FP16)
    b = one.batch([6, 0], max_len=12)
    assert b.shape == (2, 12, len(teacher.labels)) and b.dtype == torch.float32
    assert torch.all(b[0, len(sents[6]) :] == 0) and torch.all(b[1, len(sents[0]) :] == 0)
    np.testing.assert_array_equal(b[0, : len(sents[6])].numpy(), one.sentence(6).astype(np.float32))


def test_cache_invalidated_by_changed_token(teacher, data, tmp_path, monkeypatch):
    sents = [list(s.tokens) for s in data.train[:10]]
    folder = tmp_path / "cache"
    first = TeacherLogitsCache.build(teacher, sents, folder, show_progress=False)
    calls = _counting(monkeypatch, teacher)
    changed = [list(s) for s in sents]
    changed[4][0] = "Oslo" if changed[4][0] != "Oslo" else "Paris"
    second = TeacherLogitsCache.build(teacher, changed, folder, show_progress=False)
    assert calls["n"] >= 1
    assert second.key != first.key
    np.testing.assert_allclose(second.sentence(4).astype(np.float32), teacher.word_logits([changed[4]])[0], **FP16)
    # and the unchanged data is a hit again
    n = calls["n"]
    TeacherLogitsCache.build(teacher, changed, folder, show_progress=False)
    assert calls["n"] == n


def test_cache_invalidated_by_changed_teacher_weight(tiny_encoder_dir, data, tmp_path, monkeypatch):
    t = _new_teacher(tiny_encoder_dir, data.labels)
    sents = [s.tokens for s in data.train[:6]]
    folder = tmp_path / "cache"
    first = TeacherLogitsCache.build(t, sents, folder, show_progress=False)
    old = np.asarray(first.logits, np.float32).copy()
    with torch.no_grad():
        t.model.classifier.bias[0] += 1.0
    calls = _counting(monkeypatch, t)
    second = TeacherLogitsCache.build(t, sents, folder, show_progress=False)
    assert calls["n"] >= 1
    new = np.asarray(second.logits, np.float32)
    np.testing.assert_allclose(new[:, 0] - old[:, 0], 1.0, atol=1e-2)
    np.testing.assert_allclose(new[:, 1:], old[:, 1:], **FP16)


def test_cache_long_sentence_every_word(teacher, data, tmp_path):
    vocab = sorted({w for s in data.train for w in s.tokens})
    rng = np.random.default_rng(0)
    long = [vocab[i] for i in rng.integers(0, len(vocab), 600)]
    sents = [data.train[0].tokens, long, data.train[1].tokens]
    assert len(teacher.windows([long])) > 10
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False)
    assert cache.sentence(1).shape == (600, len(teacher.labels))
    assert np.isfinite(cache.sentence(1).astype(np.float32)).all()
    assert (np.abs(cache.sentence(1).astype(np.float32)).sum(1) > 0).all()  # no row left unfilled
    np.testing.assert_allclose(cache.sentence(1).astype(np.float32), teacher.word_logits([long])[0], **FP16)
    assert cache.sentence(2).shape == (len(data.train[1].tokens), len(teacher.labels))


@pytest.mark.parametrize("loss_function", ["kl", "mse"])
def test_cached_loss_equals_live_loss(teacher, data, tmp_path, loss_function):
    sents = [s.tokens for s in data.train]
    student = _student(data)
    student.eval()
    enc = student.encode(data.train)
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False)
    live = TeacherStudentDistill(teacher, KDConfig(temperature=2.0, loss_function=loss_function))
    live.attach(data.labels, sents)
    cached = TeacherStudentDistill(teacher, KDConfig(temperature=2.0, loss_function=loss_function))
    cached.attach(data.labels, sents, cache)
    assert live.cache is None and cached.cache is cache
    for idx in ([0, 1, 2, 3], [40, 10, 79]):
        batch = enc.collate(idx)
        with torch.no_grad():
            a, na = live.loss(student, batch)
            b, nb = cached.loss(student, batch)
        assert int(na) == int(nb)
        assert float(a) == pytest.approx(float(b), rel=2e-3, abs=1e-3)


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate", "offsets"])
def test_damaged_cache_is_rebuilt_with_a_warning(teacher, data, tmp_path, monkeypatch, caplog, damage):
    sents = [s.tokens for s in data.train[:8]]
    folder = tmp_path / "cache"
    good = np.asarray(TeacherLogitsCache.build(teacher, sents, folder, show_progress=False).logits, np.float32)
    f = folder / "logits.f16"
    raw = bytearray(f.read_bytes())
    if damage == "flip_bytes":  # same size, other values: only the checksum can tell
        raw[10:20] = bytes(b ^ 0xFF for b in raw[10:20])
        f.write_bytes(bytes(raw))
    elif damage == "truncate":
        f.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        np.save(folder / "offsets.npy", np.zeros(3, dtype=np.int64))
    calls = _counting(monkeypatch, teacher)
    with caplog.at_level("WARNING"):
        again = TeacherLogitsCache.build(teacher, sents, folder, show_progress=False)
    assert calls["n"] >= 1 and "cannot be trusted" in caplog.text
    np.testing.assert_allclose(np.asarray(again.logits, np.float32), good, **FP16)


def test_cache_size_mismatch_refused(teacher, data, tmp_path):
    sents = [s.tokens for s in data.train[:5]]
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False)
    dist = TeacherStudentDistill(teacher)
    with pytest.raises(ValueError):
        dist.attach(data.labels, [s.tokens for s in data.train[:6]], cache)


# ---------------------------------------------------------------------------- pseudo-labels
def _softmax(x):
    return torch.softmax(torch.from_numpy(x).double(), -1).numpy()


def test_label_from_logits_random(data):
    labels = data.labels
    rng = np.random.default_rng(0)
    repaired_something = False
    items = []
    for k in range(60):
        n = int(rng.integers(1, 12))
        logits = (rng.normal(size=(n, len(labels))) * 3).astype(np.float32)
        toks = [f"w{k}_{i}" for i in range(n)]
        p = label_from_logits(toks, logits, labels, threshold=0.6)
        raw = [labels.labels[j] for j in logits.argmax(-1)]
        assert p.sentence.tokens == toks
        # the most probable valid sequence: never less probable than the repaired argmax
        lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        score = lambda tags: sum(lp[i, labels.label2id[t]] for i, t in enumerate(tags))  # noqa: E731
        assert score(p.sentence.tags) >= score(repair(raw, "BIO")) - 1e-5
        if is_valid(raw, "BIO"):
            assert p.sentence.tags == raw
        assert is_valid(p.sentence.tags, "BIO")
        assert len(p.sentence.tags) == n
        repaired_something |= p.sentence.tags != raw
        conf = float(_softmax(logits).max(-1).mean())
        assert p.confidence == pytest.approx(conf, rel=1e-5)
        assert 0.0 <= p.confidence <= 1.0
        assert p.accepted == (p.confidence >= 0.6)
        items.append(p)
    assert repaired_something  # random logits do produce orphan I- tags, and they were fixed
    acc = [p.accepted for p in items]
    assert any(acc) and not all(acc)


def test_argmax_pseudo_labels_are_the_repaired_argmax_and_keep_its_entities(data):
    from nlp_distill.data.labels import entity_spans

    labels = data.labels
    rng = np.random.default_rng(1)
    fewer = 0
    for k in range(60):
        logits = (rng.normal(size=(int(rng.integers(1, 12)), len(labels))) * 3).astype(np.float32)
        raw = [labels.labels[j] for j in logits.argmax(-1)]
        p = label_from_logits([f"w{i}" for i in range(len(raw))], logits, labels, decode="argmax")
        assert p.sentence.tags == repair(raw, "BIO") and is_valid(p.sentence.tags, "BIO")
        valid = label_from_logits([f"w{i}" for i in range(len(raw))], logits, labels).sentence.tags
        assert len(entity_spans(p.sentence.tags)) == len(entity_spans(raw))  # an orphan I-X becomes an entity
        fewer += len(entity_spans(valid)) < len(entity_spans(p.sentence.tags))
    assert fewer  # the valid path drops some of the argmax's entities: the two rules differ
    with pytest.raises(ValueError, match="decode 'best'"):
        label_from_logits(["w"], np.zeros((1, len(labels)), np.float32), labels, decode="best")


def test_threshold_zero_accepts_all_one_rejects_all(data):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, len(data.labels))).astype(np.float32)
    toks = list("abcde")
    assert label_from_logits(toks, logits, data.labels, 0.0).accepted
    assert not label_from_logits(toks, logits, data.labels, 1.01).accepted


def test_pseudo_label_stream_matches_word_logits(teacher, data):
    sents = [s.tokens for s in data.dev[:7]]
    got = list(pseudo_label(teacher, sents, threshold=0.5, batch_size=2, chunk=3))
    ref = teacher.word_logits(sents)
    assert len(got) == len(sents)
    for p, toks, lg in zip(got, sents, ref):
        want = label_from_logits(toks, lg, teacher.labels, 0.5)
        assert p.sentence.tokens == toks
        assert p.sentence.tags == want.sentence.tags
        assert p.confidence == pytest.approx(want.confidence, rel=1e-4)
        assert is_valid(p.sentence.tags, "BIO")


def test_write_pseudo_labeled_roundtrip(data, tmp_path):
    rng = np.random.default_rng(2)
    items = []
    for k, s in enumerate(data.dev[:8]):
        lg = (rng.normal(size=(len(s), len(data.labels))) * 2).astype(np.float32)
        items.append(label_from_logits(s.tokens, lg, data.labels, threshold=0.5))
    path = tmp_path / "out" / "pseudo.txt"
    n, acc = write_pseudo_labeled(path, iter(items))
    assert n == len(items) and acc == sum(p.accepted for p in items)
    lines = [l for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    assert all(len(l.split("\t")) == 3 for l in lines)
    back = read_conll(path, tag_column=1, allowed_tags=data.labels.labels)
    assert [s.tokens for s in back] == [p.sentence.tokens for p in items]
    assert [s.tags for s in back] == [p.sentence.tags for p in items]
    confs = read_conll(path, tag_column=2)
    for s, p in zip(confs, items):
        assert all(float(c) == pytest.approx(p.confidence, abs=1e-4) for c in s.tags)
    assert not (tmp_path / "out" / "pseudo.txt.tmp").exists()


# ------------------------------------------------------------------- KD beats fewer gold
def test_kd_on_unseen_unlabeled_text_beats_gold_only_with_the_same_vocabulary(tiny_dir, tiny_encoder_dir, tmp_path):
    """The teacher never sees the unlabeled half; every arm has the same vocabulary (gold +
    unlabeled words); the soft-target term is really on (its arm trains differently from the
    pseudo-label-only arm); over two seeds KD + pseudo-labels beats gold alone."""
    from nlp_distill.data.conll import Sentence
    from nlp_distill.training.student import train_student
    from procedures.tagger_kd import do_kd_pseudo_training
    from procedures.transformer_token import do_training as train_teacher

    d = load_data_dir(tiny_dir)
    half = len(d.train) // 2
    n_gold = len(d.train) // 10
    tdir = tmp_path / "teacher_data"
    tdir.mkdir()
    write_conll(tdir / "train.txt", d.train[:half])  # the teacher's data: the first half only
    for f in ("dev.txt", "test.txt"):
        shutil.copy(tiny_dir / f, tdir / f)
    (tdir / "labels.txt").write_text("\n".join(d.labels.labels) + "\n", encoding="utf-8")
    tm = train_teacher(tdir, tmp_path / "teacher",
                       TransformerConfig(model_name_or_path=str(tiny_encoder_dir), max_seq_length=64, batch_size=8),
                       TrainerConfig(epochs=12, lr=3e-3, optimizer="adamw", show_progress=False, seed=0),
                       run=RunOptions(device="cpu"))
    assert tm["dev"]["f1"] >= 0.8, "precondition: the teacher must have learned the tiny task"

    few = tmp_path / "few"
    few.mkdir()
    write_conll(few / "train.txt", d.train[:n_gold])
    for f in ("dev.txt", "test.txt", "labels.txt"):
        shutil.copy(tdir / f, few / f)
    unlabeled = d.train[half:]  # text the teacher never saw
    (few / "unlabeled.txt").write_text("".join(" ".join(s.tokens) + "\n" for s in unlabeled), encoding="utf-8")

    tagger = TaggerConfig(hidden=16, word_emb_dim=16, char_emb_dim=8, char_hidden=16, use_crf=False)
    sdata = StudentDataConfig(batch_size=16, embedding_file="none")
    kd = KDConfig(teacher_model_path=[str(tmp_path / "teacher")], teacher_max_seq_len=64)
    vocab = list(d.train[:n_gold]) + [Sentence(s.tokens) for s in unlabeled]
    augment = AugmentConfig(ops=["token", "mention"])  # swaps only: no new words, so one vocabulary for all arms
    gold_f1, kd_f1 = [], []
    for seed in (1, 2):
        trainer = TrainerConfig(epochs=25, lr=1e-2, show_progress=False, seed=seed)
        gold_dir = tmp_path / f"gold{seed}"
        gold_dir.mkdir()
        g = train_student(output_dir=gold_dir, train=d.train[:n_gold], dev=d.dev, test=d.test, labels=d.labels,
                          tagger=tagger, trainer=trainer, data=sdata, vocab_sentences=vocab, device="cpu").metrics
        k = do_kd_pseudo_training(few, tmp_path / f"kd{seed}", tagger, trainer, sdata, kd, augment,
                                  pseudo=PseudoConfig(), run=RunOptions(device="cpu"))
        off = do_kd_pseudo_training(few, tmp_path / f"off{seed}", tagger, trainer, sdata, kd.replace(dist_w=0.0),
                                    augment, pseudo=PseudoConfig(), run=RunOptions(device="cpu"))
        assert g["parameters"] == k["parameters"] == off["parameters"]  # same vocabulary, same model size
        loss_on = [json.loads(l)["train_loss"] for l in (tmp_path / f"kd{seed}" / "train_log.jsonl").open()]
        loss_off = [json.loads(l)["train_loss"] for l in (tmp_path / f"off{seed}" / "train_log.jsonl").open()]
        assert loss_on[0] > loss_off[0] + 1e-3  # the soft-target term adds to the loss: it is on
        gold_f1.append(g["dev"]["f1"])
        kd_f1.append(k["dev"]["f1"])
    assert sum(kd_f1) / 2 > sum(gold_f1) / 2 + 0.1, (gold_f1, kd_f1)


# -------------------------------------------------- hidden-state transfer, stages, posterior KD
def test_hidden_loss_zero_for_a_student_that_copies_and_padding_never_counts(teacher, data):
    student = _student(data)
    student.eval()
    enc = student.encode(data.train)
    batch = enc.collate([1, 4, 8])  # different lengths: padding exists
    assert not bool(batch.mask.all())
    for kind in ("mse", "cosine"):
        dist = TeacherStudentDistill(teacher, KDConfig(hidden_w=1.0, hidden_loss=kind))
        proj = dist.init_projection(student.encoder.out_dim, 24)
        with torch.no_grad():
            h = student.features(batch)
            target = proj(h).clone()
        assert float(dist.hidden_loss(h, target, batch).detach()) == pytest.approx(0.0, abs=1e-6)
        garbage = target.clone()
        garbage[~batch.mask] = 1e3  # padding positions: anything
        assert float(dist.hidden_loss(h, garbage, batch).detach()) == pytest.approx(0.0, abs=1e-6)
        moved = target.clone()
        moved[0, 0] += 1.0  # a real word: the loss sees it
        moved[0, 0, 0] -= 5.0
        assert float(dist.hidden_loss(h, moved, batch).detach()) > 1e-4


def test_cached_hidden_states_equal_live_ones(teacher, data, tmp_path):
    sents = [s.tokens for s in data.train[:9]]
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False, hidden=True)
    logits, hidden = teacher.word_outputs(sents, hidden=True)
    H = teacher.model.config.hidden_size
    for i in range(len(sents)):
        np.testing.assert_allclose(cache.sentence(i).astype(np.float32), logits[i], **FP16)
        assert hidden[i].shape == (len(sents[i]), H)
    hb = cache.hidden_batch([3, 0], 20)
    assert hb.shape == (2, 20, H) and torch.all(hb[0, len(sents[3]):] == 0)
    np.testing.assert_allclose(hb[0, : len(sents[3])].numpy(), hidden[3], rtol=5e-3, atol=5e-3)
    # a logits-only cache is not reused when hidden states are needed
    plain = TeacherLogitsCache.build(teacher, sents, tmp_path / "p", show_progress=False)
    assert plain.hidden is None and plain.key != cache.key
    with pytest.raises(ValueError, match="no hidden states"):
        plain.hidden_batch([0], 5)


def test_staged_schedule_switches_terms_when_it_says(teacher, data, tmp_path):
    student = _student(data)
    student.eval()
    sents = [s.tokens for s in data.train]
    batch = student.encode(data.train).collate([2, 3, 5])
    kd = KDConfig(stages=[2, 3], hidden_w=0.5, dist_w=2.0, student_w=0.25)
    dist = TeacherStudentDistill(teacher, kd)
    cache = TeacherLogitsCache.build(teacher, sents, tmp_path / "c", show_progress=False, hidden=dist.uses_hidden)
    dist.attach(data.labels, sents, cache)
    dist.init_projection(student.encoder.out_dim)
    expected = {0: {"gold": 0, "kd": 0, "hidden": 0.5}, 1: {"gold": 0, "kd": 0, "hidden": 0.5},
                2: {"gold": 0, "kd": 2.0, "hidden": 0}, 4: {"gold": 0, "kd": 2.0, "hidden": 0},
                5: {"gold": 0.25, "kd": 0, "hidden": 0}, 9: {"gold": 0.25, "kd": 0, "hidden": 0}}
    with torch.no_grad():
        h = student.features(batch)
        em = student.proj(h)
        logits, states = dist.teacher_targets(batch, hidden=True)
        terms = {"gold": float(student.gold_loss(em, batch)[0]),
                 "kd": float(dist.kd_loss(student, em, logits, batch)),
                 "hidden": float(dist.hidden_loss(h, states, batch))}
        for epoch, w in expected.items():
            dist.epoch = epoch
            assert dist.weights() == w, epoch
            total = float(dist.loss(student, batch)[0])
            assert total == pytest.approx(sum(w[k] * terms[k] for k in w), rel=1e-5), epoch
    with pytest.raises(ConfigError, match="two epoch counts"):
        KDConfig(stages=[1, 2, 3])


def test_crf_student_gets_posterior_kd_by_default(teacher, data):
    torch.manual_seed(0)
    student = NeuralTagger.build(_tagger_config().replace(use_crf=True), data.train, data.labels)
    student.eval()
    sents = [s.tokens for s in data.train]
    batch = student.encode(data.train).collate([0, 6, 7])
    dist = TeacherStudentDistill(teacher, KDConfig(temperature=2.0, student_w=0.0))
    dist.attach(data.labels, sents)
    assert dist.loss_for(student) == "posterior"
    with torch.no_grad():
        em = student(batch)
        t = _teacher_padded(teacher, sents, [0, 6, 7], batch.mask.size(1))
        ref = losses.kd_posterior(student.crf.log_marginals(em, batch.mask, 2.0), t, batch.mask, 2.0, batch.weight, "sum")
        token = losses.kd_kl(em, t, batch.mask, 2.0, batch.weight, "sum")
    got = float(dist.loss(student, batch)[0].detach())
    assert got == pytest.approx(float(ref), rel=1e-5) and abs(got - float(token)) > 1e-4
    with pytest.raises(ConfigError, match="needs a CRF"):
        TeacherStudentDistill(teacher, KDConfig(loss_function="posterior")).loss_for(_student(data))


def test_pseudo_threshold_and_weights_reach_the_batch(teacher, data, tmp_path):
    """Sentences under the threshold come back untagged (KD only); unlabeled_weight reaches the
    per-sentence weights; a CRF student trains on a batch mixing tagged and untagged sentences."""
    from nlp_distill.config import AugmentConfig
    from nlp_distill.data.conll import Sentence
    import nlp_distill.training.student as st
    from nlp_distill.distill.pseudo_label import label_from_logits

    captured = {}

    def fake_train_student(*, train, weights=None, **kw):
        captured.update(train=train, weights=weights)
        return {"dev": {"f1": 0.0}}

    unl = [Sentence(s.tokens) for s in data.dev[:12]]
    save = st.train_student
    st.train_student = fake_train_student
    try:
        conf = [label_from_logits(s.tokens, lg, teacher.labels).confidence
                for s, lg in zip(unl, teacher.word_logits([s.tokens for s in unl]))]
        uniq = sorted({round(c, 3) for c in conf})
        k = len(uniq) // 2
        threshold = (uniq[k - 1] + uniq[k]) / 2  # between two distinct confidences: fp16 cannot flip a side
        teacher.save_pretrained(tmp_path / "teacher")
        st.distil_student(output_dir=tmp_path, train=data.train, dev=data.dev, test=data.test, labels=data.labels,
                          kd=KDConfig(teacher_model_path=[str(tmp_path / "teacher")]), tagger=_tagger_config(),
                          trainer=TrainerConfig(), data=StudentDataConfig(embedding_file="none"),
                          augment=AugmentConfig(copies=0), unlabeled=unl,
                          pseudo=PseudoConfig(threshold=threshold, unlabeled_weight=0.25), device="cpu")
    finally:
        st.train_student = save
    n = len(data.train)
    extra = captured["train"][n:]
    assert [s.tags is None for s in extra] == [c < threshold for c in conf]
    assert captured["weights"] == [1.0] * n + [0.25] * len(unl)
    # a CRF student on a batch mixing gold, pseudo-tagged and untagged (KD-only) sentences
    torch.manual_seed(0)
    crf = NeuralTagger.build(_tagger_config().replace(use_crf=True), data.train, data.labels)
    enc = crf.encode(captured["train"], captured["weights"])
    untagged = [n + k for k, s in enumerate(extra) if s.tags is None][:2]
    tagged = [n + k for k, s in enumerate(extra) if s.tags is not None][:2]
    batch = enc.collate([0, 1] + tagged + untagged)
    assert torch.equal(batch.weight, torch.tensor([1.0, 1.0, 0.25, 0.25, 0.25, 0.25]))
    dist = TeacherStudentDistill(teacher, KDConfig())
    dist.attach(data.labels, [s.tokens for s in captured["train"]])
    loss, _ = dist.loss(crf, batch)
    loss.backward()
    assert torch.isfinite(loss) and crf.crf.trans.grad is not None


def test_dist_loss_of_a_crf_student_reads_its_marginals(teacher, data):
    """``--kd_loss_fn dist`` on a CRF student correlates the teacher with the CRF's marginals at T."""
    torch.manual_seed(0)
    student = NeuralTagger.build(_tagger_config().replace(use_crf=True), data.train, data.labels).eval()
    sents = [s.tokens for s in data.train]
    batch = student.encode(data.train).collate([1, 4, 9])
    dist = TeacherStudentDistill(teacher, KDConfig(temperature=2.0, loss_function="dist"))
    dist.attach(data.labels, sents)
    with torch.no_grad():
        em = student(batch)
        t = _teacher_padded(teacher, sents, [1, 4, 9], batch.mask.size(1))
        got = dist.kd_loss(student, em, t, batch)
        ref = losses.kd_dist(student.crf.log_marginals(em, batch.mask, 2.0), t, batch.mask, 2.0, batch.weight, "sum")
        softmax_ref = losses.kd_dist(torch.log_softmax(em / 2.0, -1), t, batch.mask, 2.0, batch.weight, "sum")
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    assert float(got) != pytest.approx(float(softmax_ref), rel=1e-3)  # not the emissions' softmax
