"""Entity-level P/R/F1 (seqeval, conlleval-compatible) per type and overall, token accuracy;
for plain tag sets (POS) token-level P/R/F1 per tag instead of entities.

Sequences are scored per sentence: a list of tag lists, never flattened across sentences (so an
entity cannot run from one sentence into the next).
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from typing import Any, Callable, Dict, List, Sequence

from seqeval.metrics import classification_report

from nlp_distill.data.labels import is_plain_tag_set


def tagging_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict:
    """Score predicted tag sequences against gold ones, by the scheme of the gold tags.

    Span schemes (BIO, BIOES, IO): entities, scored by seqeval. Plain tags (POS): each token is
    one decision, so ``per_type`` holds each tag's token-level scores and the overall
    precision, recall and F1 (micro over tokens) equal ``accuracy``: model selection on ``f1``
    then follows token accuracy.

    Returns:
        ``{"precision", "recall", "f1", "accuracy", "n_sentences", "scheme": "span" | "plain",
        "per_type": {type or tag: {precision, recall, f1, support}}}`` (floats in [0, 1]).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    n_tok = correct = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        n_tok += len(g)
        correct += sum(a == b for a, b in zip(g, p))
    if is_plain_tag_set(t for g in gold for t in g):
        return {"precision": correct / max(n_tok, 1), "recall": correct / max(n_tok, 1),
                "f1": correct / max(n_tok, 1), "accuracy": correct / max(n_tok, 1), "n_sentences": len(gold),
                "scheme": "plain", "per_type": _per_tag(gold, pred)}
    gold_l = [list(g) for g in gold]
    pred_l = [list(p) for p in pred]
    # seqeval raises a TypeError on an empty list: no sentences score like no entities
    with warnings.catch_warnings():  # no entity anywhere: seqeval averages empty arrays
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = classification_report(gold_l, pred_l, output_dict=True, zero_division=0) if gold_l else {}
    micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
            "support": int(v["support"])}
        for k, v in rep.items()
        if not k.endswith(" avg")
    }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "accuracy": correct / max(n_tok, 1),
        "n_sentences": len(gold),
        "scheme": "span",
        "per_type": per_type,
    }


def _per_tag(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict[str, Dict[str, float]]:
    """Token-level precision, recall, F1 and gold support of every tag in gold or predictions."""
    hit, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred):
        for a, b in zip(g, p):
            n_gold[a] += 1
            n_pred[b] += 1
            hit[a] += a == b
    out = {}
    for t in sorted(set(n_gold) | set(n_pred)):
        prec = hit[t] / n_pred[t] if n_pred[t] else 0.0
        rec = hit[t] / n_gold[t] if n_gold[t] else 0.0
        out[t] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                  "support": n_gold[t]}
    return out


def evaluate_split(predict: Callable[[List[List[str]]], List[List[str]]], sentences: Sequence) -> Dict[str, Any]:
    """Predict the tokens of tagged ``sentences`` and score them (``tagging_metrics``), plus
    ``sentences_per_second`` of the prediction."""
    t = time.perf_counter()
    pred = predict([s.tokens for s in sentences])
    dt = time.perf_counter() - t
    m = tagging_metrics([s.tags for s in sentences], pred)
    m["sentences_per_second"] = len(sentences) / max(dt, 1e-9)
    return m
