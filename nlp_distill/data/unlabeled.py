"""Unlabeled text readers, streamed: raw text (one sentence per line) or CoNLL without tags."""
from __future__ import annotations

import logging
import re
from typing import Iterator, List, Optional

from nlp_distill.data.conll import Sentence, iter_conll
from nlp_distill.data.labels import split_tag

logger = logging.getLogger(__name__)

# Regex tokenizer used for raw prose (e.g. the SOTU speeches): words with inner hyphens or
# apostrophes kept together ("State-of-the-Union", "don't"), every other symbol on its own.
_TOKEN_RE = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]", re.UNICODE)
# Sentence boundary: ., ! or ? (optionally followed by quotes/brackets), whitespace, then an
# uppercase letter, quote or digit.
# The closing quotes/brackets sit in the look-behind so that splitting keeps them.
_SENT_RE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]])|(?<=[.!?][\"'”’)\]]{2}))\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def regex_tokenize(text: str) -> List[str]:
    """Split prose into tokens with a simple regex (documented, deterministic)."""
    return _TOKEN_RE.findall(text)


def split_sentences(text: str) -> List[str]:
    """Split a paragraph of prose into sentences with a punctuation + capital-letter rule."""
    text = " ".join(text.split())
    return [s for s in _SENT_RE.split(text) if s.strip()]


def _is_tag(t: str) -> bool:
    try:
        split_tag(t)
        return True
    except ValueError:
        return False


def detect_format(path) -> str:
    """``"conll"`` if the first non-blank line has a tab or the file has blank-line sentence
    breaks with one token per line, else ``"text"`` (one whitespace-tokenized sentence per line)."""
    with open(path, encoding="utf-8") as f:
        lines = []
        for line in f:
            lines.append(line.rstrip("\r\n"))
            if len(lines) >= 200:
                break
    nonblank = [l for l in lines if l.strip()]
    if not nonblank:
        return "text"
    if any("\t" in l for l in nonblank[:20]):
        return "conll"
    # space-separated CoNLL with tags (e.g. CoNLL-2003): a fixed column count, a tag last
    head = [l.split() for l in nonblank[:20]]
    if len({len(c) for c in head}) == 1 and len(head[0]) >= 2 and all(_is_tag(c[-1]) for c in head):
        return "conll"
    single = sum(1 for l in nonblank if len(l.split()) == 1)
    has_breaks = any(not l.strip() for l in lines)
    return "conll" if has_breaks and single / len(nonblank) > 0.9 else "text"


def iter_unlabeled(path, fmt: Optional[str] = None, max_words: Optional[int] = None) -> Iterator[Sentence]:
    """Stream untagged sentences from ``path`` without loading it whole.

    Args:
        path: a text file with one whitespace-tokenized sentence per line, or a CoNLL file (token
            in column 0, any tags ignored).
        fmt: ``"text"``, ``"conll"`` or ``None`` to detect.
        max_words: sentences longer than this are split into consecutive chunks (logged), never
            truncated. ``None`` keeps them whole.
    """
    fmt = fmt or detect_format(path)
    if fmt == "conll":
        it = (Sentence(s.tokens, None, s.line) for s in iter_conll(path, tag_column=None))
    elif fmt == "text":
        def _text():
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    toks = line.split()
                    if toks:
                        yield Sentence(toks, None, lineno)
        it = _text()
    else:
        raise ValueError(f"unknown unlabeled format {fmt!r}; expected 'text' or 'conll'")
    for s in it:
        if max_words and len(s.tokens) > max_words:
            logger.info("%s:%s: splitting a %d-word sentence into chunks of %d", path, s.line, len(s), max_words)
            for i in range(0, len(s.tokens), max_words):
                yield Sentence(s.tokens[i : i + max_words], None, s.line)
        else:
            yield s
