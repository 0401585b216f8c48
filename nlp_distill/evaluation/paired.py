"""Pooled F1 from per-sentence counts, and paired bootstrap intervals over sentences.

A system's predictions on N sentences reduce to an (N, 3) array of per-sentence counts
``(true positives, predicted, gold)``: entities (seqeval's default, conlleval-compatible) for span
tags, tokens for plain tags (POS, where F1 is token accuracy). Summing rows and taking
``2 tp / (predicted + gold)`` gives exactly ``metrics.tagging_metrics``' micro F1 of the same
predictions, so pooling folds is summing their rows, and several seeds of one recipe are pooled by
adding their counts sentence by sentence.

Two systems scored on the same sentences are compared by resampling sentences with replacement
(Koehn 2004; Dror et al. 2018): each resample weighs both systems' rows alike, which cancels the
variation that comes from which sentences happen to be in the test set.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from nlp_distill.data.labels import is_plain_tag_set

TP, PRED, GOLD = 0, 1, 2


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-sentence ``(tp, predicted, gold)`` counts, shape (N, 3) int64.

    Raises:
        ValueError: the two lists, or a sentence's tags, differ in length.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    plain = is_plain_tag_set(t for g in gold for t in g)
    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        if plain:
            out[i] = (sum(a == b for a, b in zip(g, p)), len(p), len(g))
        else:
            ge, pe = set(get_entities(list(g))), set(get_entities(list(p)))
            out[i] = (len(ge & pe), len(pe), len(ge))
    return out


def f1_of(counts: np.ndarray) -> np.ndarray:
    """F1 of count totals: (..., 3) ``(tp, predicted, gold)`` -> (...); 0 where nothing is
    predicted or gold."""
    tp, denom = counts[..., TP], counts[..., PRED] + counts[..., GOLD]
    return np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)


def pooled_f1(counts: np.ndarray) -> float:
    """Micro F1 of all rows of an (N, 3) count array."""
    return float(f1_of(counts.sum(axis=0)))


def resample_weights(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """(samples, n) counts of how often each sentence is drawn in each bootstrap resample of n."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples)


def resampled_f1(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """F1 of each resample: (N, 3) counts, (B, N) weights -> (B,)."""
    return f1_of(weights @ counts)


def paired_difference(a: np.ndarray, b: np.ndarray, weights: np.ndarray, level: float = 0.95
                      ) -> Dict[str, object]:
    """``F1(a) - F1(b)`` on the same sentences with its percentile bootstrap interval.

    Args:
        a, b: (N, 3) counts of two systems on the same N sentences (row i: the same sentence).
        weights: (B, N) resample weights (``resample_weights``), shared by every comparison.

    Returns:
        ``{"diff", "ci95": [lo, hi], "p_a_better"}``: the share of resamples where a scores higher.
    """
    _same_rows(a, b)
    d = resampled_f1(a, weights) - resampled_f1(b, weights)
    lo, hi = _interval(d, level)
    return {"diff": pooled_f1(a) - pooled_f1(b), "ci95": [lo, hi], "p_a_better": float(np.mean(d > 0))}


def paired_ratio(a: np.ndarray, b: np.ndarray, weights: np.ndarray, level: float = 0.95) -> Dict[str, object]:
    """``F1(a) / F1(b)`` (how much of b's F1 a keeps) with its percentile bootstrap interval."""
    _same_rows(a, b)
    fa, fb = resampled_f1(a, weights), resampled_f1(b, weights)
    r = np.where(fb > 0, fa / np.where(fb > 0, fb, 1.0), 0.0)
    lo, hi = _interval(r, level)
    whole = pooled_f1(b)
    return {"ratio": pooled_f1(a) / whole if whole > 0 else 0.0, "ci95": [lo, hi]}


def _interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _same_rows(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same sentences: counts of shape {a.shape} and {b.shape}")
