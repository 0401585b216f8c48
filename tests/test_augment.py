"""Transfer-set augmentation: aligned, scheme-valid, reproducible, drawn from train only."""
from __future__ import annotations

import random

import pytest

from nlp_distill.data.augment import OPERATORS, AugmentPools, augment_corpus, augment_sentence, span_tags
from nlp_distill.data.conll import Sentence, read_conll
from nlp_distill.data.labels import _spans, is_valid
from tests.conftest import TINY

TRAIN = read_conll(TINY / "train.txt")
DEV = read_conll(TINY / "dev.txt")
ALL_OPS = list(OPERATORS)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("scheme", ["BIO", "BIOES", "IO"])
def test_each_operator_keeps_alignment_and_scheme(op, scheme):
    from nlp_distill.data.labels import convert_tags

    train = [Sentence(s.tokens, convert_tags(s.tags, scheme)) for s in TRAIN]
    pools = AugmentPools.from_sentences(train)
    rng = random.Random(0)
    changed = 0
    for s in train:
        new = augment_sentence(s, [op], rng, pools, scheme, probs={k: 0.9 for k in OPERATORS})
        assert len(new.tokens) == len(new.tags) > 0
        assert is_valid(new.tags, scheme), (op, new.tags)
        changed += new.tokens != s.tokens
    assert changed > len(train) // 4  # the operator really does something


def test_reproducible_from_seed_and_seed_matters():
    a = augment_corpus(TRAIN, 3, ALL_OPS, seed=7, scheme="BIO")
    b = augment_corpus(TRAIN, 3, ALL_OPS, seed=7, scheme="BIO")
    c = augment_corpus(TRAIN, 3, ALL_OPS, seed=8, scheme="BIO")
    assert [(s.tokens, s.tags) for s in a] == [(s.tokens, s.tags) for s in b]
    assert [s.tokens for s in a] != [s.tokens for s in c]


def test_no_duplicates_and_no_copy_of_a_training_sentence():
    out = augment_corpus(TRAIN, 4, ["token", "mention"], seed=1, scheme="BIO")
    keys = [tuple(s.tokens) for s in out]
    assert len(keys) == len(set(keys))
    assert not set(keys) & {tuple(s.tokens) for s in TRAIN}
    assert len(out) > len(TRAIN)  # most of the 4 copies per sentence exist


def test_mention_replacement_swaps_same_type_mentions_from_train_only():
    pools = AugmentPools.from_sentences(TRAIN)
    train_mentions = {t: set(ms) for t, ms in pools.mentions_by_type.items()}
    dev_only = {tuple(s.tokens[a:b]) for s in DEV for a, b, _ in _spans(s.tags)} - {
        m for ms in train_mentions.values() for m in ms}
    rng = random.Random(3)
    for s in TRAIN:
        new = augment_sentence(s, ["mention"], rng, pools, "BIO", probs={"mention": 1.0})
        old_types = [t for _, _, t in _spans(s.tags)]
        new_spans = _spans(new.tags)
        assert [t for _, _, t in new_spans] == old_types  # each mention keeps its type
        for a, b, t in new_spans:
            assert tuple(new.tokens[a:b]) in train_mentions[t]  # swapped for a train mention of that type
            assert tuple(new.tokens[a:b]) not in dev_only


def test_token_replacement_draws_same_tag_train_tokens():
    pools = AugmentPools.from_sentences(TRAIN)
    rng = random.Random(4)
    for s in TRAIN[:30]:
        new = augment_sentence(s, ["token"], rng, pools, "BIO", probs={"token": 1.0})
        assert new.tags == s.tags
        for w, g in zip(new.tokens, new.tags):
            assert w in pools.tokens_by_tag[g]


def test_span_tags_and_unknown_operator():
    assert span_tags("x", 3, "BIOES") == ["B-x", "I-x", "E-x"] and span_tags("x", 1, "BIOES") == ["S-x"]
    assert span_tags("x", 2, "IO") == ["I-x", "I-x"] and span_tags("x", 2, "BIO") == ["B-x", "I-x"]
    with pytest.raises(ValueError, match="synonym"):
        augment_corpus(TRAIN, 1, ["synonym"], seed=0, scheme="BIO")
