"""Words <-> sub-words: windows, ownership, unmappable words, pooling; word-level teacher logits."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.conftest import make_tiny_tokenizer
from nlp_distill.data.alignment import WordAligner, pad_rows, pool_words

ZWSP = "\u200b"
WORDS = ["Mary", "Jones", "visited", "New", "York", "yesterday", ".", "São", "Paulo", "Zoë", "xyzzy", "it",
         "rained", "meeting", "hosted", ","]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    t = make_tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    assert t.is_fast
    return t


def _ids(tok, word):
    """Sub-token ids of a single word, computed independently of the aligner."""
    return tok(word, add_special_tokens=False)["input_ids"]


def _random_sentence(n, seed=0):
    rng = random.Random(seed)
    return [rng.choice(WORDS) for _ in range(n)]


def test_tokenizer_preconditions(tok):
    # the test vocabulary really splits some words and really drops a zero-width space
    assert len(_ids(tok, "visited")) == 2
    assert len(_ids(tok, "xyzzy")) == 5
    assert len(_ids(tok, "mary")) == 1
    assert _ids(tok, ZWSP) == []


def test_encode_short_sentence(tok):
    al = WordAligner(tok, max_length=32, stride=8)
    words = ["Mary", "visited", "São", "Paulo", "."]
    wins = al.encode([words])
    assert len(wins) == 1
    w = wins[0]
    assert w.sent == 0
    assert w.input_ids[0] == tok.cls_token_id and w.input_ids[-1] == tok.sep_token_id
    per_word = [_ids(tok, x) for x in words]
    assert w.input_ids == [tok.cls_token_id] + [i for p in per_word for i in p] + [tok.sep_token_id]
    assert w.word_len == [len(p) for p in per_word]
    # starts: 1 ([CLS]) then running sums of the lengths
    expected_starts, pos = [], 1
    for p in per_word:
        expected_starts.append(pos)
        pos += len(p)
    assert w.word_start == expected_starts
    assert w.word_index == list(range(len(words)))
    assert w.owned == [True] * len(words)
    for j, p in enumerate(per_word):
        assert w.input_ids[w.word_start[j]: w.word_start[j] + w.word_len[j]] == p


def test_encode_matches_tokenizer_word_ids(tok):
    al = WordAligner(tok, max_length=64, stride=8)
    words = _random_sentence(12, seed=3)
    w = al.encode([words])[0]
    enc = tok([words], is_split_into_words=True, add_special_tokens=True)
    assert w.input_ids == enc["input_ids"][0]
    wids = enc.word_ids(0)
    for j in range(len(words)):
        positions = [k for k, x in enumerate(wids) if x == j]
        assert positions == list(range(w.word_start[j], w.word_start[j] + w.word_len[j]))


def test_encode_several_sentences_and_empty(tok):
    al = WordAligner(tok, max_length=32, stride=8)
    wins = al.encode([["Mary"], [], ["it", "rained"]])
    assert [w.sent for w in wins] == [0, 2]
    assert [w.word_index for w in wins] == [[0], [0, 1]]
    assert al.encode([]) == []


def test_long_sentence_windows(tok):
    max_length = 32
    al = WordAligner(tok, max_length=max_length, stride=8)
    words = _random_sentence(600, seed=1)
    per_word = [_ids(tok, x) for x in words]
    assert sum(map(len, per_word)) > 3 * max_length
    wins = al.encode([words])
    assert len(wins) > 1
    owners = [0] * len(words)
    seen = [0] * len(words)
    for k, w in enumerate(wins):
        assert w.sent == 0
        assert len(w.input_ids) <= max_length
        assert w.input_ids[0] == tok.cls_token_id and w.input_ids[-1] == tok.sep_token_id
        assert w.word_index == list(range(w.word_index[0], w.word_index[-1] + 1))  # contiguous words
        for j, wi in enumerate(w.word_index):
            assert w.input_ids[w.word_start[j]: w.word_start[j] + w.word_len[j]] == per_word[wi]
            seen[wi] += 1
            owners[wi] += int(w.owned[j])
        # the words fill the window exactly between [CLS] and [SEP]
        assert w.word_start[0] == 1 and w.word_start[-1] + w.word_len[-1] == len(w.input_ids) - 1
        if k:
            prev = wins[k - 1]
            # consecutive windows overlap and move forward
            assert prev.word_index[0] < w.word_index[0] <= prev.word_index[-1]
    assert owners == [1] * len(words)  # every word owned by exactly one window
    assert min(seen) >= 1
    assert wins[0].word_index[0] == 0 and wins[-1].word_index[-1] == len(words) - 1
    # owned words of each window are contiguous, and windows own them in sentence order
    owned_runs = [[wi for wi, o in zip(w.word_index, w.owned) if o] for w in wins]
    flat = [wi for run in owned_runs for wi in run]
    assert flat == list(range(len(words)))
    for run in owned_runs:
        if run:
            assert run == list(range(run[0], run[-1] + 1))
    # the owner is a window giving the word the most context on its nearer side
    margins = {}
    for k, w in enumerate(wins):
        n_sub = len(w.input_ids) - 2  # word sub-tokens between [CLS] and [SEP]
        for j, wi in enumerate(w.word_index):
            left = w.word_start[j] - 1
            right = n_sub - left - w.word_len[j]
            margins.setdefault(wi, []).append((min(left, right), w.owned[j]))
    for wi, ms in margins.items():
        best = max(m for m, _ in ms)
        assert [m for m, o in ms if o] == [best], wi
    # overlap gives context: a word at a window edge is owned by a window where it is not at an edge
    edge_words = {w.word_index[-1] for w in wins[:-1]} | {w.word_index[0] for w in wins[1:]}
    assert sum(1 for wi in edge_words if [m for m, o in margins[wi] if o][0] > 0) > len(edge_words) // 2


def test_zero_subtoken_word_gets_unk(tok):
    al = WordAligner(tok, max_length=32, stride=8)
    words = ["Mary", ZWSP, "visited", ZWSP]
    wins = al.encode([words])
    assert len(wins) == 1
    w = wins[0]
    assert w.word_len == [1, 1, 2, 1]
    assert w.word_start == [1, 2, 3, 5]
    assert w.input_ids[2] == tok.unk_token_id and w.input_ids[5] == tok.unk_token_id
    assert w.owned == [True] * 4
    batch = al.collate(wins)
    assert batch["word_mask"].sum().item() == 4
    # a sentence of only unmappable words still gets one slot per word
    w2 = al.encode([[ZWSP, "\x00"]])[0]
    assert w2.input_ids == [tok.cls_token_id, tok.unk_token_id, tok.unk_token_id, tok.sep_token_id]


def test_overlong_word_is_cut_to_budget(tok):
    al = WordAligner(tok, max_length=8, stride=2)  # budget 6 sub-tokens
    long_word = "xyzzyxyzzy"  # 10 sub-tokens
    assert len(_ids(tok, long_word)) == 10
    wins = al.encode([["Mary", long_word, "it"]])
    owned_slots = [(wi, w.word_len[j]) for w in wins for j, wi in enumerate(w.word_index) if w.owned[j]]
    assert sorted(wi for wi, _ in owned_slots) == [0, 1, 2]
    assert dict(owned_slots)[1] == 6
    assert all(len(w.input_ids) <= 8 for w in wins)


def test_max_length_too_small(tok):
    with pytest.raises(ValueError):
        WordAligner(tok, max_length=5)


def test_collate(tok):
    al = WordAligner(tok, max_length=32, stride=8)
    wins = al.encode([["Mary", "visited"], ["it", "rained", "all", "day", "."]])
    b = al.collate(wins)
    T = max(len(w.input_ids) for w in wins)
    # padded to a multiple of 8 sub-tokens (few distinct shapes), never past max_length
    assert b["input_ids"].shape == (2, -(-T // 8) * 8) and b["word_start"].shape == (2, 5)
    assert al.collate(al.encode([["word"] * 40]))["input_ids"].shape[1] == 32
    odd = WordAligner(tok, max_length=30, stride=8)
    assert odd.collate(odd.encode([["word"] * 40]))["input_ids"].shape[1] == 30  # capped, not 32
    assert b["attention_mask"].sum(1).tolist() == [len(w.input_ids) for w in wins]
    assert b["word_mask"].sum(1).tolist() == [2, 5]
    assert (b["input_ids"][0, len(wins[0].input_ids):] == tok.pad_token_id).all()
    assert (b["word_len"] >= 1).all()  # padding word slots stay poolable
    assert b["word_start"][0, :2].tolist() == wins[0].word_start


def test_pad_rows_copies_row_zero_up_to_a_power_of_two_then_multiples_of_8(tok):
    al = WordAligner(tok, max_length=32, stride=8)
    b = al.collate(al.encode([["Mary", "visited"], ["it", "rained", "."], ["York"]]))
    p = pad_rows(b)
    assert p.keys() == b.keys()
    for k, v in b.items():
        assert p[k].shape == (4, *v.shape[1:])
        assert torch.equal(p[k][:3], v)
        assert (p[k][3:] == v[:1]).all()  # real windows, so attention is well defined
    for n, rows in [(1, 1), (2, 2), (5, 8), (8, 8), (9, 16), (16, 16), (17, 24)]:
        batch = al.collate(al.encode([["x"]] * n))
        assert len(pad_rows(batch)["input_ids"]) == rows
    one = al.collate(al.encode([["x"]]))
    assert pad_rows(one) is one  # a one-sentence call is not padded to 8 rows


def test_inference_batches_have_few_row_shapes(clf, monkeypatch):
    seen, forward = [], clf.model.forward
    monkeypatch.setattr(clf.model, "forward", lambda **kw: seen.append(tuple(kw["input_ids"].shape)) or forward(**kw))
    sents = [_random_sentence(n, seed=n) for n in range(1, 12)]
    got = clf.word_logits(sents, batch_size=5)
    assert seen and all(b in (1, 2, 4) or b % 8 == 0 for b, _ in seen) and all(t % 8 == 0 for _, t in seen)
    for s, g in zip(sents, got):  # the copies change nothing
        np.testing.assert_allclose(g, clf.word_logits([s], batch_size=1)[0], atol=1e-5)


# ---------------------------------------------------------------------------------- pool_words
def _random_layout(B, T, W, gen):
    starts = torch.zeros(B, W, dtype=torch.long)
    lens = torch.ones(B, W, dtype=torch.long)
    for b in range(B):
        pos = 1
        for w in range(W):
            n = int(torch.randint(1, 4, (1,), generator=gen))
            if pos + n > T:
                break  # padding slot: start 0, len 1
            starts[b, w], lens[b, w] = pos, n
            pos += n
    return starts, lens


@pytest.mark.parametrize("mode", ["first", "mean"])
def test_pool_words_matches_loop(mode):
    gen = torch.Generator().manual_seed(0)
    B, T, W, C = 3, 12, 5, 4
    sub = torch.randn(B, T, C, generator=gen)
    starts, lens = _random_layout(B, T, W, gen)
    out = pool_words(sub, starts, lens, mode)
    assert out.shape == (B, W, C)
    for b in range(B):
        for w in range(W):
            s, n = int(starts[b, w]), int(lens[b, w])
            if mode == "first":
                expected = sub[b, s]
            else:
                expected = sum(sub[b, s + k] for k in range(n)) / n
            assert torch.allclose(out[b, w], expected, atol=1e-6), (b, w)


def test_pool_words_mean_differs_from_first_and_has_grad():
    sub = torch.arange(12, dtype=torch.float32).view(1, 6, 2).requires_grad_()
    starts = torch.tensor([[1, 3]])
    lens = torch.tensor([[2, 3]])
    first = pool_words(sub, starts, lens, "first")
    mean = pool_words(sub, starts, lens, "mean")
    # rows of sub: [0,1],[2,3],[4,5],[6,7],[8,9],[10,11]
    assert first.tolist() == [[[2.0, 3.0], [6.0, 7.0]]]
    assert mean.tolist() == [[[3.0, 4.0], [8.0, 9.0]]]
    mean.sum().backward()
    assert sub.grad[0, 0].tolist() == [0.0, 0.0] and sub.grad[0, 1].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        pool_words(sub, starts, lens, "max")


# ------------------------------------------------------------------- TransformerTokenClassifier
@pytest.fixture(scope="module")
def clf(tiny_encoder_dir, tiny_labels):
    from nlp_distill.config import TransformerConfig
    from nlp_distill.models.transformer import TransformerTokenClassifier

    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(
        str(tiny_encoder_dir), labels=tiny_labels, config=TransformerConfig(max_seq_length=16, stride=4, precision="fp32"))  # exact comparisons across batches


def test_word_logits_one_row_per_word(clf, tiny_labels):
    long = _random_sentence(600, seed=2)
    short = ["Mary", "visited", ZWSP, "York"]
    assert len(clf.windows([long])) > 10  # really windowed
    out = clf.word_logits([long, short, ["x"]])
    assert [o.shape for o in out] == [(600, len(tiny_labels)), (4, len(tiny_labels)), (1, len(tiny_labels))]
    for o in out:
        assert o.dtype == np.float32 and np.isfinite(o).all()
        # rows start as zeros: a row left at zero would be a word no window filled in
        assert (np.abs(o).sum(1) > 0).all()
    assert clf.word_logits([]) == []
    assert clf.word_logits([[]])[0].shape == (0, len(tiny_labels))
    # the caller's train/eval mode is restored
    clf.train()
    clf.word_logits([short])
    assert clf.training and clf.model.training
    clf.eval()
    clf.word_logits([short])
    assert not clf.training


def test_word_logits_padding_invariant(clf):
    short = ["Mary", "visited", "York"]
    assert len(clf.windows([short])) == 1 and len(clf.windows([short])[0].input_ids) < 16
    alone = clf.word_logits([short])[0]
    others = [_random_sentence(40, seed=5), ["it", "rained", "all", "day", "yesterday", "."], _random_sentence(9, 6)]
    batched = clf.word_logits([others[0], short, others[1], others[2]], batch_size=64)
    np.testing.assert_allclose(batched[1], alone, atol=1e-5)
    # the long sentence does not depend on batch composition either
    one_by_one = clf.word_logits([others[0]], batch_size=1)[0]
    np.testing.assert_allclose(batched[0], one_by_one, atol=1e-5)
    # predict agrees with the best scheme-valid path of the logits
    from nlp_distill.modules.viterbi import best_valid_paths

    tags = clf.predict([short])[0]
    assert tags == clf.labels.decode(best_valid_paths([alone], clf.labels)[0])


def test_multi_window_words_take_their_owner_windows_logits_and_train_once(clf, tiny_labels):
    """Each word of a sentence spanning several windows gets the logits of the window that owns
    it, run alone; in training every word is labeled in exactly one window."""
    sent = _random_sentence(60, seed=9)
    wins = clf.windows([sent])
    assert len(wins) >= 3
    got = clf.word_logits([sent], batch_size=2)[0]
    clf.eval()
    seen_owned = []
    with torch.no_grad():
        for w in wins:
            alone = clf(clf.aligner.collate([w]))[0]  # (W, C): this window run by itself
            for j, (wi, own) in enumerate(zip(w.word_index, w.owned)):
                if own:
                    np.testing.assert_allclose(got[wi], alone[j].numpy(), atol=1e-5)
                    seen_owned.append(wi)
    assert sorted(seen_owned) == list(range(len(sent)))  # every word owned exactly once
    # some word sits in two windows and the non-owner's logits differ: ownership matters
    shared = [wi for w in wins for wi, own in zip(w.word_index, w.owned) if not own]
    assert shared
    tags = [[k % len(tiny_labels) for k in range(len(sent))]]
    batch = clf.collate(wins, tags)
    labeled = batch["labels"] != -100
    assert int(labeled.sum()) == len(sent)
    for i, w in enumerate(wins):
        for j, (wi, own) in enumerate(zip(w.word_index, w.owned)):
            assert bool(labeled[i, j]) == own and (not own or int(batch["labels"][i, j]) == tags[0][wi])


def test_single_window_fast_path_equals_the_general_path(tok):
    """The vectorised one-window path gives exactly the windows the general path builds, and
    sentences it cannot take (too long, a word without sub-tokens) go to the general path."""
    al = WordAligner(tok, max_length=24, stride=4)
    sents = [_random_sentence(n, seed=n) for n in range(1, 30)] + [["a", "\u200b", "b"], ["\u200b"]]
    enc = tok([list(s) for s in sents], is_split_into_words=True, add_special_tokens=False)
    fast = 0
    for si, words in enumerate(sents):
        ids, wids = enc["input_ids"][si], enc.word_ids(si)
        general = al._windows(si, al._per_word(len(words), ids, wids))
        single = al._single_window(si, len(words), ids, wids)
        if single is not None:
            fast += 1
            assert [single] == general
        assert [w for w in al.encode(sents) if w.sent == si] == general
    assert 5 < fast < len(sents)  # both paths were exercised
