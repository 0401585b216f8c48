"""Word and character vocabularies (JSON, never pickle), word shapes, pretrained vectors."""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.errors import DataFormatError

logger = logging.getLogger(__name__)

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Vocab:
    """A string -> id map with ``<pad>`` = 0 (never a real item) and ``<unk>`` = 1.

    Args:
        items: real items in id order (ids start at 2).
        lowercase: look items up lowercased (words only).
    """

    def __init__(self, items: Sequence[str], lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.itos: List[str] = [PAD, UNK]
        self.stoi: Dict[str, int] = {PAD: PAD_ID, UNK: UNK_ID}
        for it in items:
            self.add(it)

    def add(self, item: str) -> int:
        key = item.lower() if self.lowercase else item
        if key not in self.stoi:
            self.stoi[key] = len(self.itos)
            self.itos.append(key)
        return self.stoi[key]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, item: str) -> bool:
        return (item.lower() if self.lowercase else item) in self.stoi

    def id(self, item: str) -> int:
        return self.stoi.get(item.lower() if self.lowercase else item, UNK_ID)

    def ids(self, items: Iterable[str]) -> List[int]:
        return [self.id(x) for x in items]

    def to_dict(self) -> Dict:
        return {"lowercase": self.lowercase, "itos": self.itos[2:]}

    @classmethod
    def from_dict(cls, d: Dict) -> "Vocab":
        return cls(d["itos"], d["lowercase"])

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_freq: int = 1, lowercase: bool = False) -> "Vocab":
        """Build from token sequences (most frequent first, ties by first appearance)."""
        counts: Counter = Counter()
        for seq in sequences:
            counts.update(x.lower() if lowercase else x for x in seq)
        items = [w for w, c in counts.most_common() if c >= min_freq]
        return cls(items, lowercase)


def build_char_vocab(sentences: Iterable[Sequence[str]]) -> Vocab:
    """Every character seen in the (training) words; unseen ones map to ``<unk>`` at lookup."""
    return Vocab.build((ch for w in s for ch in w) for s in sentences)


_SHAPES = ["other", "lower", "upper", "title", "mixed", "digit", "alnum", "punct", "mention", "hashtag", "url"]
SHAPE_IDS = {s: i + 1 for i, s in enumerate(_SHAPES)}  # 0 = padding
N_SHAPES = len(_SHAPES) + 1
_URL = re.compile(r"^(https?://|www\.)", re.I)


def word_shape(w: str) -> int:
    """A coarse word-shape id (1..N_SHAPES-1): casing, digits, punctuation, @mention, #hashtag, URL."""
    if _URL.match(w):
        s = "url"
    elif len(w) > 1 and w[0] == "@":
        s = "mention"
    elif len(w) > 1 and w[0] == "#":
        s = "hashtag"
    elif w.isdigit():
        s = "digit"
    elif w.isalpha():
        s = "lower" if w.islower() else "upper" if w.isupper() else "title" if w.istitle() else "mixed"
    elif any(c.isalnum() for c in w):
        s = "alnum"
    elif all(not c.isalnum() for c in w):
        s = "punct"
    else:
        s = "other"
    return SHAPE_IDS[s]


def char_ids(word: str, vocab: Vocab, max_len: int) -> List[int]:
    """Character ids of ``word``; words longer than ``max_len`` keep their first and last halves."""
    if len(word) > max_len:
        half = max_len // 2
        word = word[:half] + word[len(word) - (max_len - half):]
    get = vocab.stoi.get  # the lookup of ``Vocab.id`` without a method call per character
    return [get(c.lower(), UNK_ID) for c in word] if vocab.lowercase else [get(c, UNK_ID) for c in word]


def iter_vector_lines(path) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, [word, value, ...])`` per vector line of a GloVe / word2vec text file: the
    one parser of vectors files (a word2vec ``count dim`` header and lines without a value are
    skipped; values are not checked here)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue
            if len(parts) >= 2:
                yield lineno, parts


def read_embedding_file(path, dim: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """Read GloVe / word2vec text vectors (a word2vec ``count dim`` header line is skipped).

    Raises:
        DataFormatError: a line whose vector has the wrong dimension or a non-number.
    """
    words: List[str] = []
    vecs: List[np.ndarray] = []
    for lineno, parts in iter_vector_lines(path):
        try:
            v = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise DataFormatError(path, lineno, "vector has a non-numeric value") from None
        if dim is None:
            dim = v.shape[0]
        if v.shape[0] != dim:
            raise DataFormatError(path, lineno, f"vector has {v.shape[0]} values, expected {dim}")
        words.append(parts[0])
        vecs.append(v)
    if not vecs:
        raise DataFormatError(path, None, "no vectors found")
    return words, np.stack(vecs)
