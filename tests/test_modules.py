"""Embedders (word dropout, char CNN / LSTM), char vocabulary, context encoders, word shapes."""
from __future__ import annotations

import math

import pytest
import torch

from nlp_distill.config import TaggerConfig
from nlp_distill.data.batching import EncodedData
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.vocab import N_SHAPES, PAD_ID, SHAPE_IDS, UNK_ID, Vocab, build_char_vocab, char_ids, word_shape
from nlp_distill.modules.embedders import CharCNN, CharLSTM, WordCharEmbedder, word_dropout
from nlp_distill.modules.encoders import BiLSTMEncoder, IDCNNEncoder


# ------------------------------------------------------------------------------ word dropout
def _word_batch(seed: int = 0, B: int = 200, L: int = 60):
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(2, 50, (B, L), generator=g)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)
    words = words.masked_fill(~mask, PAD_ID)
    return words, mask


def test_word_dropout_only_real_tokens_to_unk_at_rate_p():
    torch.manual_seed(0)
    words, mask = _word_batch()
    p = 0.3
    out = word_dropout(words, p, training=True)
    assert out.shape == words.shape and out.dtype == words.dtype
    changed = out != words
    assert torch.all(out[changed] == UNK_ID)  # only ever replaced by UNK
    assert torch.all(out[~mask] == PAD_ID)  # padding untouched
    assert not changed[~mask].any()
    assert torch.equal(out[~changed], words[~changed])
    n = int(mask.sum())
    rate = changed[mask].float().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) < 6 * sigma, (rate, p, n)
    assert words.max() > UNK_ID  # the input was not modified in place
    assert not (words == UNK_ID).any()


def test_word_dropout_off_in_eval_and_at_zero_rate():
    torch.manual_seed(0)
    words, _ = _word_batch(1)
    assert torch.equal(word_dropout(words, 0.5, training=False), words)
    assert torch.equal(word_dropout(words, 0.0, training=True), words)
    # p=1: every real word becomes UNK, padding stays
    out = word_dropout(words, 1.0, training=True)
    assert torch.equal(out, torch.where(words == PAD_ID, words, torch.full_like(words, UNK_ID)))


def test_embedder_applies_word_dropout_only_in_training():
    torch.manual_seed(0)
    cfg = TaggerConfig(word_emb_dim=4, char_encoder="none", use_word_shape=False, dropout=0.0, word_dropout=0.5)
    emb = WordCharEmbedder(cfg, n_words=50, n_chars=5)
    words, mask = _word_batch(2, B=20, L=10)
    chars = torch.zeros(20, 10, 1, dtype=torch.long)
    shapes = torch.zeros(20, 10, dtype=torch.long)
    emb.eval()
    assert torch.equal(emb(words, chars, shapes), emb.words(words))
    emb.train()
    out = emb(words, chars, shapes)
    unk_rows = (out == emb.words.weight[UNK_ID]).all(-1)
    assert unk_rows[mask].any() and not unk_rows[~mask].any()
    assert torch.all(out[~mask] == 0)  # padding embedding is zero


# ----------------------------------------------------------------------------- char vocab
def test_char_vocab_pad_unk_and_non_ascii():
    sents = [["Zoë", "Martín", "São"], ["Straße", "naïve", "abc"], ["Zoë"]]
    cv = build_char_vocab(sents)
    assert cv.stoi["<pad>"] == PAD_ID and cv.stoi["<unk>"] == UNK_ID
    seen = {c for s in sents for w in s for c in w}
    ids = {c: cv.id(c) for c in seen}
    assert all(i >= 2 for i in ids.values())  # no real char gets PAD (0) or UNK (1)
    assert len(set(ids.values())) == len(seen)  # distinct chars -> distinct ids
    assert len(cv) == len(seen) + 2
    for c in ["ë", "í", "ã", "ß", "ï"]:
        assert c in seen and cv.id(c) >= 2
    assert "z" not in seen and cv.id("z") == UNK_ID and cv.id("Z") >= 2  # chars are case-sensitive
    for c in ["🙂", "東", "京", "é", "Ö", "\u0301"]:
        assert c not in seen
        assert cv.id(c) == UNK_ID
    assert char_ids("東京🙂ë", cv, 30) == [UNK_ID, UNK_ID, UNK_ID, cv.id("ë")]
    # roundtrip through JSON-able dict keeps every id
    cv2 = Vocab.from_dict(cv.to_dict())
    assert cv2.itos == cv.itos and all(cv2.id(c) == i for c, i in ids.items())


