"""What the benchmark scripts share: their common flags, the sentences they time, models loaded
through the library, the timing loop, one reader of resident memory, and JSON / Markdown output.

Every script runs from the repository root as ``python -m benchmarks.NAME``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.data.conll import write_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.io import write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
THREADS = 2  # torch threads by default: every CPU figure in docs/benchmarks.md is from a 2-core machine
SPEECH_EVERY, SPEECH_N = 19, 1000  # lines 19, 38, ... of unlabeled.txt: the sentences docs/benchmarks.md times on
Predict = Callable[[List[List[str]], int], List[List[str]]]


# ---------------------------------------------------------------- command lines

def parser(module: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """The argument parser of ``python -m benchmarks.MODULE``, its docstring as the help text."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_threads(ap: argparse.ArgumentParser, default: Optional[int] = THREADS) -> None:
    ap.add_argument("--threads", type=int, default=default, help=f"torch threads (default: {default})")


def add_json(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")


def add_models(ap: argparse.ArgumentParser, what: str = "NAME=MODEL_DIR (repeat)") -> None:
    ap.add_argument("--model", action="append", required=True, help=what)


def models_parser(module: str, doc: Optional[str], what: str) -> argparse.ArgumentParser:
    """``parser`` with ``--model NAME=DIR`` (repeat), ``--threads`` and ``--json``: the options of
    every benchmark that scores or times saved models."""
    ap = parser(module, doc)
    add_models(ap, what)
    add_threads(ap)
    add_json(ap)
    return ap


def parse_with_threads(ap: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv`` and give torch ``--threads`` intra-op threads."""
    import torch

    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    return a


def model_specs(specs: Sequence[str]) -> Dict[str, str]:
    """``["a=DIR", ...]`` -> ``{"a": "DIR"}``; a spec without ``=`` stops with its text."""
    bad = [s for s in specs if "=" not in s]
    if bad:
        raise SystemExit(f"--model {bad[0]}: expected NAME=MODEL_DIR")
    return dict(s.split("=", 1) for s in specs)


def save_json(path: Optional[str], obj) -> None:
    """Write ``obj`` to ``path`` (atomically, UTF-8) when a path was given."""
    if path:
        write_json(path, obj)


def command_line(module: str, argv: Optional[Sequence[str]]) -> str:
    """The command that produced a result, for its JSON (measurements cite their command)."""
    return f"python -m benchmarks.{module} " + " ".join(argv if argv is not None else sys.argv[1:])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (cells already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def child_env(**extra: str) -> Dict[str, str]:
    """This environment for a child process that imports ``benchmarks`` and the library from this
    checkout whatever its working directory, offline."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


# ---------------------------------------------------------------- sentences

def read_sentences(path, n: Optional[int] = None) -> List[List[str]]:
    """Token lists of a raw-text file (one tokenized sentence per line) or a CoNLL file, the first ``n``."""
    out: List[List[str]] = []
    for s in iter_unlabeled(path):
        if n is not None and len(out) >= n:
            break
        out.append(list(s.tokens))
    return out


def speech_sentences(data_dir, speed_file: Optional[str] = None, work=None) -> List[List[str]]:
    """The timing sentences: ``speed_file``, or every 19th line of ``DATA_DIR/unlabeled.txt``
    (1000 SOTU sentences, 40.5 words mean on the standard WNUT-16 dir), written to
    ``WORK/speech1000.txt`` first (``WORK`` defaults to ``DATA_DIR``)."""
    if speed_file is None:
        src = Path(data_dir) / "unlabeled.txt"
        if not src.is_file():
            raise SystemExit(f"{src} is missing: pass a file of sentences to time (one tokenized sentence per line)")
        lines = src.read_text(encoding="utf-8").splitlines()[SPEECH_EVERY - 1 :: SPEECH_EVERY][:SPEECH_N]
        work = Path(work if work is not None else data_dir)
        work.mkdir(parents=True, exist_ok=True)
        speed_file = str(work / "speech1000.txt")
        Path(speed_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    sents = [s.tokens for s in iter_unlabeled(speed_file, fmt="text")]
    if not sents:
        raise SystemExit(f"{speed_file}: no sentences to time")
    return sents


def rotated(lines: List[List[str]], n: int) -> Iterator[List[str]]:
    """``n`` sentences: ``lines`` repeated, copy k with its tokens rotated by k (no two copies alike)."""
    for i in range(n):
        toks = lines[i % len(lines)]
        k = (i // len(lines)) % max(len(toks), 1)
        yield toks[k:] + toks[:k]


def subsampled_dir(src: Path, dst: Path, n: Optional[int], low_resource: bool = False) -> Path:
    """Copy a data dir; optionally keep the first ``n`` train sentences; with ``low_resource``
    keep tags on sentence i of train when i % 4 == 0 (25%) and write the rest, untagged, to
    ``unlabeled_indomain.txt``. An existing ``dst/train.txt`` is reused."""
    if (dst / "train.txt").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    d = load_data_dir(src)
    train = d.train[:n] if n else d.train
    dev = d.dev[: max(n // 3, 20)] if n else d.dev
    test = d.test[: max(n // 3, 20)] if n else d.test
    if low_resource:
        gold = [s for i, s in enumerate(train) if i % 4 == 0]
        rest = [s for i, s in enumerate(train) if i % 4 != 0]
        with open(dst / "unlabeled_indomain.txt", "w", encoding="utf-8") as f:
            for s in rest:
                f.write(" ".join(s.tokens) + "\n")
        train = gold
    write_conll(dst / "train.txt", train)
    write_conll(dst / "dev.txt", dev)
    write_conll(dst / "test.txt", test)
    (dst / "labels.txt").write_text("\n".join(d.labels.labels) + "\n", encoding="utf-8")
    if d.unlabeled_path is not None:
        (dst / "unlabeled.txt").write_text(d.unlabeled_path.read_text(encoding="utf-8"), encoding="utf-8")
    return dst


# ---------------------------------------------------------------- models

def load_any(spec: str, threads: Optional[int] = None):
    """A saved model by what its folder holds: ``DIR`` or ``DIR@RUNTIME``, loaded by the library.

    A folder from ``nlp-export`` runs in its runtime (ONNX: ``@fp32`` / ``@int8``, default int8
    when exported, ``threads`` threads); any other saved model runs in torch (``@fp32`` /
    ``@bf16`` / ``@auto`` set its precision; default: the saved one).
    """
    from nlp_distill.export.backends import exported_class, load_exported
    from nlp_distill.pipelines import load_for_inference

    folder, _, runtime = spec.partition("@")
    if exported_class(folder) is not None:
        return load_exported(folder, runtime or None, threads)
    return load_for_inference(folder, "torch", precision=runtime or None)[0]


def agreement(a: List[List[str]], b: List[List[str]]) -> float:
    """Fraction of words given the same tag by two predictions of the same sentences."""
    pairs = [(x, y) for p, q in zip(a, b) for x, y in zip(p, q)]
    return sum(x == y for x, y in pairs) / max(len(pairs), 1)


# ---------------------------------------------------------------- timing

def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``: a shared machine only ever slows a pass down."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(predict: Predict, sentences: Sequence[List[str]], latency_n: int = 200,
            repeats: int = 2) -> Dict[str, float]:
    """Throughput at batch 1 (the first ``latency_n`` sentences, one at a time) and at batch 64
    (all of them), and batch-1 latency percentiles; best of ``repeats``."""
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


# ---------------------------------------------------------------- memory

def _proc_status_mb(pid: int, key: str) -> Optional[float]:
    """``key`` (``VmRSS`` / ``VmHWM``) of /proc/PID/status in MB, ``None`` without /proc or the process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next((int(line.split()[1]) for line in f if line.startswith(key + ":")), None)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None if kb is None else kb / 1024


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def rss_mb(pid: Optional[int] = None) -> float:
    """Resident memory of ``pid`` (default: this process) now, MB; 0 when it is gone."""
    pid = os.getpid() if pid is None else pid
    ps = _psutil()
    if ps is not None:
        try:
            return ps.Process(pid).memory_info().rss / 2**20
        except ps.Error:
            return 0.0
    return _proc_status_mb(pid, "VmRSS") or 0.0


def peak_rss_mb(pid: Optional[int] = None) -> float:
    """Peak resident memory of ``pid`` (default: this process) so far, MB.

    Read from ``VmHWM`` in /proc; without /proc, for this process only, from ``getrusage`` (whose
    ``ru_maxrss`` survives fork+exec on Linux, so a child started by a large parent would report
    the parent's peak: hence /proc first).
    """
    pid = os.getpid() if pid is None else pid
    peak = _proc_status_mb(pid, "VmHWM")
    if peak is not None:  # the kernel updates VmHWM lazily: it can lag the current VmRSS a little
        return max(peak, _proc_status_mb(pid, "VmRSS") or 0.0)
    ps = _psutil()
    if ps is not None and hasattr(ps.Process(pid).memory_info(), "peak_wset"):  # Windows
        return ps.Process(pid).memory_info().peak_wset / 2**20
    if pid != os.getpid():
        raise RuntimeError(f"no way to read the peak memory of process {pid} here (no /proc)")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KB elsewhere


def _children(pid: int) -> List[int]:
    ps = _psutil()
    if ps is not None:
        try:
            return [c.pid for c in ps.Process(pid).children()]
        except ps.Error:
            return []
    kids: List[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


def tree_rss_mb(pid: int) -> Tuple[float, float]:
    """Resident memory now of ``pid`` and all its descendants, MB: (their sum, the largest one's);
    (0, 0) when it is gone."""
    total, largest, todo = 0.0, 0.0, [pid]
    while todo:
        p = todo.pop()
        mb = rss_mb(p)
        total, largest = total + mb, max(largest, mb)
        todo += _children(p)
    return total, largest
