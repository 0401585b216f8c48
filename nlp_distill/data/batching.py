"""Encode sentences for a NeuralTagger, collate them into a ``Batch``, bucket by length."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.vocab import Vocab, char_ids, word_shape


# one sentence's arrays: word ids (n,), char ids (n, K), shape ids (n,), tag ids (n,) or None
Rows = Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]


@dataclass
class Batch:
    """A padded batch, batch-first.

    Attributes:
        words: (B, L) word ids (0 = padding).
        chars: (B, L, K) character ids (0 = padding).
        shapes: (B, L) word-shape ids (0 = padding).
        mask: (B, L) bool, True on real words.
        tags: (B, L) gold/pseudo label ids, -100 where unlabeled or padding; ``None`` if none.
        index: (B,) positions of the sentences in their ``EncodedData`` (to find cached teacher logits).
        weight: (B,) per-sentence loss weights.
    """

    words: torch.Tensor
    chars: torch.Tensor
    shapes: torch.Tensor
    mask: torch.Tensor
    tags: Optional[torch.Tensor]
    index: torch.Tensor
    weight: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(*[t.to(device) if isinstance(t, torch.Tensor) else t for t in
                       (self.words, self.chars, self.shapes, self.mask, self.tags, self.index, self.weight)])


class EncodedData:
    """Sentences turned into id arrays once (not every epoch).

    Args:
        sentences: the sentences (tags used when present).
        word_vocab, char_vocab: the student's vocabularies.
        labels: label vocabulary for tags.
        max_word_length: characters kept per word (see ``char_ids``).
        weights: optional per-sentence loss weight (default 1).
    """

    def __init__(self, sentences: Sequence[Sentence], word_vocab: Vocab, char_vocab: Vocab, labels: LabelVocab,
                 max_word_length: int = 30, weights: Optional[Sequence[float]] = None) -> None:
        self.sentences = list(sentences)
        cache: Dict[str, List[int]] = {}  # char ids per distinct word: each is computed once

        def chars_of(w: str) -> List[int]:
            if w not in cache:
                cache[w] = char_ids(w, char_vocab, max_word_length) or [1]
            return cache[w]

        self.words = [np.asarray(word_vocab.ids(s.tokens), dtype=np.int64) for s in self.sentences]
        self.chars = [_pad_rows([chars_of(w) for w in s.tokens]) for s in self.sentences]  # (n_i, K_i) each
        self.shapes = [np.asarray([word_shape(w) for w in s.tokens], dtype=np.int64) for s in self.sentences]
        self.tags = [np.asarray(labels.encode(s.tags), dtype=np.int64) if s.tags is not None else None
                     for s in self.sentences]
        self.weights = np.ones(len(self.sentences), np.float32) if weights is None else np.asarray(weights, np.float32)
        self.lengths = np.asarray([len(s.tokens) for s in self.sentences])

    def __len__(self) -> int:
        return len(self.sentences)

    def rows(self, i: int) -> Rows:
        """Sentence ``i``'s arrays: word ids (n,), char ids (n, K), shapes (n,), tags (n,) or None."""
        return self.words[i], self.chars[i], self.shapes[i], self.tags[i]

    def collate(self, idx: Sequence[int]) -> Batch:
        """Pad sentences ``idx`` into a Batch."""
        return collate_rows([self.rows(i) for i in idx], idx, self.weights[list(idx)])


class ConcatEncoded:
    """Several encoded sources (``EncodedData``, ``StoreFeatures``) read as one, in order."""

    def __init__(self, parts: Sequence) -> None:
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.lengths = np.concatenate([np.asarray(p.lengths) for p in self.parts])
        self.weights = np.concatenate([np.asarray(p.weights, np.float32) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def rows(self, i: int) -> Rows:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k].rows(i - int(self.starts[k]))

    def collate(self, idx: Sequence[int]) -> Batch:
        return collate_rows([self.rows(i) for i in idx], idx, self.weights[list(idx)])


def collate_rows(rows: Sequence[Rows], idx: Sequence[int], weights: np.ndarray) -> Batch:
    """Pad per-sentence arrays (see ``EncodedData.rows``) into a Batch (numpy fills, one slice per
    sentence); ``idx`` becomes ``Batch.index``."""
    B = len(rows)
    L = max(len(r[0]) for r in rows)
    K = max(r[1].shape[1] for r in rows)
    words = np.zeros((B, L), np.int64)
    chars = np.zeros((B, L, K), np.int64)
    shapes = np.zeros((B, L), np.int64)
    mask = np.zeros((B, L), bool)
    tags = np.full((B, L), -100, np.int64)
    any_tags = False
    for b, (w, c, sh, tg) in enumerate(rows):
        n = len(w)
        words[b, :n] = w
        shapes[b, :n] = sh
        mask[b, :n] = True
        chars[b, :n, : c.shape[1]] = c
        if tg is not None:
            tags[b, :n] = tg
            any_tags = True
    t = torch.from_numpy
    return Batch(t(words), t(chars), t(shapes), t(mask), t(tags) if any_tags else None, torch.as_tensor(list(idx)),
                 torch.from_numpy(np.asarray(weights, np.float32)))


def _pad_rows(rows: List[List[int]]) -> np.ndarray:
    """Ragged id lists -> (len(rows), max len) int64, zero-padded ((0, 1) for no rows)."""
    out = np.zeros((len(rows), max((len(r) for r in rows), default=1)), np.int64)
    for j, r in enumerate(rows):
        out[j, : len(r)] = r
    return out


def bucket_batches(lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0,
                   bucket_factor: int = 50) -> List[List[int]]:
    """Length-bucketed batches: shuffle, sort within pools of ``batch_size * bucket_factor``,
    cut into batches, shuffle batch order. Without ``shuffle``: sorted by length (inference)."""
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: lengths[i])
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).tolist()
    pool = batch_size * bucket_factor
    batches: List[List[int]] = []
    for p in range(0, n, pool):
        chunk = sorted(perm[p : p + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