def test_char_ids_truncate_keeps_first_and_last_chars():
    cv = build_char_vocab([["abcdefghijklmnopqrstuvwxyz"]])
    w = "abcdefghijklmnopqrstuvwxyz"
    ids = char_ids(w, cv, 10)
    assert len(ids) == 10
    assert ids == [cv.id(c) for c in w[:5] + w[-5:]]
    assert char_ids("abc", cv, 10) == [cv.id(c) for c in "abc"]


# ---------------------------------------------------------------------------- char encoders
def _char_tensor(words, cv, L=None, K=None):
    """One sentence of words -> (1, L, K) char ids, padded with zeros (padding words all zero)."""
    ids = [char_ids(w, cv, 30) or [UNK_ID] for w in words]
    L = L or len(words)
    K = K or max(len(i) for i in ids)
    t = torch.zeros(1, L, K, dtype=torch.long)
    for j, i in enumerate(ids):
        t[0, j, : len(i)] = torch.tensor(i)
    return t


@pytest.mark.parametrize("cls", [CharCNN, CharLSTM])
def test_char_encoders_edge_cases(cls):
    torch.manual_seed(0)
    cv = build_char_vocab([["Zoë", "Straße", "a", "I", "Martín", "東京"]])
    enc = cls(len(cv), 6, 8).eval()
    # 1-char words, a length-1 sentence, a non-ASCII word, an unseen emoji
    words = ["a", "I", "Zoë", "東京", "🙂", "Straße"]
    with torch.no_grad():
        full = enc(_char_tensor(words, cv))
        assert full.shape == (1, len(words), 8)
        assert torch.isfinite(full).all()
        for j, w in enumerate(words):
            alone = enc(_char_tensor([w], cv))  # a length-1 sentence, K = len(w)
            assert alone.shape == (1, 1, 8)
            # char padding (to the longest word) never changes a word's vector
            torch.testing.assert_close(alone[0, 0], full[0, j], atol=1e-6, rtol=1e-5)
            assert alone.abs().sum() > 0
        # padding words (all-zero chars) give zeros, and do not change real words
        padded = enc(_char_tensor(words, cv, L=len(words) + 3, K=12))
        assert torch.all(padded[0, len(words):] == 0)
        torch.testing.assert_close(padded[0, : len(words)], full[0], atol=1e-6, rtol=1e-5)
        # distinct words get distinct vectors, including distinct non-ASCII chars
        assert not torch.allclose(full[0, 2], enc(_char_tensor(["Zoe"], cv))[0, 0])
    # a whole batch of padding still works and is zero
    with torch.no_grad():
        z = enc(torch.zeros(2, 3, 4, dtype=torch.long))
    assert z.shape == (2, 3, 8) and torch.all(z == 0)


