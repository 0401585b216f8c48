"""Runtime choice per model, measured side by side in one process: torch vs ONNX Runtime fp32
vs ONNX Runtime int8 (dynamic quantisation), sentences/s at batch 64, and agreement of the
exported models' tags with torch's.

    python benchmarks/onnx_speed.py --data_file data/wnut16/test.txt --model teacher=runs/teacher \\
        --model student=runs/kd --threads 2 --json onnx_speed.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_distill.data.unlabeled import iter_unlabeled  # noqa: E402
from nlp_distill.export.onnx import export_model  # noqa: E402
from nlp_distill.export.runtime import load_exported  # noqa: E402
from nlp_distill.models.loader import load_model  # noqa: E402


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


def run(models: Dict[str, str], data_file: str, threads: int) -> Dict[str, Dict[str, float]]:
    torch.set_num_threads(threads)
    sents = [s.tokens for s in iter_unlabeled(data_file)]
    out: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in models.items():
            ref_model = load_model(d)
            exported = export_model(d, Path(tmp) / name, quantize="int8")
            ref = ref_model.predict(sents, batch_size=64)
            row = {"torch": sentences_per_second(ref_model.predict, sents)}
            for variant in ("fp32", "int8"):
                m = load_exported(exported, variant=variant, threads=threads)
                row[f"ort_{variant}"] = sentences_per_second(m.predict, sents)
                row[f"ort_{variant}_agreement"] = agreement(m.predict(sents, 64), ref)
            out[name] = row
    return out


def print_table(res: Dict[str, Dict[str, float]]) -> None:
    print("| model | torch sent/s | ORT fp32 sent/s (x torch) | ORT int8 sent/s (x torch) | int8 tag agreement |")
    print("|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['torch']:.0f} | {r['ort_fp32']:.0f} ({r['ort_fp32'] / r['torch']:.2f}) "
              f"| {r['ort_int8']:.0f} ({r['ort_int8'] / r['torch']:.2f}) | {r['ort_int8_agreement']:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_file", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=MODEL_DIR (repeat)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = run(dict(m.split("=", 1) for m in a.model), a.data_file, a.threads)
    print_table(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
