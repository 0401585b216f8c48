"""Runtime choice per model, measured side by side in one process: torch fp32 (and bf16 autocast
where the CPU multiplies bf16 natively) vs ONNX Runtime fp32 vs ONNX Runtime int8
(dynamic quantisation), sentences/s at batch 64, agreement of the
exported models' tags with torch's and, with ``--labeled_file``, each runtime's F1 on that file.

    python benchmarks/onnx_speed.py --data_file data/wnut16/test.txt --model teacher=runs/teacher \\
        --model student=runs/kd --threads 2 --json onnx_speed.json
    python benchmarks/onnx_speed.py --data_file data/wnut16/test.txt --labeled_file data/wnut16/test.txt \\
        --model teacher=runs/teacher --no_speed    # F1 lost by export, no timing
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_distill.data.conll import read_conll  # noqa: E402
from nlp_distill.data.unlabeled import iter_unlabeled  # noqa: E402
from nlp_distill.export.backends import export_model, load_exported  # noqa: E402
from nlp_distill.metrics import tagging_metrics  # noqa: E402
from nlp_distill.models.loader import load_model  # noqa: E402
from nlp_distill.models.transformer import TransformerTokenClassifier  # noqa: E402
from nlp_distill.precision import bf16_native  # noqa: E402


def sentences_per_second(predict: Callable, sents: List[List[str]], repeats: int = 3) -> float:
    predict(sents[:64], 64)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predict(sents, 64)
        best = min(best, time.perf_counter() - t)
    return len(sents) / best


def agreement(a: List[List[str]], b: List[List[str]]) -> float:
    pairs = [(x, y) for p, q in zip(a, b) for x, y in zip(p, q)]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


def runtimes_of(d: str, exported: Path, threads: int) -> Dict[str, object]:
    """torch (fp32), torch bf16 autocast (on hardware with native bf16), ORT fp32/int8."""
    ref = load_model(d)
    out: Dict[str, object] = {"torch": ref}
    if isinstance(ref, TransformerTokenClassifier):
        def at(precision: str) -> TransformerTokenClassifier:  # the same weights at another precision
            return TransformerTokenClassifier(ref.model, ref.tokenizer, ref.labels, ref.config.replace(precision=precision))

        out["torch"] = at("fp32")
        if bf16_native(torch.device("cpu")):
            out["torch_bf16"] = at("bf16")
    else:  # a NeuralTagger: its precision is read at predict time
        ref.config.precision = "fp32"
        if bf16_native(torch.device("cpu")):
            out["torch_bf16"] = load_model(d)
            out["torch_bf16"].config.precision = "bf16"
    for variant in ("fp32", "int8"):
        out[f"ort_{variant}"] = load_exported(exported, variant=variant, threads=threads)
    return out


def run(models: Dict[str, str], data_file: str, threads: int, labeled_file: Optional[str] = None,
        speed: bool = True, repeats: int = 3) -> Dict[str, Dict[str, float]]:
    torch.set_num_threads(threads)
    sents = [s.tokens for s in iter_unlabeled(data_file)]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_file", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeat)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--labeled_file", default=None, help="CoNLL file with tags: F1 of each runtime on it")
    ap.add_argument("--no_speed", action="store_true", help="skip the timing (agreement and F1 only)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per runtime (the fastest counts: "
                    "a shared 2-core machine only ever slows a pass down)")
    a = ap.parse_args()
    res = run(dict(m.split("=", 1) for m in a.model), a.data_file, a.threads, a.labeled_file, not a.no_speed, a.repeats)
    print_table(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
