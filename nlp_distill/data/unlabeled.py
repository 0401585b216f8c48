"""Unlabeled text readers, streamed: raw text (one sentence per line) or CoNLL without tags."""
from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from nlp_distill.data.conll import Sentence, _is_docstart, iter_conll, iter_lines
from nlp_distill.data.labels import split_tag
from nlp_distill.errors import ConfigError

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


_POS_SHAPED = re.compile(r"[A-Z][A-Z0-9$_+|-]*|[^\w\s]{1,3}")  # NN, PRP$, PROPN, -LRB-, ".", "``"


def _pos_shaped(last: List[str]) -> bool:
    """A last column of POS tags: every value upper-case or punctuation, some of them letters."""
    return all(_POS_SHAPED.fullmatch(t) for t in last) and any(t[0].isalpha() for t in last)


def _first_block(path, limit: int = 200, encoding: str = "utf-8") -> Tuple[List[Tuple[int, str]], bool]:
    """The first sentence block (non-blank lines up to the first blank line after them, at most
    ``limit``) and whether a blank line ended it."""
    block: List[Tuple[int, str]] = []
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            if block:
                return block, True
            continue
        if not _is_docstart(line.split()):
            block.append((lineno, line))
        if len(block) >= limit:
            break
    return block, False


def count_sentences(path, fmt: str, encoding: str = "utf-8", limit: Optional[int] = None) -> Optional[int]:
    """Sentences of an unlabeled file, for a progress bar's total and ETA: its non-blank lines
    (at most ``limit``) when ``fmt`` is ``"text"``; None for CoNLL (counting would parse it)."""
    if fmt != "text":
        return None
    n = sum(1 for _, line in iter_lines(path, encoding) if line.strip())
    return min(n, limit) if limit else n


def detect_format(path, encoding: str = "utf-8") -> str:
    """``"conll"`` or ``"text"``, decided from the column structure of the whole first sentence.

    CoNLL: every line of the first sentence has the same number of columns and either a
    tag-shaped last column (``O``, ``B-X``...), tab-separated columns on every line, a POS-shaped
    last column on 3 or more lines ended by a blank line (``NNP``, ``PRP$``, ``.``), or one token per line with a blank
    line ending the sentence. Anything else is raw text, one whitespace-
    tokenized sentence per line (a tab inside one line of prose does not make a file CoNLL).
    """
    block, ended = _first_block(path, encoding=encoding)
    if not block:
        return "text"
    cols = [l.split() for _, l in block]
    counts = {len(c) for c in cols}
    fmt, why = "text", f"lines of {min(counts)}-{max(counts)} words"
    if len(counts) == 1:
        n = counts.pop()
        if n == 1 and ended and len(block) > 1:
            fmt, why = "conll", "one token per line, blank line between sentences"
        elif n >= 2 and (len(block) > 1 or ended) and all(_is_tag(c[-1]) for c in cols):
            fmt, why = "conll", f"{n} columns, the last tag-shaped"
        elif n >= 2 and len(block) > 1 and all(l.count("\t") == n - 1 for _, l in block):
            fmt, why = "conll", f"{n} tab-separated columns"
        elif n >= 2 and len(block) >= 3 and ended and _pos_shaped([c[-1] for c in cols]):
            fmt, why = "conll", f"{n} columns, the last POS-shaped"
        else:
            why = f"{len(block)} line(s) of {n} word(s)"
    logger.info("%s: read as %s (first sentence: %s)", path, "CoNLL" if fmt == "conll" else "raw text", why)
    return fmt


def iter_unlabeled(path, fmt: Optional[str] = None, max_words: Optional[int] = None,
                   encoding: str = "utf-8") -> Iterator[Sentence]:
    """Stream untagged sentences from ``path`` without loading it whole.

    Args:
        path: a text file with one whitespace-tokenized sentence per line, or a CoNLL file (token
            in column 0, any tags ignored).
        fmt: ``"text"``, ``"conll"`` or ``None`` to detect.
        max_words: sentences longer than this are split into consecutive chunks (logged), never
            truncated. ``None`` keeps them whole.
    """
    fmt = fmt or detect_format(path, encoding)
    if fmt == "conll":
        it = (Sentence(s.tokens, None, s.line) for s in iter_conll(path, tag_column=None, encoding=encoding))
    elif fmt == "text":
        def _text():
            for lineno, line in iter_lines(path, encoding):
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


def expand_inputs(spec: Union[str, Path, Sequence[str]]) -> List[Path]:
    """Input files from a path, a folder (its ``*.txt`` files), a glob or a comma list of them
    (each folder and glob sorted, duplicates dropped, order kept): what both labeling engines read.

    Raises:
        ConfigError: a part matches no file.
    """
    items = [str(spec)] if isinstance(spec, Path) else spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [str(p).strip() for p in items if str(p).strip()]
    if not parts:
        raise ConfigError("--unlabeled_filename is required (a text file, a folder, a glob or a comma list of files)")
    out: List[Path] = []
    for p in parts:
        if glob.has_magic(str(p)):
            found = sorted(glob.glob(str(p)))
        elif Path(p).is_dir():
            found = sorted(str(f) for f in Path(p).glob("*.txt") if f.is_file())
        else:
            found = [str(p)] if Path(p).is_file() else []
        if not found:
            raise ConfigError(f"--unlabeled_filename {p!r}: no such file" + (" (the folder holds no *.txt file)"
                                                                             if Path(p).is_dir() else ""))
        out.extend(Path(f) for f in found if Path(f) not in out)
    return out


def iter_inputs(paths: Sequence[Path], input_format: str = "auto", encoding: str = "utf-8") -> Iterator[Sentence]:
    """The sentences of several files one after another, each file's format detected on its own
    when ``input_format`` is ``auto`` (as the Ray engine reads them)."""
    for p in paths:
        yield from iter_unlabeled(p, detect_format(p, encoding) if input_format == "auto" else input_format,
                                  encoding=encoding)
