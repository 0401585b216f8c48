"""Teacher features: per-word student inputs from a teacher's states, checked against direct
teacher calls, cached by the teacher's fingerprint, frozen in training, and carried through
save / load, compact and ONNX folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nlp_distill.config import StudentDataConfig, TaggerConfig, TransformerConfig
from nlp_distill.data.conll import Sentence
from nlp_distill.distill import teacher_features as tf
from nlp_distill.errors import ConfigError
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.student import build_student, resolve_feature_dim
from tests.model_zoo import LABELS, TRAIN


@pytest.fixture(scope="module")
def teacher(tiny_encoder_dir):
    from nlp_distill.models.transformer import TransformerTokenClassifier

    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=LABELS, config=TransformerConfig(
        max_seq_length=16, stride=4, precision="fp32"))


def _direct_state(teacher, word: str) -> np.ndarray:
    """The teacher's last hidden state averaged over the word's sub-tokens, [CLS] w [SEP] alone."""
    enc = teacher.tokenizer([word], is_split_into_words=True, return_tensors="pt")
    teacher.eval()
    with torch.no_grad():
        h = teacher.model(**enc, output_hidden_states=True).hidden_states[-1][0]  # (T, H)
    return h[1:-1].mean(0).numpy()


def test_word_states_are_each_word_alone_through_the_teacher(teacher):
    words = ["mary", "visited", "new", "yorkshire"]
    states = tf.word_states(teacher, words)
    assert states.shape == (4, teacher.model.config.hidden_size)
    for w, s in zip(words, states):
        np.testing.assert_allclose(s, _direct_state(teacher, w), atol=1e-5)


def test_context_states_average_every_occurrence(teacher):
    sents = [["Mary", "visited", "Paris"], ["paris", "is", "big"], ["Mary", "left"]]
    words, states = tf.context_states(teacher, sents, lowercase=True, chunk=2)  # two chunks
    per = teacher.word_outputs(sents, hidden=True)[1]
    index = {w: i for i, w in enumerate(words)}
    assert set(words) == {"mary", "visited", "paris", "is", "big", "left"}
    np.testing.assert_allclose(states[index["paris"]], (per[0][2] + per[1][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(states[index["mary"]], (per[0][0] + per[2][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(states[index["big"]], per[1][2], atol=1e-5)


def test_pca_project_keeps_the_top_directions_at_the_target_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    out = tf.pca_project(x, 2)
    assert out.shape == (200, 2)
    assert abs(out.std() - tf.TARGET_STD) < 1e-5
    # the naive reference: eigenvectors of the covariance, largest first
    xc = x - x.mean(0)
    vals, vecs = np.linalg.eigh(xc.T @ xc)
    ref = xc @ vecs[:, ::-1][:, :2]
    for k in range(2):  # same directions up to sign
        assert abs(abs(np.corrcoef(out[:, k], ref[:, k])[0, 1]) - 1) < 1e-6
    wide = tf.pca_project(x, 8)  # more columns than the states have: zeros beyond
    assert np.all(wide[:, 6:] == 0)


def _student(**data):
    d = StudentDataConfig(embedding_file="none", **data)
    tagger = resolve_feature_dim(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8,
                                              precision="fp32", teacher_feature_dim=8), d)
    torch.manual_seed(0)
    return build_student(tagger, d, TRAIN, LABELS), d


def test_the_feature_table_is_the_pca_of_the_word_states(teacher, tmp_path):
    model, data = _student(teacher_features="teacher")
    tf.load_teacher_features(model, data, teacher=teacher, cache_dir=tmp_path / "cache")
    words = model.word_vocab.itos[2:]
    expected = tf.pca_project(tf.word_states(teacher, words), 8)
    got = model.embedder.features.weight.detach().numpy()
    np.testing.assert_allclose(got[2:], expected, atol=1e-4)
    assert np.all(got[:2] == 0)  # padding and unknown words: no teacher feature


def test_cache_is_reused_extended_and_refused_for_another_teacher(teacher, tmp_path, monkeypatch):
    calls = []
    real = tf.word_states
    monkeypatch.setattr(tf, "word_states", lambda t, words, *a: calls.append(list(words)) or real(t, words, *a))
    vocab_a, vocab_b = NeuralTagger.build(TaggerConfig(), TRAIN[:5], LABELS).word_vocab, \
        NeuralTagger.build(TaggerConfig(), TRAIN[:9], LABELS).word_vocab
    first = tf.teacher_feature_rows(teacher, vocab_a, 4, cache_dir=tmp_path, key="k1")
    assert len(calls) == 1 and len(calls[0]) == len(vocab_a) - 2
    again = tf.teacher_feature_rows(teacher, vocab_a, 4, cache_dir=tmp_path, key="k1")
    assert len(calls) == 1  # all cached: the teacher did not run
    np.testing.assert_allclose(first, again)
    tf.teacher_feature_rows(teacher, vocab_b, 4, cache_dir=tmp_path, key="k1")
    assert set(calls[1]) == set(vocab_b.itos[2:]) - set(vocab_a.itos[2:])  # only the new words
    with pytest.raises(ConfigError, match="another teacher"):
        tf.teacher_feature_rows(teacher, vocab_a, 4, cache_dir=tmp_path, key="k2")


def test_context_mode_pools_the_corpus_and_moves_the_rest_by_the_mean_offset(teacher):
    vocab = NeuralTagger.build(TaggerConfig(), [Sentence(["mary", "visited", "paris", "london"])], LABELS).word_vocab
    corpus = [["Mary", "visited", "Paris"]]  # "london" is not in the corpus
    got = tf._with_context(teacher, vocab.itos[2:], tf.word_states(teacher, vocab.itos[2:]), corpus, True)
    ctx = teacher.word_outputs(corpus, hidden=True)[1][0]
    word = tf.word_states(teacher, vocab.itos[2:])
    np.testing.assert_allclose(got[:3], ctx, atol=1e-5)
    np.testing.assert_allclose(got[3], word[3] + (ctx - word[:3]).mean(0), atol=1e-5)


def test_features_are_frozen_saved_and_change_predictions(teacher, tmp_path):
    from nlp_distill.modules.masked_loss import ce

    model, data = _student(teacher_features="teacher")
    tf.load_teacher_features(model, data, teacher=teacher, cache_dir=tmp_path / "cache")
    table = model.embedder.features.weight.detach().clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    enc = model.encode(TRAIN[:16])
    for _ in range(3):
        b = enc.collate(list(range(16)))
        opt.zero_grad()
        ce(model(b), b.tags, b.mask).backward()
        opt.step()
    assert torch.equal(model.embedder.features.weight, table)  # frozen
    sents = [s.tokens for s in TRAIN[:20]]
    before = model.predict(sents)
    model.save_pretrained(tmp_path / "m")
    loaded = NeuralTagger.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.embedder.features.weight, table)
    assert loaded.predict(sents) == before
    with torch.no_grad():  # the features reach the output: other features, other emissions
        loaded.embedder.features.weight[2:].normal_(0, 3.0)
    b = loaded.encode(TRAIN[:20]).collate(list(range(20)))
    loaded.eval()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(loaded(b), model(b))


def test_features_survive_compact_and_onnx(teacher, tmp_path):
    pytest.importorskip("onnxruntime")
    from nlp_distill.export.backends import export_model
    from nlp_distill.export.compact import compact_tagger
    from nlp_distill.pipelines import pipeline

    model, data = _student(teacher_features="teacher")
    tf.load_teacher_features(model, data, teacher=teacher, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        model.proj.weight.normal_(0, 1.0)
    model.save_pretrained(tmp_path / "m")
    compact_tagger(tmp_path / "m", tmp_path / "compact")
    export_model(tmp_path / "m", tmp_path / "onnx")
    texts = ["Mary visited Paris", "the big apple is in new york"]
    ref = pipeline(str(tmp_path / "m")).tag_tokens([t.split() for t in texts])
    onnx = pipeline(str(tmp_path / "onnx")).tag_tokens([t.split() for t in texts])
    assert [r["tags"] for r in onnx] == [r["tags"] for r in ref]
    compact = NeuralTagger.from_pretrained(tmp_path / "compact")
    table = model.embedder.features.weight.detach()
    back = compact.embedder.features.weight.detach()  # 8 columns: PQ subspaces of 4 (5 does not divide 8)
    assert back.shape == table.shape and not torch.equal(back, table)
    assert ((back - table).norm(dim=1) / table.norm(dim=1).clamp_min(1e-6))[2:].mean() < 0.35
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "compact" / "model.safetensors"))
    assert "embedder.features.weight" not in saved and saved["embedder.features.weight.special"].shape == (2, 8)
    assert pipeline(str(tmp_path / "compact")).tag_tokens([t.split() for t in texts])


def test_feature_settings_are_checked():
    with pytest.raises(ConfigError, match="needs --teacher_features"):
        resolve_feature_dim(TaggerConfig(teacher_feature_dim=8), StudentDataConfig())
    assert resolve_feature_dim(TaggerConfig(), StudentDataConfig(teacher_features="minilm")).teacher_feature_dim == 64
    assert resolve_feature_dim(TaggerConfig(), StudentDataConfig()).teacher_feature_dim == 0
    model, data = _student(teacher_features="teacher")
    with pytest.raises(ConfigError, match="needs a teacher"):
        tf.load_teacher_features(model, data)
    with pytest.raises(ConfigError, match="mode"):
        tf.teacher_feature_rows(None, model.word_vocab, 4, mode="glove", key="k")
