"""Compact students (``nlp-export compact``): product quantisation against a naive reference,
the stored parts of the word table, the round trip through the model folder, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nlp_distill.config import CompactConfig, TaggerConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.data.labels import LabelVocab
from nlp_distill.errors import ConfigError
from nlp_distill.export.compact import compact_tagger
from nlp_distill.io import folder_size
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.tagger_storage import WORD_TABLE, compact_state, restore_state
from nlp_distill.modules.product_quantization import kmeans, pq_decode, pq_encode
from procedures.cli import nlp_export, nlp_inference
from tests.conftest import TINY
from tests.test_cli import invoke, ok

TRAIN = read_conll(TINY / "train.txt")


def test_kmeans_assigns_each_row_its_nearest_centroid():
    x = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    cent, assign = kmeans(x, 8)
    naive = [min(range(8), key=lambda c: float(((x[i] - cent[c]) ** 2).sum())) for i in range(len(x))]
    assert assign.tolist() == naive
    for c in range(8):  # a Lloyd fixed point: each centroid is the mean of its rows
        np.testing.assert_allclose(cent[c], x[assign == c].mean(0), rtol=1e-4, atol=1e-5)


def test_pq_is_exact_when_each_subspace_has_few_distinct_parts():
    rng = np.random.default_rng(1)
    parts = rng.normal(size=(3, 4, 2)).astype(np.float32)  # 3 subspaces x 4 patterns of 2 columns
    choice = rng.integers(0, 4, size=(50, 3))
    table = np.concatenate([parts[s][choice[:, s]] for s in range(3)], axis=1)  # (50, 6)
    codes, books = pq_encode(table, dims=2, centroids=4)
    assert codes.dtype == np.uint8 and codes.shape == (50, 3) and books.shape == (3, 4, 2)
    np.testing.assert_allclose(pq_decode(codes, books), table, atol=1e-6)
    naive = np.stack([np.concatenate([books[s, codes[i, s]] for s in range(3)]) for i in range(50)])
    np.testing.assert_array_equal(pq_decode(codes, books), naive)


def test_pq_rejects_a_width_it_cannot_split():
    with pytest.raises(ValueError, match="cannot be cut"):
        pq_encode(np.zeros((10, 7), np.float32), dims=2)


def _model(**cfg) -> NeuralTagger:
    torch.manual_seed(0)
    config = TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, use_crf=True, precision="fp32", **cfg)
    return NeuralTagger.build(config, TRAIN, LabelVocab.from_sentences(s.tags for s in TRAIN)).eval()


def test_stored_parts_of_the_word_table():
    model = _model()
    state = model.state_dict()
    table = state[WORD_TABLE]
    storage = CompactConfig(pq_dims=5, pq_centroids=16, pq_head=20)
    saved = compact_state(state, storage)
    assert WORD_TABLE not in saved and saved[WORD_TABLE + ".pq_codes"].shape == (len(table) - 22, 2)
    assert all(v.dtype == torch.float16 for k, v in saved.items() if v.is_floating_point())
    back = restore_state(saved, storage)
    assert set(back) == set(state) and all(back[k].dtype == state[k].dtype for k in state)
    for k in state:  # every other tensor: fp16-rounded
        if k != WORD_TABLE and state[k].is_floating_point():
            torch.testing.assert_close(back[k], state[k].half().float(), rtol=0, atol=0)
    t = back[WORD_TABLE]
    torch.testing.assert_close(t[:2], table[:2].half().float(), rtol=0, atol=0)  # <pad>, <unk>
    step = table[2:22].abs().amax(1, keepdim=True) / 127  # int8 rows: within half a step (+ fp16 scale)
    assert ((t[2:22] - table[2:22]).abs() <= step * 0.51 + 1e-3 * table[2:22].abs().amax(1, keepdim=True)).all()
    books = saved[WORD_TABLE + ".pq_codebooks"].float().numpy()
    np.testing.assert_array_equal(t[22:].numpy(), pq_decode(saved[WORD_TABLE + ".pq_codes"].numpy(), books))


def test_compact_folder_round_trip_and_cli(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "student")
    r = compact_tagger(tmp_path / "student", tmp_path / "small", CompactConfig(pq_centroids=32, pq_head=10))
    assert r["bytes_after"] == folder_size(tmp_path / "small") < r["bytes_before"]
    small = NeuralTagger.from_pretrained(tmp_path / "small")
    state = restore_state(compact_state(model.state_dict(), CompactConfig(pq_centroids=32, pq_head=10)),
                          CompactConfig(pq_centroids=32, pq_head=10))
    for k, v in small.state_dict().items():  # the folder holds exactly the compact state (k-means is seeded)
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    sents = [s.tokens for s in read_conll(TINY / "test.txt")]
    again = tmp_path / "again"
    small.save_pretrained(again)  # a loaded compact model saves as an ordinary float32 student
    assert NeuralTagger.from_pretrained(again).predict(sents) == small.predict(sents)

    out = invoke(nlp_export, ["compact", "--model_dir", tmp_path / "student", "--output_dir", tmp_path / "cli",
                              "--pq_centroids", "32", "--pq_head", "10"])
    ok(out)
    assert "smaller" in out.output
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tmp_path / "cli", "--data_file", TINY / "test.txt",
                              "--output_file", tmp_path / "pred.conll"]))
    tags = [line.split()[-1] for line in (tmp_path / "pred.conll").read_text().splitlines() if line.strip()]
    assert tags == [t for s in small.predict(sents) for t in s]


def test_compact_refuses_what_it_cannot_store(tmp_path, tiny_encoder_dir):
    _model().save_pretrained(tmp_path / "student")
    r = invoke(nlp_export, ["compact", "--model_dir", tmp_path / "student", "--output_dir", tmp_path / "o",
                            "--pq_dims", "3"])
    assert r.exit_code != 0 and "--pq_dims 3 does not divide the word vector size 10" in r.output
    assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="takes a BiLSTM/ID-CNN student"):
        compact_tagger(tiny_encoder_dir, tmp_path / "t")


def test_trained_on_quantised_vectors_compacts_them_without_loss(tmp_path):
    """--embedding_pq_dims: the student starts from the product quantisation of the vectors, so
    the compact copy stores the rows training never touched exactly (fp16 codebooks aside)."""
    from nlp_distill.config import StudentDataConfig
    from nlp_distill.models.student import build_student

    rng = np.random.default_rng(0)
    words = sorted({w.lower() for s in TRAIN for w in s.tokens}) + [f"unseen{i}" for i in range(400)]
    f = tmp_path / "vectors.txt"
    f.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=10)) + "\n" for w in words), encoding="utf-8")
    cfg = TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, use_crf=True, precision="fp32")
    labels = LabelVocab.from_sentences(s.tags for s in TRAIN)
    data = StudentDataConfig(embedding_file=str(f), embedding_vocab=len(words), embedding_pq_dims=5)
    torch.manual_seed(0)
    model = build_student(cfg, data, TRAIN, labels).eval()
    table = model.embedder.words.weight.detach()
    found = table[2:].abs().sum(1) > 0
    for s in range(2):  # at most 256 distinct parts per subspace among the pretrained rows
        assert len(torch.unique(table[2:][found][:, 5 * s : 5 * s + 5], dim=0)) <= 256
    with torch.no_grad():  # training moves the rows of its own words (a prefix of the vocabulary)
        model.embedder.words.weight[2:40] += 0.1 * torch.randn(38, 10)
    table = model.embedder.words.weight.detach().clone()
    model.save_pretrained(tmp_path / "m")
    compact_tagger(tmp_path / "m", tmp_path / "small", CompactConfig(pq_head=10))
    saved = load_file(str(tmp_path / "small" / "model.safetensors"))
    assert 10 <= saved[WORD_TABLE + ".head_int8"].shape[0] <= 38  # the head grew over the moved rows
    small = NeuralTagger.from_pretrained(tmp_path / "small").embedder.words.weight.detach()
    torch.testing.assert_close(small[40:], table[40:], rtol=2e-3, atol=2e-3)  # PQ rows: exact codes, fp16 books
    torch.testing.assert_close(small[2:40], table[2:40], rtol=0, atol=0.03)  # int8 rows (or exact codes)
    assert float((small - table).abs().max()) < 0.03
    with pytest.raises(ConfigError, match="--embedding_pq_dims 3 does not divide --word_embedding_dims 10"):
        build_student(cfg, data.replace(embedding_pq_dims=3), TRAIN, labels)
