"""Entity-level P/R/F1 (seqeval, conlleval-compatible) per type and overall, token accuracy.

Sequences are scored per sentence: a list of tag lists, never flattened across sentences (so an
entity cannot run from one sentence into the next).
"""
from __future__ import annotations

import warnings
from typing import Dict, Sequence

from seqeval.metrics import classification_report


def tagging_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict:
    """Score predicted tag sequences against gold ones.

    Returns:
        ``{"precision", "recall", "f1", "accuracy", "n_sentences", "per_type": {type: {precision,
        recall, f1, support}}}`` (floats in [0, 1]).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    n_tok = correct = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        n_tok += len(g)
        correct += sum(a == b for a, b in zip(g, p))
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
        "per_type": per_type,
    }
