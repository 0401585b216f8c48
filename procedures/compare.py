"""Side-by-side table of saved models on one tagged file: F1, parameters, size, speed. Every
folder ``nlp_distill.pipeline`` runs is taken: students, compact students, transformers and ONNX
exports."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from nlp_distill.data.conll import read_conll
from nlp_distill.io import folder_size
from nlp_distill.metrics import tagging_metrics
from nlp_distill.models.loader import model_class_of
from nlp_distill.pipelines import load_for_inference


def _size(model: Any, folder: Path) -> int:
    """Bytes on disk of what runs: the whole folder, less an export's ONNX file that is not run."""
    size = folder_size(folder)
    files = getattr(model, "files", None)
    if files and getattr(model, "model_file", None) is not None:
        unused = {folder / f for f in files.values()} - {Path(model.model_file)}
        size -= sum(p.stat().st_size for p in unused if p.is_file())
    return size


def compare_models(model_dirs: Sequence[str], data_file, batch_size: int = 64,
                   precision: Optional[str] = None) -> List[Dict[str, Any]]:
    """One row per model: test F1 on ``data_file`` (CoNLL with tags), parameters, size on disk
    and sentences/s at ``batch_size`` (after one warm-up pass).

    Args:
        model_dirs: model, run, compact or ONNX export folders (``pipeline`` loads each).
        precision: as ``pipeline``'s, for every model (an export: which ONNX file runs).

    Returns:
        rows with ``model``, ``class`` (an export: ``OnnxTagger`` / ``OnnxTransformer``),
        ``onnx_file`` (an export: the ``fp32`` or ``int8`` file run, else ``None``), ``f1``, ``parameters`` (``None`` where unknown: an export without ``onnx``
        installed), ``size_mb`` and ``sentences_per_second``.
    """
    sents = read_conll(data_file)
    tokens = [s.tokens for s in sents]
    rows = []
    for d in model_dirs:
        model, cls, backend = load_for_inference(d, precision=precision)
        folder = Path(model.model_file).parent if backend == "onnx" else model_class_of(d)[1]
        model.predict(tokens[:batch_size], batch_size=batch_size)  # warm-up
        t = time.perf_counter()
        pred = model.predict(tokens, batch_size=batch_size)
        dt = time.perf_counter() - t
        count = getattr(model, "num_parameters", None)
        rows.append({"model": str(d), "class": cls, "onnx_file": model.variant if backend == "onnx" else None,
                     "f1": tagging_metrics([s.tags for s in sents], pred)["f1"],
                     "parameters": count() if count else None, "size_mb": _size(model, folder) / 1e6,
                     "sentences_per_second": len(sents) / max(dt, 1e-9)})
    return rows


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    base = rows[0]
    lines = ["| model | kind | F1 | params | size MB | sent/s | x first |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] is not None else ""
        kind = r["class"] + (f" {r['onnx_file']}" if r.get("onnx_file") else "")
        lines.append(f"| {r['model']} | {kind} | {r['f1']:.4f} | {params} | {r['size_mb']:.1f} "
                     f"| {r['sentences_per_second']:.0f} | {r['sentences_per_second'] / base['sentences_per_second']:.1f} |")
    return "\n".join(lines)