@pytest.mark.parametrize("cls", [CharCNN, CharLSTM])
def test_char_encoders_batch_of_sentences_from_encoded_data(cls):
    torch.manual_seed(0)
    train = [Sentence(["Zoë", "Martín"], ["B-PER", "I-PER"]), Sentence(["a"], ["O"])]
    cv = build_char_vocab(s.tokens for s in train)
    wv = Vocab.build([s.tokens for s in train])
    labels = LabelVocab(["O", "B-PER", "I-PER"])
    sents = [Sentence(["Zoë", "x", "東京", "Straße"]), Sentence(["a"]), Sentence(["🙂", ""])]
    data = EncodedData(sents, wv, cv, labels)
    b = data.collate([0, 1, 2])
    assert torch.all(b.chars[~b.mask] == 0)
    assert torch.all(b.chars[b.mask][:, 0] != 0)  # every real word has >= 1 char id (empty word -> UNK)
    enc = cls(len(cv), 6, 8).eval()
    with torch.no_grad():
        out = enc(b.chars)
        assert torch.all(out[~b.mask] == 0)
        for i in range(3):
            alone = enc(data.collate([i]).chars)
            n = len(sents[i].tokens)
            torch.testing.assert_close(alone[0, :n], out[i, :n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel", [1, 2, 4, 5])
def test_char_cnn_kernel_sizes(kernel):
    """Odd kernels work; an even kernel is refused clearly at construction (or, if supported,
    must still give one vector per word)."""
    torch.manual_seed(0)
    chars = torch.randint(1, 10, (2, 3, 5))
    chars[0, 2] = 0
    chars[1, 1, 2:] = 0
    try:
        enc = CharCNN(10, 4, 6, kernel).eval()
    except ValueError:
        assert kernel % 2 == 0
        return
    with torch.no_grad():
        out = enc(chars)
        assert out.shape == (2, 3, 6)
        assert torch.all(out[0, 2] == 0)
        torch.testing.assert_close(enc(chars[1:2, 1:2, :2])[0, 0], out[1, 1], atol=1e-6, rtol=1e-5)


def test_char_lstm_rejects_odd_size():
    with pytest.raises(ValueError):
        CharLSTM(10, 4, 7)


# ------------------------------------------------------------------------------- encoders
def _enc_batch(lengths, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    x = torch.randn(B, L, D, generator=g)
    mask = torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    # garbage on padding: a correct encoder never looks at it
    x = torch.where(mask.unsqueeze(-1), x, torch.randn(B, L, D, generator=g) * 100)
    return x, mask


@pytest.mark.parametrize("make", [
    lambda: BiLSTMEncoder(6, 5, num_layers=1, dropout=0.5),
    lambda: BiLSTMEncoder(6, 5, num_layers=2, dropout=0.5),
    lambda: IDCNNEncoder(6, 7, dilations=(1, 2, 1), iterations=3, dropout=0.5),
    lambda: IDCNNEncoder(6, 7, dilations=(1, 4), iterations=2, kernel=5, dropout=0.5),
], ids=["bilstm1", "bilstm2", "idcnn", "idcnn-k5"])
def test_encoder_padding_invariance(make):
    torch.manual_seed(0)
    enc = make().eval()
    lengths = [5, 1, 3, 7, 2]
    x, mask = _enc_batch(lengths)
    with torch.no_grad():
        out = enc(x, mask)
        assert out.shape == (len(lengths), max(lengths), enc.out_dim)
        assert torch.all(out[~mask] == 0)
        for b, n in enumerate(lengths):
            alone = enc(x[b : b + 1, :n], mask[b : b + 1, :n])
            torch.testing.assert_close(alone[0], out[b, :n], atol=1e-6, rtol=1e-5)
        # the backward direction / later positions do matter: changing the last real word
        # changes the first word's output (so the invariance above is not vacuous)
        x2 = x.clone()
        x2[0, lengths[0] - 1] += 1.0
        assert not torch.allclose(enc(x2, mask)[0, 0], out[0, 0])


def _packed_bilstm(lstm: torch.nn.LSTM, x, mask):
    """The reference: the same nn.LSTM over packed sequences (what the encoder ran before)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    packed = pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.size(1))
    return out


@pytest.mark.parametrize("layers", [1, 2])
def test_bilstm_without_packing_equals_packed_lstm_outputs_and_gradients(layers):
    torch.manual_seed(0)
    enc = BiLSTMEncoder(6, 5, num_layers=layers, dropout=0.0)
    x, mask = _enc_batch([5, 1, 3, 7, 2])
    ours = enc(x, mask)
    ref = _packed_bilstm(enc.lstm, x, mask)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    (ours * torch.randn_like(ours, generator=torch.Generator().manual_seed(1))).sum().backward()
    ours_grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    (ref * torch.randn_like(ref, generator=torch.Generator().manual_seed(1))).sum().backward()
    for a, p in zip(ours_grads, enc.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    # saved students keep loading: the weights are still those of one bidirectional nn.LSTM
    lstm = torch.nn.LSTM(6, 5, num_layers=layers, bidirectional=True)
    assert set(enc.state_dict()) == {f"lstm.{k}" for k in lstm.state_dict()}


def test_bilstm_backward_direction_starts_at_last_real_word():
    """The backward state at the last real word has seen only that word: compare against a
    single-step LSTM run by hand."""
    torch.manual_seed(0)
    enc = BiLSTMEncoder(4, 3, dropout=0.0).eval()
    x, mask = _enc_batch([2, 4], D=4, seed=3)
    with torch.no_grad():
        out = enc(x, mask)
        # reverse-direction LSTM weights applied to the last real word of sentence 0 from zero state
        ref = torch.nn.LSTM(4, 3, batch_first=True)
        ref.weight_ih_l0.copy_(enc.lstm.weight_ih_l0_reverse)
        ref.weight_hh_l0.copy_(enc.lstm.weight_hh_l0_reverse)
        ref.bias_ih_l0.copy_(enc.lstm.bias_ih_l0_reverse)
        ref.bias_hh_l0.copy_(enc.lstm.bias_hh_l0_reverse)
        h, _ = ref(x[0:1, 1:2])
    torch.testing.assert_close(out[0, 1, 3:], h[0, 0], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------ word shapes
@pytest.mark.parametrize("word,shape", [
    ("hello", "lower"), ("Hello", "title"), ("HELLO", "upper"), ("iPhone", "mixed"), ("2016", "digit"),
    ("abc123", "alnum"), ("U.S.", "alnum"), ("...", "punct"), (",", "punct"), ("@user", "mention"),
    ("#tag", "hashtag"), ("http://x.org/a", "url"), ("www.x.org", "url"), ("Zoë", "title"), ("straße", "lower"),
    ("@", "punct"), ("#", "punct"),
])
def test_word_shape(word, shape):
    assert word_shape(word) == SHAPE_IDS[shape]
    assert 1 <= word_shape(word) < N_SHAPES


def test_vectorised_collate_equals_a_per_word_loop():
    from nlp_distill.data.batching import EncodedData
    from nlp_distill.data.conll import Sentence, read_conll
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.data.vocab import Vocab, build_char_vocab, char_ids, word_shape
    from tests.conftest import TINY

    train = read_conll(TINY / "train.txt")
    wv, cv = Vocab.build((s.tokens for s in train), 1, True), build_char_vocab(s.tokens for s in train)
    labels = LabelVocab.from_sentences(s.tags for s in train)
    sents = train[:5] + [Sentence(["Zoë", "x" * 50, "!"]), Sentence(train[6].tokens)]  # unseen chars, a long word, untagged
    enc = EncodedData(sents, wv, cv, labels, max_word_length=12, weights=[1, 2, 3, 4, 5, 6, 7])
    idx = [6, 0, 5, 3]
    b = enc.collate(idx)
    for r, i in enumerate(idx):
        s = sents[i]
        n = len(s)
        assert b.words[r, :n].tolist() == wv.ids(s.tokens) and b.words[r, n:].eq(0).all()
        assert b.shapes[r, :n].tolist() == [word_shape(w) for w in s.tokens]
        assert b.mask[r].tolist() == [True] * n + [False] * (b.mask.size(1) - n)
        for j, w in enumerate(s.tokens):
            c = char_ids(w, cv, 12) or [1]
            assert b.chars[r, j, : len(c)].tolist() == c and b.chars[r, j, len(c):].eq(0).all()
        assert b.tags[r, :n].tolist() == (labels.encode(s.tags) if s.tags else [-100] * n)
    assert b.weight.tolist() == [7.0, 1.0, 6.0, 4.0] and b.index.tolist() == idx


def test_the_encoder_registry_is_what_model_type_offers():
    import types

    from nlp_distill.config import TaggerConfig
    from nlp_distill.modules.encoders import ENCODERS, build_encoder

    assert set(TaggerConfig.__dataclass_fields__["model_type"].metadata["choices"]) == set(ENCODERS)
    for name in ENCODERS:
        enc = build_encoder(6, TaggerConfig(model_type=name, hidden=4, precision="fp32"))
        out = enc(torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
        assert out.shape == (2, 5, enc.out_dim) and isinstance(enc.lstm_kernel, bool)
    with pytest.raises(ValueError, match="unknown model_type"):
        build_encoder(6, types.SimpleNamespace(model_type="gru"))
