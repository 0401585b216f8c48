"""The built-in word tokenizer: tweet/news conventions and exact character offsets."""
from __future__ import annotations

import pytest

from nlp_distill.data.conll import read_conll
from nlp_distill.data.tokenize import check_token_lists, tokenize
from tests.conftest import TINY

CASES = [
    ("Met @jo_b at 5:30 in N.Y.!", ["Met", "@jo_b", "at", "5:30", "in", "N.Y.", "!"]),
    ("It's #NYC's best: $37K, 30,000 fans, 100% sure, the 3rd time, a 2-year-old",
     ["It", "'s", "#NYC", "'s", "best", ":", "$37K", ",", "30,000", "fans", ",", "100%", "sure", ",", "the", "3rd",
      "time", ",", "a", "2-year-old"]),
    ("see http://bit.ly/bgCyZ0, or www.x.org. mail a.b+c@mail.co.uk now",
     ["see", "http://bit.ly/bgCyZ0", ",", "or", "www.x.org", ".", "mail", "a.b+c@mail.co.uk", "now"]),
    ("I don't think AT&T's State-of-the-Union... !!! ?! :) ;-) :D <3 &amp;",
     ["I", "don't", "think", "AT&T", "'s", "State-of-the-Union", "...", "!!!", "?", "!", ":)", ";-)", ":D", "<3",
      "&amp;"]),
    ("“Zoë” — Martín’s café", ["“", "Zoë", "”", "—", "Martín", "’s", "café"]),
]


@pytest.mark.parametrize("text,tokens", CASES, ids=range(len(CASES)))
def test_tokens_follow_the_tweet_and_news_conventions(text, tokens):
    assert tokenize(text).tokens == tokens


def test_spans_index_the_original_text_whatever_the_spacing_and_unicode():
    text = "\u00a0 Zoe\u0301\t\tMartín  👍🏽 👨\u200d👩\u200d👧 x\u200by 東京タワー\u3000in  NYC \n"
    tokens, spans = tokenize(text)
    assert tokens == ["Zoe\u0301", "Martín", "👍🏽", "👨\u200d👩\u200d👧", "x", "y", "東京タワー", "in", "NYC"]
    assert [text[a:b] for a, b in spans] == tokens
    assert all(b > a for a, b in spans) and all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    assert tokenize("") == ([], []) and tokenize(" \t\u200b ") == ([], [])


def test_pretokenised_text_comes_back_as_its_tokens():
    """The tiny fixtures (tokens joined by spaces) re-tokenize to the same tokens."""
    for name in ("train.txt", "dev.txt", "test.txt"):
        for s in read_conll(TINY / name):
            assert tokenize(" ".join(s.tokens)).tokens == s.tokens


def test_token_lists_are_checked():
    check_token_lists([["a", "b"], [], ("c",)])
    for bad in ("Empire State", ["Empire", "State"], [["a", 1]], b"bytes"):
        with pytest.raises(TypeError, match="token"):
            check_token_lists(bad)
    with pytest.raises(TypeError):
        tokenize(["not", "a", "str"])
