"""A word tokenizer for tweets and news that keeps character offsets into the original text.

``tokenize("Met @jo at 5:30 in N.Y.!")`` -> tokens ``["Met", "@jo", "at", "5:30", "in", "N.Y.", "!"]``
and their ``(start, end)`` spans, so ``text[start:end] == token`` for every token.

The conventions follow the WNUT-16 training data the shipped models learn from: URLs, e-mail
addresses, ``@user`` mentions and ``#hashtags`` are single tokens; numbers keep inner punctuation
and a currency sign or percent (``$37K``, ``30,000``, ``14:30``, ``1/2``, ``100%``); dotted
abbreviations stay whole (``U.S.``); contractions stay whole (``don't``, ``I'm``) except a
clitic ``'s``, which is split off (``It 's``, ``cody 's``); words keep inner hyphens and ``&``
(``State-of-the-Union``, ``AT&T``); runs of one punctuation character are one token (``...``,
``!!!``) and so are common emoticons (``:)``, ``;-)``, ``:D``, ``<3``), an HTML entity (``&amp;``); an emoji keeps its skin
tone and zero-width-joiner sequence. Every other non-space character is a token of its own.
Whitespace (Unicode included) and zero-width spaces separate tokens and are never part of one.
"""
from __future__ import annotations

import re
from typing import List, NamedTuple, Tuple

_MARK = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"  # combining marks (decomposed accents)
_W = rf"[\w{_MARK}]"  # a word character, accents in NFD form included
_EMOJI_MOD = "\ufe0f\U0001F3FB-\U0001F3FF"  # variation selector, skin tones
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"  # separate tokens like spaces (a ZWJ inside an emoji stays)

_PATTERNS = [
    r"(?:https?://|www\.)\S+?(?=[.,!?;:)\]\"'”’]*(?:\s|$))",  # URL, without trailing punctuation
    rf"[\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+",  # e-mail address
    rf"[@#]{_W}+",  # @user, #hashtag
    rf"[$£€¥]?\d+(?:[.,:/-]\d+)*(?:%|{_W}+)?(?:-{_W}+)*",  # 30,000  14:30  $37K  100%  3rd  2-year-old
    r"&(?:[a-zA-Z]+|#\d+);",  # an HTML entity left in scraped text: &amp; &#39;
    rf"(?:[^\W\d_]\.){{2,}}",  # U.S.  N.Y.
    r"[:;=][-o^']?(?:[)(\]\[/\\|*]|[dDpPoO](?!\w))|<3",  # emoticons
    rf"['’][sS](?!{_W})",  # clitic 's split from its word
    rf"{_W}+(?:[-&]{_W}+|['’](?![sS](?!{_W})){_W}+)*",  # words, inner hyphen / & / apostrophe
    r"([!-/:-@\[-`{-~])\1*",  # a run of one ASCII punctuation character: ... !!! --
    rf"[^\s{_ZERO_WIDTH}][{_EMOJI_MOD}]*(?:\u200d\S[{_EMOJI_MOD}]*)*",  # anything else, emoji sequences whole
]
_TOKEN_RE = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))  # first alternative that matches wins


class Tokenized(NamedTuple):
    """Tokens of a text and their character spans: ``text[start:end] == token``."""

    tokens: List[str]
    spans: List[Tuple[int, int]]


def tokenize(text: str) -> Tokenized:
    """Split ``text`` into tokens with their ``(start, end)`` character offsets (end exclusive).

    Raises:
        TypeError: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize takes a str, not {type(text).__name__}")
    tokens: List[str] = []
    spans: List[Tuple[int, int]] = []
    for m in _TOKEN_RE.finditer(text):
        tokens.append(m.group(0))
        spans.append(m.span())
    return Tokenized(tokens, spans)


def check_token_lists(sentences, what: str = "sentences") -> None:
    """Refuse input that is not a sequence of token lists, e.g. a ``str`` (its characters would
    be tagged one by one) or one sentence's tokens where a list of sentences is expected.

    Raises:
        TypeError: naming what was passed and the shape expected.
    """
    hint = "pass a list of token lists, e.g. [['Empire', 'State', 'Building']]; tokenize raw text first"
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{what} must be a list of token lists, not a {type(sentences).__name__} ({hint})")
    for i, s in enumerate(sentences):
        if isinstance(s, (str, bytes)):
            raise TypeError(f"{what}[{i}] is a {type(s).__name__} {s[:40]!r}, not a list of tokens ({hint})")
        if not all(isinstance(t, str) for t in s):
            bad = next(t for t in s if not isinstance(t, str))
            raise TypeError(f"{what}[{i}] holds a {type(bad).__name__} {bad!r}; tokens are str ({hint})")
