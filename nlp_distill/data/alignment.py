"""Words <-> sub-words for a HF fast tokenizer, with sliding windows for long sentences.

Every word of every sentence gets exactly one *owner* window, so word-level logits exist for all
words however long the sentence: nothing is truncated. A word the tokenizer maps to zero
sub-tokens (e.g. a lone zero-width or control character) is given the tokenizer's UNK token.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)


@dataclass
class Window:
    """One teacher input: a span of a sentence's sub-tokens plus bookkeeping.

    Attributes:
        sent: index of the sentence in the encoded list.
        input_ids: sub-token ids including the special tokens.
        word_start: for each word of the window, its first sub-token position in ``input_ids``.
        word_len: number of sub-tokens of each word in the window.
        word_index: the word's index in the sentence.
        owned: whether this window's prediction is the one kept for that word.
    """

    sent: int
    input_ids: List[int]
    word_start: List[int]
    word_len: List[int]
    word_index: List[int]
    owned: List[bool]


# windows are padded to a multiple of PAD_TO sub-tokens, and inference batches to a multiple of
# PAD_TO rows (pad_rows): bf16 on an AMX CPU keeps one oneDNN primitive per batch shape, and exact
# lengths made labeling 30k sentences peak at 1,035 MB RSS against 806 MB padded, at the same
# speed; the last, shorter batch of every chunk still added a shape (docs/benchmarks.md)
PAD_TO = 8


def pad_rows(batch: Dict[str, "torch.Tensor"], multiple: int = PAD_TO) -> Dict[str, "torch.Tensor"]:
    """``batch`` (collated windows) with its rows padded by copies of row 0 (a real window, so
    attention stays well defined) to a multiple of ``multiple``, or below ``multiple`` rows to the
    next power of two (a one-sentence call stays one row: padding it to 8 made the teacher's
    batch-1 latency 8x); the caller drops the copies' outputs. With the lengths padded too,
    inference batches take few distinct shapes (see PAD_TO)."""
    import torch

    rows = len(batch["input_ids"])
    target = 1 << (rows - 1).bit_length() if rows < multiple else -(-rows // multiple) * multiple
    extra = target - rows
    if not extra:
        return batch
    return {k: torch.cat([v, v[:1].expand(extra, *v.shape[1:])]) for k, v in batch.items()}


class WordAligner:
    """Turns word lists into teacher windows and back.

    Args:
        tokenizer: a HF *fast* tokenizer (``word_ids()`` is needed).
        max_length: maximum sub-tokens per window, special tokens included.
        stride: sub-tokens of left/right context shared by consecutive windows of a long sentence.
    """

    def __init__(self, tokenizer, max_length: int = 128, stride: int = 32) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("WordAligner needs a fast tokenizer (word_ids() support)")
        self.tokenizer = tokenizer
        self.max_length = max_length
        # special tokens around the words ([CLS] ... [SEP] for BERT), read off a probe encoding
        probe = tokenizer([["a"]], is_split_into_words=True, add_special_tokens=True)
        ids, wids = probe["input_ids"][0], probe.word_ids(0)
        first = wids.index(0)
        last = len(wids) - 1 - wids[::-1].index(0)
        self.prefix_ids: List[int] = ids[:first]
        self.suffix_ids: List[int] = ids[last + 1 :]
        self.n_special = len(self.prefix_ids) + len(self.suffix_ids)
        self.budget = max_length - self.n_special
        if self.budget < 4:
            raise ValueError(f"max_length {max_length} leaves no room for words")
        self.stride = min(stride, self.budget // 4)
        self._warned_long_word = False

    def _per_word(self, n_words: int, ids: Sequence[int], word_ids: Sequence[int]) -> List[List[int]]:
        """Sub-token ids of each word (never empty: UNK for words with no sub-token)."""
        per_word: List[List[int]] = [[] for _ in range(n_words)]
        for tid, wid in zip(ids, word_ids):
            if wid is not None:
                per_word[wid].append(tid)
        for w in per_word:
            if not w:
                w.append(self.tokenizer.unk_token_id)
        return per_word

    def _single_window(self, si: int, n_words: int, ids: List[int], word_ids: List[int]) -> "Window | None":
        """The common case in vectorised form: the sentence fits one window and every word has
        sub-tokens. ``None`` sends the sentence down the general path."""
        if not ids or len(ids) > self.budget:
            return None
        wa = np.asarray(word_ids)
        bounds = np.flatnonzero(wa[1:] != wa[:-1]) + 1  # sub-token index where each word after the first starts
        if len(bounds) + 1 != n_words:  # a word without sub-tokens (it gets UNK in the general path)
            return None
        starts = [0, *bounds.tolist()]
        lens = np.diff(starts + [len(ids)]).tolist()
        p = len(self.prefix_ids)
        return Window(si, self.prefix_ids + ids + self.suffix_ids, [a + p for a in starts], lens,
                      list(range(n_words)), [True] * n_words)

    def encode(self, sentences: Sequence[Sequence[str]]) -> List[Window]:
        """Split every sentence into windows of at most ``max_length`` sub-tokens.

        Returns:
            windows in sentence order (a sentence with no words yields none).
        """
        enc = self.tokenizer([list(s) for s in sentences], is_split_into_words=True, add_special_tokens=False,
                             verbose=False)
        windows: List[Window] = []
        for si, words in enumerate(sentences):
            n = len(words)
            if n == 0:
                continue
            ids, word_ids = enc["input_ids"][si], enc.word_ids(si)
            single = self._single_window(si, n, ids, word_ids)
            if single is not None:
                windows.append(single)
            else:
                windows.extend(self._windows(si, self._per_word(n, ids, word_ids)))
        return windows

    def _windows(self, si: int, per_word: List[List[int]]) -> List[Window]:
        """Windows of one sentence given its words' sub-tokens (the general path: long sentences,
        over-long words, words without sub-tokens)."""
        for w in per_word:
            if len(w) > self.budget:
                if not self._warned_long_word:
                    logger.warning("a word has %d sub-tokens (> %d); using its first %d", len(w), self.budget, self.budget)
                    self._warned_long_word = True
                del w[self.budget :]
        lens = [len(w) for w in per_word]
        spans = self._spans(lens)
        owner = self._owners(lens, spans)
        windows: List[Window] = []
        flat = [t for w in per_word for t in w]
        offset = np.concatenate(([0], np.cumsum(lens))).tolist()  # word wi's sub-tokens: flat[offset[wi]:offset[wi+1]]
        p = len(self.prefix_ids)
        for k, (a, b) in enumerate(spans):
            ids = self.prefix_ids + flat[offset[a] : offset[b]] + self.suffix_ids
            starts = [p + offset[wi] - offset[a] for wi in range(a, b)]
            windows.append(Window(si, ids, starts, lens[a:b], list(range(a, b)), [owner[wi] == k for wi in range(a, b)]))
        return windows

    @staticmethod
    def _owners(lens: List[int], spans: List[Tuple[int, int]]) -> List[int]:
        """Owner window of each word: the one giving it the most context on its nearer side."""
        best_margin = [-1] * len(lens)
        owner = [0] * len(lens)
        for k, (a, b) in enumerate(spans):
            window_total = sum(lens[a:b])
            left = 0
            for wi in range(a, b):
                margin = min(left, window_total - left - lens[wi])
                if margin > best_margin[wi]:
                    best_margin[wi], owner[wi] = margin, k
                left += lens[wi]
        return owner

    def _spans(self, lens: List[int]) -> List[Tuple[int, int]]:
        """Word spans ``[a, b)`` covering the sentence, each within budget, overlapping by about
        ``stride`` sub-tokens of context on each side."""
        total = sum(lens)
        if total <= self.budget:
            return [(0, len(lens))]
        spans = []
        a = 0
        n = len(lens)
        while True:
            b, used = a, 0
            while b < n and used + lens[b] <= self.budget:
                used += lens[b]
                b += 1
            spans.append((a, b))
            if b >= n:
                return spans
            # next window starts `stride` sub-tokens before b, but always moves forward
            back, na = 0, b
            while na - 1 > a and back + lens[na - 1] <= self.stride:
                na -= 1
                back += lens[na]
            a = max(na, a + 1)

    def collate(self, windows: Sequence[Window]) -> dict:
        """Pad windows into tensors (``collate_arrays`` as torch tensors)."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.collate_arrays(windows).items()}

    def collate_arrays(self, windows: Sequence[Window]) -> Dict[str, np.ndarray]:
        """Pad windows into numpy arrays (no torch needed: the ONNX runtime uses this too).

        Returns:
            dict with ``input_ids`` (B, T) int64, ``attention_mask`` (B, T) int64, ``word_start``
            (B, W) int64, ``word_len`` (B, W) int64, ``word_mask`` (B, W) bool, ``owned`` (B, W) bool.
        """
        B = len(windows)
        T = max(len(w.input_ids) for w in windows)
        T = max(T, min(-(-T // PAD_TO) * PAD_TO, self.max_length))  # few distinct shapes (see PAD_TO)
        W = max(len(w.word_start) for w in windows)
        pad = self.tokenizer.pad_token_id or 0
        out = {"input_ids": np.full((B, T), pad, np.int64), "attention_mask": np.zeros((B, T), np.int64),
               "word_start": np.zeros((B, W), np.int64), "word_len": np.ones((B, W), np.int64),
               "word_mask": np.zeros((B, W), bool), "owned": np.zeros((B, W), bool)}
        for i, w in enumerate(windows):
            n, k = len(w.input_ids), len(w.word_start)
            out["input_ids"][i, :n] = w.input_ids
            out["attention_mask"][i, :n] = 1
            out["word_start"][i, :k] = w.word_start
            out["word_len"][i, :k] = w.word_len
            out["word_mask"][i, :k] = True
            out["owned"][i, :k] = w.owned
        return out


def pool_words(sub: "torch.Tensor", word_start: "torch.Tensor", word_len: "torch.Tensor", mode: str = "first") -> "torch.Tensor":
    """Sub-token vectors -> word vectors.

    Args:
        sub: (B, T, C) sub-token logits or hidden states.
        word_start: (B, W) first sub-token position of each word.
        word_len: (B, W) sub-token count of each word (>= 1).
        mode: ``"first"`` (first sub-token, HF run_ner convention) or ``"mean"``.

    Returns:
        (B, W, C) word vectors.
    """
    import torch

    B, T, C = sub.shape
    if mode == "first":
        idx = word_start.unsqueeze(-1).expand(-1, -1, C)  # (B, W, C)
        return sub.gather(1, idx)
    if mode == "mean":
        pos = torch.arange(T, device=sub.device).view(1, 1, T)  # (1, 1, T)
        start = word_start.unsqueeze(-1)  # (B, W, 1)
        member = (pos >= start) & (pos < start + word_len.unsqueeze(-1))  # (B, W, T)
        weights = member.to(sub.dtype) / word_len.clamp(min=1).unsqueeze(-1).to(sub.dtype)
        return torch.bmm(weights, sub)  # (B, W, C)
    raise ValueError(f"unknown pooling {mode!r}; expected 'first' or 'mean'")
