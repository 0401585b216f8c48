"""Label vocabularies and tagging schemes (IO / BIO / BIOES, or plain tags such as POS):
detection, conversion, repair, and normalisation of other spellings (IOB1, BILOU, ``B_PER``)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

OUTSIDE = "O"
SCHEMES = ("IO", "BIO", "BIOES")
PLAIN = "plain"  # tags without prefix structure (POS): no spans, no decoding constraints
_PREFIX_LIKE = re.compile(r"^([BIESLU])[-_](\S+)$")  # any spelling of a span tag, before normalisation


def is_plain_tag_set(tags: Iterable[str]) -> bool:
    """True when no tag looks like a span tag (``DT``, ``NN``, ``O``...): plain tags. False when
    every tag other than ``O`` looks like ``X-TYPE``/``X_TYPE`` with X in B/I/E/S/L/U (a span
    scheme; other spellings are normalised by :func:`normalize_tag`), or for no tags at all.

    Raises:
        ValueError: for a set mixing both kinds (``B-PER`` and ``PER``: a typo, not a tag set).
    """
    span = plain = None
    for t in tags:
        if t == OUTSIDE:
            continue
        if _PREFIX_LIKE.match(t):
            span = span or t
        else:
            plain = plain or t
        if span and plain:
            raise ValueError(f"tag {plain!r} has no B-/I-/E-/S- prefix but {span!r} has: span tags (BIO, BIOES, "
                             "IOB1, BILOU) and plain tags (POS) cannot be mixed")
    return plain is not None


def normalize_tag(tag: str) -> str:
    """A span tag in the spelling this library writes: ``B_PER -> B-PER``; BILOU ``L-X -> E-X``,
    ``U-X -> S-X``. ``O`` and the hyphenated B/I/E/S forms are returned as they are."""
    m = _PREFIX_LIKE.match(tag)
    if tag == OUTSIDE or not m:
        return tag
    return f"{ {'L': 'E', 'U': 'S'}.get(m.group(1), m.group(1))}-{m.group(2)}"


def is_iob1(tag_lists: Iterable[Sequence[str]]) -> bool:
    """True for IOB1 data (CoNLL-2003 style): some entity opens with ``I-X`` (at the start, after
    ``O`` or after another type), and ``B-X`` occurs only right after an ``X`` tag, where it
    separates two adjacent entities. Data that also opens entities with ``B-`` is BIO (possibly
    with errors, see ``repair``), not IOB1."""
    orphan = False
    for tags in tag_lists:
        prev_p, prev_t = OUTSIDE, None
        for tag in tags:
            p, t = split_tag(tag)
            opens = prev_p == OUTSIDE or prev_t != t
            if p == "B" and opens:
                return False
            if p == "I" and opens:
                orphan = True
            if p in ("E", "S"):
                return False
            prev_p, prev_t = p, t
    return orphan


def split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", None)``.

    Only ``B-``/``I-``/``E-``/``S-`` prefixes with a hyphen are accepted: conversion and repair
    write tags in that form, so any other spelling (``B_PER``, BILOU ``L-``/``U-``) is refused
    here rather than silently producing tags outside the label list later.
    """
    if tag == OUTSIDE:
        return OUTSIDE, None
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    raise ValueError(f"tag {tag!r} is neither 'O' nor PREFIX-TYPE with a prefix in B/I/E/S and a hyphen "
                     "(convert BILOU L-/U- to E-/S-, and B_X to B-X)")


def detect_scheme(tags: Iterable[str]) -> str:
    """Return ``"IO"``, ``"BIO"``, ``"BIOES"`` from the prefixes present, or ``"plain"``
    (:func:`is_plain_tag_set`)."""
    tags = list(tags)
    if is_plain_tag_set(tags):
        return PLAIN
    prefixes = {split_tag(t)[0] for t in tags}
    if prefixes & {"E", "S", "L", "U"}:
        return "BIOES"
    if "B" in prefixes:
        return "BIO"
    return "IO"


