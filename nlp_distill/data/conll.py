"""Read and write CoNLL column files.

One token per line, columns separated by whitespace (tab or spaces), blank (or whitespace-only)
lines between sentences, ``-DOCSTART-`` lines skipped, CRLF tolerated.
"""
from __future__ import annotations

import codecs
import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from nlp_distill.errors import DataFormatError
from nlp_distill.io import atomic_open

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def iter_lines(path: PathLike, encoding: str = "utf-8") -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` per line without its line break; a UTF-8 BOM is dropped.

    Raises:
        DataFormatError: for bytes that are not ``encoding`` (naming line and byte) or a NUL byte
            (a binary file).
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataFormatError(path, None, f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise DataFormatError(path, lineno, f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not "
                                                    f"{encoding}; pass its encoding (--encoding latin-1) or convert it") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if "\x00" in line:
                raise DataFormatError(path, lineno, "NUL byte: this is not a text file")
            yield lineno, line.rstrip("\n").rstrip("\r")


@dataclass
class Sentence:
    """A tokenized sentence, optionally tagged.

    Attributes:
        tokens: the words.
        tags: one tag per word, or ``None`` for unlabeled text.
        line: 1-based line number where the sentence starts in its file (for error messages).
    """

    tokens: List[str]
    tags: Optional[List[str]] = None
    line: Optional[int] = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.tokens)


def _is_docstart(cols: Sequence[str]) -> bool:
    return cols[0] == "-DOCSTART-"


def _tag(path: PathLike, lineno: int, line: str, cols: Sequence[str], tag_column: int, ncols: Optional[int],
         allowed: Optional[Set[str]]) -> str:
    """The tag of one token line, its column count checked against the lines before (``ncols``)."""
    if len(cols) < 2:
        raise DataFormatError(path, lineno, f"expected a token and a tag column, got {line!r}")
    if ncols is not None and len(cols) != ncols:
        raise DataFormatError(path, lineno, f"expected {ncols} columns like the lines before, got {len(cols)}: {line!r}")
    try:
        tag = cols[tag_column]
    except IndexError:
        raise DataFormatError(path, lineno, f"no column {tag_column} in {line!r}") from None
    if allowed is not None and tag not in allowed:
        raise DataFormatError(path, lineno, f"tag {tag!r} is not in the label list {sorted(allowed)}")
    return tag


def iter_conll(path: PathLike, tag_column: Optional[int] = -1, allowed_tags: Optional[Iterable[str]] = None,
               encoding: str = "utf-8") -> Iterator[Sentence]:
    """Stream sentences from a CoNLL column file.

    Args:
        path: file to read.
        tag_column: index of the tag column (negative counts from the end); ``None`` reads tokens
            only (column 0) and yields untagged sentences.
        allowed_tags: when given, a tag outside this set raises ``DataFormatError``.
        encoding: the file's text encoding.

    Raises:
        DataFormatError: naming file and line, for a missing tag column, an inconsistent column
            count, an empty token, or a tag not in ``allowed_tags``.
    """
    allowed = set(allowed_tags) if allowed_tags is not None else None
    tokens: List[str] = []
    tags: List[str] = []
    start = None
    ncols = None
    for lineno, line in iter_lines(path, encoding):  # one reader for every text file: encoding, BOM, CRLF
        if not line.strip():
            if tokens:
                yield Sentence(tokens, tags if tag_column is not None else None, start)
            tokens, tags, start = [], [], None
            continue
        cols = line.split()
        if _is_docstart(cols):
            continue
        if tag_column is not None:
            tags.append(_tag(path, lineno, line, cols, tag_column, ncols, allowed))
            ncols = ncols or len(cols)
        if start is None:
            start = lineno
        tokens.append(cols[0])
    if tokens:
        yield Sentence(tokens, tags if tag_column is not None else None, start)


def read_conll(path: PathLike, tag_column: Optional[int] = -1, allowed_tags: Optional[Iterable[str]] = None,
               encoding: str = "utf-8") -> List[Sentence]:
    """Read a whole CoNLL file; see :func:`iter_conll`. Empty files raise ``DataFormatError``."""
    sents = list(iter_conll(path, tag_column, allowed_tags, encoding))
    if not sents:
        raise DataFormatError(path, None, "no sentences found (empty file?)")
    return sents


def write_conll(path: PathLike, sentences: Iterable[Sentence], extra: Optional[Iterable[Sequence[str]]] = None) -> None:
    """Write sentences as ``token<TAB>tag`` lines (token only when untagged), blank line between.

    Args:
        path: destination; written to a temporary file then renamed (atomic).
        sentences: sentences to write.
        extra: optional per-sentence list of extra columns appended after the tag, e.g. a
            confidence per word.
    """
    extra_iter = iter(extra) if extra is not None else None
    with atomic_open(path, "w", newline="\n") as f:
        for sent in sentences:
            cols_extra = next(extra_iter) if extra_iter is not None else None
            for i, tok in enumerate(sent.tokens):
                if not tok or any(c.isspace() for c in tok):
                    raise ValueError(f"token {tok!r} is empty or contains whitespace; cannot write CoNLL")
                row = [tok]
                if sent.tags is not None:
                    row.append(sent.tags[i])
                if cols_extra is not None:
                    row.append(str(cols_extra[i]))
                f.write("\t".join(row) + "\n")
            f.write("\n")
