"""Side-by-side table of saved models on one tagged file: F1, parameters, size, speed."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

from nlp_distill.data.conll import read_conll
from nlp_distill.io import folder_size
from nlp_distill.metrics import tagging_metrics
from nlp_distill.models.loader import load_model, model_class_of


def compare_models(model_dirs: Sequence[str], data_file, batch_size: int = 64) -> List[Dict[str, Any]]:
    """One row per model: test F1 on ``data_file`` (CoNLL with tags), parameters, size on disk
    and sentences/s at ``batch_size`` (after one warm-up pass)."""
    sents = read_conll(data_file)
    tokens = [s.tokens for s in sents]
    rows = []
    for d in model_dirs:
        cls, folder = model_class_of(d)
        model = load_model(d)
        model.predict(tokens[:batch_size], batch_size=batch_size)  # warm-up
        t = time.perf_counter()
        pred = model.predict(tokens, batch_size=batch_size)
        dt = time.perf_counter() - t
        rows.append({"model": str(d), "class": cls, "f1": tagging_metrics([s.tags for s in sents], pred)["f1"],
                     "parameters": model.num_parameters(), "size_mb": folder_size(folder) / 1e6,
                     "sentences_per_second": len(sents) / max(dt, 1e-9)})
    return rows


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    base = rows[0]
    lines = ["| model | kind | F1 | params | size MB | sent/s | x first |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['class']} | {r['f1']:.4f} | {r['parameters'] / 1e6:.2f}M | {r['size_mb']:.1f} "
                     f"| {r['sentences_per_second']:.0f} | {r['sentences_per_second'] / base['sentences_per_second']:.1f} |")
    return "\n".join(lines)