def entity_spans(tags: Sequence[str]) -> List[Tuple[int, int, str]]:
    """Entity spans ``(start, end_exclusive, type)`` of a tag sequence in any scheme: BIO, IOB1
    (``I-`` opens an entity, ``B-`` only separates two adjacent ones of a type), BIOES or IO.

    Read leniently, as the HF pipeline's "simple" aggregation does: ``B-``/``S-`` or a change of
    type starts an entity, ``I-``/``E-`` of the same type continues it, an orphan ``I-`` starts
    one, ``E-``/``S-`` close it. A plain tag (no prefix structure, e.g. POS) holds no entity."""
    spans: List[Tuple[int, int, str]] = []
    cur: Optional[List] = None
    for i, tag in enumerate(tags):
        p, t = (OUTSIDE, None) if not _PREFIX_LIKE.match(tag) else split_tag(tag)
        if p == OUTSIDE:
            if cur:
                spans.append(tuple(cur))
            cur = None
            continue
        starts = p in ("B", "S", "U") or cur is None or cur[2] != t
        if starts:
            if cur:
                spans.append(tuple(cur))
            cur = [i, i + 1, t]
        else:
            cur[1] = i + 1
        if p in ("E", "L", "S", "U"):
            spans.append(tuple(cur))
            cur = None
    if cur:
        spans.append(tuple(cur))
    return spans


_spans = entity_spans


def convert_tags(tags: Sequence[str], scheme: str) -> List[str]:
    """Convert a tag sequence to ``scheme`` (IO, BIO or BIOES) via its entity spans."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    out = [OUTSIDE] * len(tags)
    for s, e, t in _spans(tags):
        for i in range(s, e):
            if scheme == "IO":
                p = "I"
            elif scheme == "BIO":
                p = "B" if i == s else "I"
            else:
                p = "S" if e - s == 1 else ("B" if i == s else ("E" if i == e - 1 else "I"))
            out[i] = f"{p}-{t}"
    return out


def is_valid(tags: Sequence[str], scheme: str = "BIO") -> bool:
    """True when ``tags`` is a well-formed sequence in ``scheme`` (e.g. no I-X after O in BIO);
    any sequence of plain tags is."""
    return scheme == PLAIN or list(tags) == convert_tags(tags, scheme)


def repair(tags: Sequence[str], scheme: str = "BIO") -> List[str]:
    """Make a sequence valid in ``scheme``; an orphan ``I-X`` becomes the start of an X entity.
    Plain tags are returned as they are."""
    return list(tags) if scheme == PLAIN else convert_tags(tags, scheme)


class LabelVocab:
    """An ordered label list with ids; ``labels[0]`` need not be ``O``.

    Args:
        labels: the labels, in id order. Duplicates are an error.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate labels in {labels}")
        if not labels:
            raise ValueError("empty label list")
        if not is_plain_tag_set(labels):
            for t in labels:
                split_tag(t)
        elif any(not t or any(c.isspace() for c in t) for t in labels):
            raise ValueError(f"empty label or label with whitespace in {labels}")
        self.labels: List[str] = labels
        self.label2id: Dict[str, int] = {t: i for i, t in enumerate(labels)}
        self.scheme = detect_scheme(labels)

    @classmethod
    def from_sentences(cls, tag_lists: Iterable[Sequence[str]]) -> "LabelVocab":
        """Derive labels from data in a stable order: ``O`` first, then by type, then prefix
        (plain tags: sorted, ``O`` only when the data has it)."""
        seen = {t for tags in tag_lists for t in tags}
        if is_plain_tag_set(seen):
            return cls(sorted(seen, key=lambda t: (t != OUTSIDE, t)))
        seen.add(OUTSIDE)
        order = {"B": 0, "I": 1, "E": 2, "L": 2, "S": 3, "U": 3}

        def key(t: str):
            p, typ = split_tag(t)
            return (0, "", 0) if p == OUTSIDE else (1, typ, order.get(p, 9))

        return cls(sorted(seen, key=key))

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.labels == other.labels

    def __repr__(self) -> str:
        return f"LabelVocab({self.labels})"

    def encode(self, tags: Sequence[str]) -> List[int]:
        return [self.label2id[t] for t in tags]

    def decode(self, ids: Iterable[int]) -> List[str]:
        return [self.labels[i] for i in ids]

    @property
    def id2label(self) -> Dict[int, str]:
        return dict(enumerate(self.labels))

    def allowed_transitions(self) -> Tuple[List[bool], List[List[bool]]]:
        """Transitions allowed by the scheme (for CRF constraints).

        Returns:
            ``(start_ok, trans_ok)``: ``start_ok[j]`` whether a sentence may start with label j,
            ``trans_ok[i][j]`` whether label j may follow label i.
        """
        n = len(self.labels)
        if self.scheme == PLAIN:  # any tag may follow any tag
            return [True] * n, [[True] * n for _ in range(n)]
        parts = [split_tag(t) for t in self.labels]
        scheme = self.scheme

        def can_follow(prev: Optional[Tuple[str, Optional[str]]], cur: Tuple[str, Optional[str]]) -> bool:
            p, t = cur
            if scheme == "IO":
                return True
            prev_p, prev_t = prev if prev is not None else (OUTSIDE, None)
            if scheme == "BIO":
                return p != "I" or (prev_p in ("B", "I") and prev_t == t)
            # BIOES: inside/end must continue an open entity of the same type
            open_entity = prev_p in ("B", "I")
            if p in ("I", "E", "L"):
                return open_entity and prev_t == t
            return not open_entity  # O, B, S only after a closed entity

        start_ok = [can_follow(None, parts[j]) for j in range(n)]
        trans_ok = [[can_follow(parts[i], parts[j]) for j in range(n)] for i in range(n)]
        return start_ok, trans_ok

    def allowed_end(self) -> List[bool]:
        """Labels a sentence may end with (BIOES forbids ending inside an entity)."""
        if self.scheme != "BIOES":
            return [True] * len(self.labels)
        return [split_tag(t)[0] not in ("B", "I") for t in self.labels]

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.labels, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> "LabelVocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


