"""Viterbi decoding over packed rows, shared by the torch CRF and the torch-free ONNX runtime.

Every sentence's emission rows arrive concatenated (``rows``: (T, C), sentence after sentence,
``lengths`` words each), as many sentences as the caller has (``NeuralTagger.predict`` passes a
whole block, not one batch). The recursion runs time-major over the sentences sorted by length,
longest first: at step t only the sentences longer than t take part, as a prefix of that order
(the layout of a ``PackedSequence``). No padding is scored and the number of steps is the longest
sentence's length, not that times the number of batches.

``PackedLayout`` holds the index arithmetic, ``backtrace`` follows the back-pointers in numpy;
the forward recursion has a torch form (``CRF.viterbi_rows``) and a numpy form (``viterbi``).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.modules.label_probs import log_softmax


class PackedLayout:
    """Time-major order of the rows of sentences sorted by length (longest first, stable).

    Attributes:
        n: number of sentences (all non-empty).
        lengths: (n,) lengths in the given sentence order.
        batch_sizes: (L,) sentences longer than t, for each step t < L (L = the longest length).
        offsets: (L + 1,) start of step t's block in time-major order.
        index: (T,) time-major position -> row in the given (sentence after sentence) order.
    """

    def __init__(self, lengths: Sequence[int]) -> None:
        self.lengths = np.asarray(lengths, np.int64)
        if (self.lengths < 1).any():
            raise ValueError("Viterbi needs non-empty sentences")
        self.n = len(self.lengths)
        order = np.argsort(-self.lengths, kind="stable")
        L = int(self.lengths.max()) if self.n else 0
        counts = np.bincount(self.lengths, minlength=L + 1)  # (L + 1,) sentences of each length
        self.batch_sizes = self.n - np.cumsum(counts)[:L]  # (L,) longer than t
        self.offsets = np.concatenate([[0], np.cumsum(self.batch_sizes)])
        starts = (np.cumsum(self.lengths) - self.lengths)[order]  # (n,) first row of each sorted sentence
        step = np.repeat(np.arange(L), self.batch_sizes)  # (T,) step t of each time-major position
        rank = np.arange(len(step)) - self.offsets[step]  # (T,) sorted sentence of each position
        self.index = starts[rank] + step

    def split(self, labels: np.ndarray) -> List[List[int]]:
        """Time-major labels (T,) -> one list per sentence, in the given sentence order."""
        flat = np.empty_like(labels)
        flat[self.index] = labels
        return [p.tolist() for p in np.split(flat, np.cumsum(self.lengths)[:-1])] if self.n else []


def backtrace(layout: PackedLayout, final: np.ndarray, back: np.ndarray, end: np.ndarray) -> List[List[int]]:
    """Best path per sentence from the packed forward recursion.

    Args:
        layout: the sentences' ``PackedLayout``.
        final: (n, C) best score ending in each label at each sentence's last word (sorted order,
            end scores not added).
        back: (T - batch_sizes[0], C) best previous label, time-major, for steps 1..L-1.
        end: (C,) end scores.

    Returns:
        One label-id list per sentence, in the given order.
    """
    bs, off = layout.batch_sizes, layout.offsets
    best_end = (final + end).argmax(1)  # (n,)
    path = np.empty(int(off[-1]), np.int64)
    cur = np.empty(layout.n, np.int64)
    for t in range(len(bs) - 1, -1, -1):
        k = bs[t]
        done = bs[t + 1] if t + 1 < len(bs) else 0
        cur[done:k] = best_end[done:k]  # sentences whose last word is t start their path here
        path[off[t] : off[t] + k] = cur[:k]
        if t:
            cur[:k] = back[np.arange(off[t] - bs[0], off[t] - bs[0] + k), cur[:k]]
    return layout.split(path)


def viterbi(emissions: np.ndarray, mask: np.ndarray, start: np.ndarray, trans: np.ndarray,
            end: np.ndarray) -> List[List[int]]:
    """Best CRF path per sentence in numpy (scores include the constraint penalties).

    Args:
        emissions: (B, L, C); mask: (B, L) bool, left-aligned, every sentence non-empty;
        start, end: (C,); trans: (C, C) [from, to].
    """
    return viterbi_rows(emissions[mask], mask.sum(1), start, trans, end)


def viterbi_rows(rows: np.ndarray, lengths: Sequence[int], start: np.ndarray, trans: np.ndarray,
                 end: np.ndarray) -> List[List[int]]:
    """``viterbi`` over concatenated emission rows (T, C), ``lengths`` words each (>= 1)."""
    layout = PackedLayout(lengths)
    if not layout.n:
        return []
    data = np.asarray(rows, np.float32)[layout.index]  # (T, C) time-major
    bs, off = layout.batch_sizes, layout.offsets
    final = np.empty((layout.n, data.shape[1]), np.float32)
    score, back = start + data[: bs[0]], []
    for t in range(1, len(bs)):
        k = bs[t]
        final[k : len(score)] = score[k:]  # sentences that ended at t - 1
        cand = score[:k, :, None] + trans[None]  # (k, C_from, C_to)
        idx = cand.argmax(1)  # (k, C)
        score = np.take_along_axis(cand, idx[:, None, :], 1)[:, 0] + data[off[t] : off[t] + k]
        back.append(idx)
    final[: len(score)] = score
    back_arr = np.concatenate(back) if back else np.zeros((0, len(start)), np.int64)
    return backtrace(layout, final, back_arr, end)


NEG = -1e4  # log-score of a transition the scheme forbids (finite: a sentence always has a path)


@functools.lru_cache(maxsize=64)
def _penalties(labels: Tuple[str, ...], start_ok: Tuple[bool, ...], trans_ok: Tuple[Tuple[bool, ...], ...],
               end_ok: Tuple[bool, ...]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    def pen(ok) -> np.ndarray:
        return np.where(np.asarray(ok, bool), 0.0, NEG).astype(np.float32)

    return pen(start_ok), pen(trans_ok), pen(end_ok)


def scheme_penalties(labels) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(start (C,), trans (C, C) [from, to], end (C,)) log-penalties of a ``LabelVocab``'s scheme,
    or ``None`` where every tag sequence is valid (IO, plain tags)."""
    start_ok, trans_ok = labels.allowed_transitions()
    end_ok = labels.allowed_end()
    if all(start_ok) and all(all(r) for r in trans_ok) and all(end_ok):
        return None
    return _penalties(tuple(labels.labels), tuple(start_ok), tuple(tuple(r) for r in trans_ok), tuple(end_ok))


def best_valid_paths(logits: Sequence[np.ndarray], labels) -> List[List[int]]:
    """Label ids per sentence from a softmax tagger's word logits, the most probable sequence the
    tag scheme allows (Viterbi over log-softmax scores with the scheme's transitions; no
    ``I-X`` after ``O`` or after another type). Plain argmax where every sequence is valid.

    Args:
        logits: one (n_words, C) array per sentence (empty sentences give []).
        labels: the ``LabelVocab`` whose order the columns follow.
    """
    pen = scheme_penalties(labels)
    if pen is None:
        return [np.asarray(l).argmax(-1).tolist() for l in logits]
    out: List[List[int]] = [[] for _ in logits]
    real = [i for i, l in enumerate(logits) if len(l)]
    if real:
        rows = np.concatenate([log_softmax(np.asarray(logits[i])) for i in real])  # (T, C)
        for i, path in zip(real, viterbi_rows(rows, [len(logits[i]) for i in real], *pen)):
            out[i] = path
    return out
