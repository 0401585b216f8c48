"""Transfer store: chunked labeling equals the teacher, a killed run resumes to the same store,
and a student trained from a store equals one trained from the file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nlp_distill.config import TransformerConfig
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.test_cli import TAGGER_ARGS, invoke, ok

DATA = load_data_dir(TINY)
FP16 = dict(rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def teacher(tiny_encoder_dir):
    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=DATA.labels,
                                                      config=TransformerConfig(max_seq_length=32))


def _sents():
    return [s.tokens for s in DATA.train[:23]]


def test_chunked_store_equals_the_teacher_and_reads_like_a_cache(teacher, tmp_path):
    store = TransferStore.label(teacher, iter(_sents()), tmp_path / "s", chunk=5, show_progress=False)
    ref = teacher.word_logits(_sents())
    assert len(store) == 23 and len(list((tmp_path / "s").glob("part-*.parquet"))) == 5
    assert list(store.iter_tokens()) == _sents()
    for i, r in enumerate(ref):
        np.testing.assert_allclose(store.sentence(i).astype(np.float32), r, **FP16)
    b = store.batch([7, 0], 40)
    assert b.shape == (2, 40, len(DATA.labels)) and torch.all(b[0, len(_sents()[7]):] == 0)
    probs = [np.exp(r - r.max(-1, keepdims=True)) / np.exp(r - r.max(-1, keepdims=True)).sum(-1, keepdims=True) for r in ref]
    np.testing.assert_allclose(store.confidence, [p.max(-1).mean() for p in probs], atol=2e-3)


def test_killed_labeling_resumes_to_the_same_store(teacher, tmp_path, monkeypatch):
    def dies_after(n):
        for k, s in enumerate(_sents()):
            if k == n:
                raise KeyboardInterrupt
            yield s

    with pytest.raises(KeyboardInterrupt):
        TransferStore.label(teacher, dies_after(12), tmp_path / "s", chunk=5, show_progress=False)
    # the input dies while shard 2 is read ahead (tokenised while shard 1 would run): shard 0 is finished
    assert sorted(p.name for p in (tmp_path / "s").glob("part-*")) == ["part-00000.parquet"]
    with pytest.raises(ConfigError, match="unfinished"):
        TransferStore(tmp_path / "s")
    calls = []
    orig = teacher.word_logits
    monkeypatch.setattr(teacher, "word_logits",
                        lambda s, *a, **k: calls.append((len(s), k.get("windows") is not None)) or orig(s, *a, **k))
    resumed = TransferStore.label(teacher, iter(_sents()), tmp_path / "s", chunk=5, show_progress=False)
    # only the unfinished shards were labeled again, each with windows tokenised ahead in a thread
    assert calls == [(5, True), (5, True), (5, True), (3, True)]
    whole = TransferStore.label(teacher, iter(_sents()), tmp_path / "w", chunk=5, show_progress=False)
    for i in range(23):
        np.testing.assert_array_equal(resumed.sentence(i), whole.sentence(i))
    other = TransformerTokenClassifier(teacher.model, teacher.tokenizer, teacher.labels,
                                       teacher.config.replace(max_seq_length=16))
    with pytest.raises(ConfigError, match="another teacher"):
        TransferStore.label(other, iter(_sents()), tmp_path / "s", chunk=5, show_progress=False)


def test_student_from_a_store_equals_one_from_the_file(tiny_encoder_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", data, "--output_dir", t, "--model_name_or_path",
                          tiny_encoder_dir, "--num_train_epochs", 2, "--max_seq_length", 32, "--device", "cpu"]))
    ok(invoke(nlp_train, ["label_unlabeled", "--output_dir", tmp_path / "store", "--teacher_model_path", t,
                          "--unlabeled_filename", data / "unlabeled.txt", "--chunk_sentences", 7, "--device", "cpu"]))
    common = ["tagger_kd_pseudo", "--data_dir", data, *TAGGER_ARGS, "--teacher_model_path", t, "--epochs", 3]
    ok(invoke(nlp_train, [*common, "--output_dir", tmp_path / "file", "--unlabeled_filename", data / "unlabeled.txt"]))
    ok(invoke(nlp_train, [*common, "--output_dir", tmp_path / "store_run", "--transfer_store", tmp_path / "store"]))
    a = (tmp_path / "file" / "pseudo_labeled.txt").read_text().splitlines()
    b = (tmp_path / "store_run" / "pseudo_labeled.txt").read_text().splitlines()
    assert [l.split("\t")[:2] for l in a] == [l.split("\t")[:2] for l in b]  # same sentences, same teacher tags
    fa = json.loads((tmp_path / "file" / "metrics.json").read_text())["dev"]["f1"]
    fb = json.loads((tmp_path / "store_run" / "metrics.json").read_text())["dev"]["f1"]
    assert fa == pytest.approx(fb, abs=0.05)
    # a store by another teacher is refused
    t2 = tmp_path / "teacher2"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", data, "--output_dir", t2, "--model_name_or_path",
                          tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu",
                          "--seed", 5]))
    r = invoke(nlp_train, [*common[:-4], "--teacher_model_path", t2, "--output_dir", tmp_path / "x",
                           "--transfer_store", tmp_path / "store"])
    assert r.exit_code != 0 and "labeled by another teacher" in r.output


def test_augmented_copies_through_a_store_train_like_copies_in_memory(tiny_encoder_dir, tmp_path, monkeypatch):
    """``tagger_kd --augment``: the copies labeled into OUTPUT_DIR/augment_store and read from
    disk give the same augmented.txt, vocabulary and training losses as the in-memory path (the
    one hidden-state losses and out-of-fold teachers still take)."""
    import nlp_distill.distill.transfer_set as ts

    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", t, "--model_name_or_path",
                          tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu"]))
    common = ["tagger_kd", "--data_dir", TINY, *TAGGER_ARGS, "--teacher_model_path", t, "--epochs", 2, "--augment", 2]
    ok(invoke(nlp_train, [*common, "--output_dir", tmp_path / "streamed"]))
    monkeypatch.setattr(ts, "streams_augmentation", lambda dist: False)
    ok(invoke(nlp_train, [*common, "--output_dir", tmp_path / "memory"]))
    a, b = tmp_path / "streamed", tmp_path / "memory"
    assert (a / "augment_store" / "_store.json").is_file() and not (b / "augment_store").exists()
    assert len(TransferStore(a / "augment_store")) > len(DATA.train)  # ~2 copies per sentence
    assert (a / "augmented.txt").read_text() == (b / "augmented.txt").read_text()
    assert (a / "model" / "vocab.json").read_text() == (b / "model" / "vocab.json").read_text()
    log = [[json.loads(l) for l in (f / "train_log.jsonl").read_text().splitlines()] for f in (a, b)]
    for x, y in zip(*log):
        for k in ("train_loss", "train_kd", "train_gold"):
            assert x[k] == pytest.approx(y[k], rel=1e-3), k


def test_store_features_equal_in_memory_encoding_with_the_teacher_tags(teacher, tmp_path):
    """Rows read from a store (type tables + a flat type-id file) are the arrays ``EncodedData``
    builds from the same sentences with the teacher's pseudo-labels; a mixed batch (gold + store)
    collates exactly like one in-memory batch; under the threshold a sentence has no tags."""
    from nlp_distill.config import TaggerConfig
    from nlp_distill.data.batching import ConcatEncoded, EncodedData
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.distill.store_features import StoreFeatures
    from nlp_distill.distill.pseudo_label import label_from_logits
    from nlp_distill.models.neural_tagger import NeuralTagger

    sents = _sents()
    store = TransferStore.label(teacher, sents, tmp_path / "s", chunk=5, batch_size=4, show_progress=False)
    pl = [label_from_logits(t, np.asarray(store.sentence(i)), LabelVocab(store.labels)) for i, t in enumerate(sents)]
    gold = list(DATA.train[30:40])
    model = NeuralTagger.build(TaggerConfig(max_word_length=6), gold + [p.sentence for p in pl], DATA.labels)
    mem = EncodedData(gold + [p.sentence for p in pl], model.word_vocab, model.char_vocab, DATA.labels, 6,
                      [1.0] * len(gold) + [0.5] * len(pl))
    feats = StoreFeatures(store, model.word_vocab, model.char_vocab, DATA.labels, 6, tmp_path / "f", weight=0.5)
    both = ConcatEncoded([EncodedData(gold, model.word_vocab, model.char_vocab, DATA.labels, 6), feats])
    assert len(both) == len(mem) and list(both.lengths) == list(mem.lengths)
    for i in range(len(sents)):
        for a, b in zip(feats.rows(i), mem.rows(len(gold) + i)):
            np.testing.assert_array_equal(a, b)
    idx = [0, 3, len(gold) + 1, len(gold) + 7, 5]
    x, y = both.collate(idx), mem.collate(idx)
    for f in ("words", "chars", "shapes", "mask", "tags", "index", "weight"):
        assert torch.equal(getattr(x, f), getattr(y, f)), f
    confident = StoreFeatures(store, model.word_vocab, model.char_vocab, DATA.labels, 6, tmp_path / "g",
                              threshold=1.01, limit=4)
    assert len(confident) == 4 and all(confident.rows(i)[3] is None for i in range(4))



def test_store_keeps_an_empty_sentence_and_a_long_one_in_place(teacher, tmp_path):
    """The chunk writer concatenates every sentence's rows: an empty sentence (confidence 0) and a
    multi-window one must not shift the rows of the sentences after them."""
    sents = _sents()[:4] + [[]] + [DATA.train[0].tokens * 12] + _sents()[4:9]
    store = TransferStore.label(teacher, iter(sents), tmp_path / "s", chunk=4, show_progress=False)
    ref = teacher.word_logits(sents)
    assert len(store) == len(sents) and store.confidence[4] == 0.0 and len(store.sentence(4)) == 0
    for i, r in enumerate(ref):
        np.testing.assert_allclose(store.sentence(i).astype(np.float32), r, **FP16)
        if len(r):
            p = np.exp(r - r.max(-1, keepdims=True))
            assert store.confidence[i] == pytest.approx(float((p / p.sum(-1, keepdims=True)).max(-1).mean()), abs=2e-3)