def columns_by_name(have: Sequence[str], want: Sequence[str], what: str = "teacher") -> List[int]:
    """The by-name label map: for each label of ``want``, its index in ``have``.

    Raises:
        LabelMismatchError: (one line) when ``have`` lacks labels of ``want``, listing them and the
            labels of ``have`` that ``want`` lacks.
    """
    from nlp_distill.errors import LabelMismatchError

    index = {l: i for i, l in enumerate(have)}
    missing = [l for l in want if l not in index]
    if missing:
        extra = [l for l in have if l not in set(want)]
        raise LabelMismatchError(f"the {what} has no label {missing} of the data (the {what}'s labels not in the "
                                 f"data: {extra or 'none'})")
    return [index[l] for l in want]


def read_labels_txt(path, encoding: str = "utf-8") -> LabelVocab:
    """Read ``labels.txt``: one label per line, blank lines ignored. Span labels are normalised
    (:func:`normalize_tag`: ``B_PER``, BILOU) and get ``O`` when missing; plain labels (POS) are
    kept as written."""
    from nlp_distill.data.conll import iter_lines
    from nlp_distill.errors import DataFormatError

    lines = [(lineno, line.strip()) for lineno, line in iter_lines(path, encoding) if line.strip()]
    plain = False
    for k in range(len(lines)):  # the first line that makes the set mixed is the one to fix
        try:
            plain = is_plain_tag_set(t for _, t in lines[: k + 1])
        except ValueError as e:
            raise DataFormatError(path, lines[k][0], str(e)) from None
    labels: List[str] = []
    for lineno, raw in lines:
        t = raw if plain else normalize_tag(raw)
        try:
            if not plain:
                split_tag(t)
        except ValueError as e:
            raise DataFormatError(path, lineno, str(e)) from None
        if any(c.isspace() for c in t):
            raise DataFormatError(path, lineno, f"label {raw!r} contains whitespace (one label per line)")
        if t in labels:
            raise DataFormatError(path, lineno, f"duplicate label {raw!r}")
        labels.append(t)
    if OUTSIDE not in labels and not plain:
        labels.insert(0, OUTSIDE)
    return LabelVocab(labels)
