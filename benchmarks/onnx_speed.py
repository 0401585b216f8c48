"""Runtime choice per model, measured side by side in one process: torch fp32 (and bf16 autocast
where the CPU multiplies bf16 natively) vs ONNX Runtime fp32 vs ONNX Runtime int8
(dynamic quantisation), sentences/s at batch 64, agreement of the
exported models' tags with torch's and, with ``--labeled_file``, each runtime's F1 on that file.

    python -m benchmarks.onnx_speed --data_file data/wnut16/test.txt --model teacher=runs/teacher \\
        --model student=runs/kd --threads 2 --json onnx_speed.json
    python -m benchmarks.onnx_speed --data_file data/wnut16/test.txt --labeled_file data/wnut16/test.txt \\
        --model teacher=runs/teacher --no_speed    # F1 lost by export, no timing
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from benchmarks.common import (add_json, add_models, add_threads, agreement, best_seconds, load_any, model_specs,
                               parser, read_sentences, save_json)
from nlp_distill.data.conll import read_conll
from nlp_distill.export.backends import export_model
from nlp_distill.metrics import tagging_metrics
from nlp_distill.precision import bf16_native


def sentences_per_second(predict: Callable, sents: List[List[str]], repeats: int = 3) -> float:
    """Sentences/s at batch 64, the fastest of ``repeats`` passes after a warm-up."""
    predict(sents[:64], 64)  # warm-up
    return len(sents) / best_seconds(lambda: predict(sents, 64), repeats)


def runtimes_of(d: str, exported: Path, threads: int) -> Dict[str, object]:
    """torch (fp32), torch bf16 autocast (on hardware with native bf16), ORT fp32/int8."""
    out: Dict[str, object] = {"torch": load_any(f"{d}@fp32")}
    if bf16_native(torch.device("cpu")):
        out["torch_bf16"] = load_any(f"{d}@bf16")
    for variant in ("fp32", "int8"):
        out[f"ort_{variant}"] = load_any(f"{exported}@{variant}", threads)
    return out


def run(models: Dict[str, str], data_file: str, threads: int, labeled_file: Optional[str] = None,
        speed: bool = True, repeats: int = 3) -> Dict[str, Dict[str, float]]:
    torch.set_num_threads(threads)
    sents = read_sentences(data_file)
    gold = read_conll(labeled_file) if labeled_file else []
    out: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in models.items():
            runtimes = runtimes_of(d, export_model(d, Path(tmp) / name, quantize="int8"), threads)
            ref = runtimes["torch"].predict(sents, 64)
            row: Dict[str, float] = {}
            for key, m in runtimes.items():
                if speed:
                    row[key] = sentences_per_second(m.predict, sents, repeats)
                if key != "torch":
                    row[f"{key}_agreement"] = agreement(m.predict(sents, 64), ref)
                if gold:
                    row[f"{key}_f1"] = tagging_metrics([s.tags for s in gold], m.predict([s.tokens for s in gold], 64))["f1"]
            out[name] = row
    return out


def print_table(res: Dict[str, Dict[str, float]]) -> None:
    cols = [("torch", "torch fp32 sent/s"), ("torch_bf16", "torch bf16 sent/s (x fp32)"),
            ("ort_fp32", "ORT fp32 sent/s (x torch)"), ("ort_int8", "ORT int8 sent/s (x torch)"),
            ("ort_int8_agreement", "int8 tag agreement"), ("torch_f1", "F1 torch"), ("torch_bf16_f1", "F1 torch bf16"),
            ("ort_fp32_f1", "F1 ORT fp32"), ("ort_int8_f1", "F1 ORT int8")]
    cols = [(k, h) for k, h in cols if any(k in r for r in res.values())]
    print("| model | " + " | ".join(h for _, h in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, r in res.items():
        cells = []
        for k, _ in cols:
            v = r.get(k, float("nan"))
            if k in ("torch_bf16", "ort_fp32", "ort_int8"):
                cells.append(f"{v:.0f} ({v / r['torch']:.2f})")
            else:
                cells.append(f"{v:.0f}" if k == "torch" else f"{v:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    ap = parser("onnx_speed", __doc__)
    ap.add_argument("--data_file", required=True)
    add_models(ap)
    add_threads(ap)
    add_json(ap)
    ap.add_argument("--labeled_file", default=None, help="CoNLL file with tags: F1 of each runtime on it")
    ap.add_argument("--no_speed", action="store_true", help="skip the timing (agreement and F1 only)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per runtime (the fastest counts: "
                    "a shared 2-core machine only ever slows a pass down)")
    a = ap.parse_args(argv)
    res = run(model_specs(a.model), a.data_file, a.threads, a.labeled_file, not a.no_speed, a.repeats)
    print_table(res)
    save_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
