"""CPU inference speed and memory of saved models: throughput at batch 1 and 64, p50/p95
latency at batch 1, peak RSS (measured in a fresh subprocess per model).

Run alone: ``python benchmarks/speed.py --data_file data/wnut16/test.txt --model teacher=runs/teacher
--model student=runs/student --threads 2 --json speed.json``
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_distill.data.unlabeled import iter_unlabeled  # noqa: E402


def load_any(spec: str, threads: Optional[int] = None):
    """A saved model by what its folder holds: ``DIR`` or ``DIR@RUNTIME``.

    A TransformerTokenClassifier or NeuralTagger folder runs in torch (``@fp32`` / ``@bf16`` /
    ``@auto`` set its precision; default: the saved one); a folder from ``nlp-export onnx`` runs in
    ONNX Runtime (``@fp32`` / ``@int8``; default int8 when exported) with ``threads`` threads.
    """
    from nlp_distill.export.backends import exported_class, load_exported
    from nlp_distill.models.loader import load_model

    folder, _, runtime = spec.partition("@")
    if exported_class(folder) is not None:
        return load_exported(folder, runtime or None, threads)
    model = load_model(folder)
    if runtime:
        model.config = model.config.replace(precision=runtime)
    return model


def measure(predict: Callable[[List[List[str]], int], list], sentences: Sequence[List[str]],
            latency_n: int = 200, repeats: int = 2) -> Dict[str, float]:
    """Throughput at batch 1 and 64 and batch-1 latency percentiles, best of ``repeats``."""
    words = sum(len(s) for s in sentences)
    predict([list(s) for s in sentences[:8]], 8)  # warm-up
    res: Dict[str, float] = {}
    for bs in (1, 64):
        best = float("inf")
        subset = sentences if bs == 64 else sentences[:latency_n]
        for _ in range(repeats):
            t = time.perf_counter()
            if bs == 1:
                lat = []
                for s in subset:
                    t1 = time.perf_counter()
                    predict([list(s)], 1)
                    lat.append(time.perf_counter() - t1)
            else:
                predict([list(s) for s in subset], 64)
            dt = time.perf_counter() - t
            if dt < best:
                best = dt
                if bs == 1:
                    res["latency_p50_ms"] = float(np.percentile(lat, 50) * 1e3)
                    res["latency_p95_ms"] = float(np.percentile(lat, 95) * 1e3)
        n_words = words if bs == 64 else sum(len(s) for s in subset)
        res[f"sent_per_s_b{bs}"] = len(subset) / best
        res[f"words_per_s_b{bs}"] = n_words / best
    return res


def peak_rss_mb(model_dir: str, data_file: str, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and tags the file at batch 64.

    Read from ``VmHWM`` in /proc: ``getrusage``'s ``ru_maxrss`` survives fork+exec on Linux and
    would report the (larger) parent's peak instead of the child's.
    """
    code = (
        "import sys,torch;sys.path.insert(0,%r);torch.set_num_threads(%d);"
        "from benchmarks.speed import load_any;from nlp_distill.data.unlabeled import iter_unlabeled;"
        "m=load_any(%r,%d);s=[x.tokens for x in iter_unlabeled(%r)];m.predict(s,batch_size=64);"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])"
    ) % (str(Path(__file__).resolve().parents[1]), threads, model_dir, threads, data_file)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def benchmark_models(models: Dict[str, str], data_file: str, threads: int = 2, latency_n: int = 200,
                     rss: bool = True) -> Dict[str, Dict[str, float]]:
    """Measure every model side by side in this process (same data, same threads)."""
    torch.set_num_threads(threads)
    sents = [s.tokens for s in iter_unlabeled(data_file)]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_file", required=True)
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=DIR[@RUNTIME] (repeatable): a model folder (@fp32/@bf16) or an nlp-export onnx folder (@fp32/@int8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    models = dict(m.split("=", 1) for m in a.model)
    res = benchmark_models(models, a.data_file, a.threads)
    print(f"{'model':<20} {'sent/s b1':>10} {'sent/s b64':>11} {'words/s b64':>12} {'p50 ms':>8} {'p95 ms':>8} {'RSS MB':>8}")
    for k, r in res.items():
        print(f"{k:<20} {r['sent_per_s_b1']:>10.1f} {r['sent_per_s_b64']:>11.1f} {r['words_per_s_b64']:>12.0f} "
              f"{r['latency_p50_ms']:>8.2f} {r['latency_p95_ms']:>8.2f} {r.get('peak_rss_mb', float('nan')):>8.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
