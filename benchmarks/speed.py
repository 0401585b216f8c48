"""CPU inference speed and memory of saved models: throughput at batch 1 and 64, p50/p95
latency at batch 1, peak RSS (measured in a fresh subprocess per model).

    python -m benchmarks.speed --data_file data/wnut16/test.txt --model teacher=runs/teacher \\
        --model student=runs/student --threads 2 --json speed.json
"""
from __future__ import annotations

import subprocess
import sys
from typing import Dict, List, Optional

import torch

from benchmarks.common import (add_json, add_threads, child_env, load_any, measure, model_specs, parser, read_sentences,
                               save_json)

# A fresh process: loads one model, tags the file at batch 64, prints its own peak RSS (MB).
_PEAK_CODE = ("import sys, torch; torch.set_num_threads(int(sys.argv[3]))\n"
              "from benchmarks.common import load_any, peak_rss_mb, read_sentences\n"
              "load_any(sys.argv[1], int(sys.argv[3])).predict(read_sentences(sys.argv[2]), batch_size=64)\n"
              "print(peak_rss_mb())")


def peak_rss_mb(model_spec: str, data_file: str, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and tags the file at batch 64."""
    out = subprocess.run([sys.executable, "-c", _PEAK_CODE, model_spec, data_file, str(threads)],
                         capture_output=True, text=True, check=True, env=child_env())
    return float(out.stdout.strip().splitlines()[-1])


def benchmark_models(models: Dict[str, str], data_file: str, threads: int = 2, latency_n: int = 200,
                     rss: bool = True) -> Dict[str, Dict[str, float]]:
    """Measure every model side by side in this process (same data, same threads)."""
    torch.set_num_threads(threads)
    sents = read_sentences(data_file)
    loaded = {name: load_any(d, threads) for name, d in models.items()}
    out: Dict[str, Dict[str, float]] = {}
    with torch.inference_mode():
        for name, m in loaded.items():
            if hasattr(m, "eval"):  # torch models (ONNX Runtime predictors have no modes)
                m.eval()
            out[name] = measure(lambda s, bs, m=m: m.predict(s, batch_size=bs), sents, latency_n)
    if rss:
        for name, d in models.items():
            out[name]["peak_rss_mb"] = peak_rss_mb(d, data_file, threads)
    return out


def print_table(res: Dict[str, Dict[str, float]]) -> None:
    print(f"{'model':<20} {'sent/s b1':>10} {'sent/s b64':>11} {'words/s b64':>12} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>8}")
    for k, r in res.items():
        print(f"{k:<20} {r['sent_per_s_b1']:>10.1f} {r['sent_per_s_b64']:>11.1f} {r['words_per_s_b64']:>12.0f} "
              f"{r['latency_p50_ms']:>8.2f} {r['latency_p95_ms']:>8.2f} {r.get('peak_rss_mb', float('nan')):>8.0f}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    ap = parser("speed", __doc__)
    ap.add_argument("--data_file", required=True, help="sentences to time (raw text or CoNLL, one sentence per line)")
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=DIR[@RUNTIME] (repeatable): a model folder (@fp32/@bf16) or an nlp-export onnx folder (@fp32/@int8)")
    add_threads(ap)
    add_json(ap)
    a = ap.parse_args(argv)
    res = benchmark_models(model_specs(a.model), a.data_file, a.threads)
    print_table(res)
    save_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
