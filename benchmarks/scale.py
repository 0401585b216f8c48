"""Scale: label N unlabeled sentences into a transfer store and train a student from it, with
peak resident memory sampled over time (the process and its children, from /proc).

Inputs of N sentences are the unlabeled file repeated; copy k > 0 perturbs every sentence
(tokens of copy k are rotated by k positions) so no two copies are the same text. For each N and
each engine of ``--engines`` (``local``: one process; ``ray``: ``--engine ray`` with ``--workers``
teacher actors on a local Ray cluster, or the one at RAY_ADDRESS): ``nlp-train label_unlabeled``
(sentences/s, peak RSS of the process tree, Ray's processes included, store size); then one
student epoch from the first engine's Parquet store (``tagger_kd_pseudo --transfer_store``, peak
RSS), so flat memory shows as RSS that does not grow with N; and, in this process, the teacher
logits one student epoch reads (every sentence once, in the student's length-bucketed random
batches) from the Parquet store against the same logits held in memory.

Run: ``python -m benchmarks.scale --teacher runs/teacher --data_dir data/wnut16 --sizes 10000,100000
--engines local,ray --output_dir results_scale``
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from benchmarks.common import child_env, parser, rotated, save_json, tree_rss_mb
from nlp_distill.io import folder_size


def run_sampled(cmd: List[str], log: Path, every: float = 0.2) -> Dict[str, float]:
    """Run ``cmd``; return wall seconds, peak RSS (MB) of the process tree and of its largest
    process, and the RSS samples' count."""
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        peak, peak_one, samples = 0.0, 0.0, 0
        while proc.poll() is None:
            tree, one = tree_rss_mb(proc.pid)
            peak, peak_one, samples = max(peak, tree), max(peak_one, one), samples + 1
            time.sleep(every)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": peak, "peak_rss_one_process_mb": peak_one,
            "rss_samples": samples}


def make_input(src: Path, n: int, dst: Path) -> int:
    """Write ``rotated(src's sentences, n)`` to ``dst``."""
    lines = [l.split() for l in src.read_text(encoding="utf-8").splitlines() if l.strip()]
    with open(dst, "w", encoding="utf-8") as f:
        f.writelines(" ".join(toks) + "\n" for toks in rotated(lines, n))
    return n


def _nlp_train(*args: str, procs: int = 1) -> List[str]:
    """``nlp-train ARGS``, under ``torchrun --nproc_per_node procs`` when ``procs`` > 1."""
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else []
    return [sys.executable, *launch, "-m", "procedures.cli", *args]


def epoch_reads(store_dir: Path, batch_size: int = 32, seed: int = 0) -> Dict[str, float]:
    """Seconds to read the teacher logits of one student epoch (every sentence once, in
    length-bucketed random batches, as ``(B, L, C)`` tensors) from the Parquet store, and from the
    same logits held in memory; the reader's decoded-row-group cache at its largest, and the size
    of the in-memory copy."""
    from nlp_distill.data.batching import bucket_batches
    from nlp_distill.distill.teacher_cache import padded_rows
    from nlp_distill.distill.transfer_store import TransferStore

    TransferStore(store_dir).sentence(0)  # pyarrow's one-time start (codecs, readers) is not an epoch's cost
    store = TransferStore(store_dir)
    lengths = [len(t) for t in store.iter_tokens()]
    batches = bucket_batches(lengths, batch_size, shuffle=True, seed=seed)
    C = len(store.labels)

    def one_epoch(sentence) -> float:
        t = time.perf_counter()
        for b in batches:
            padded_rows(sentence, b, max(lengths[i] for i in b), C)  # (B, L, C)
        return time.perf_counter() - t

    src = store._src
    peak = [0]
    read = src.sentence

    def tracked(i):
        x = read(i)
        peak[0] = max(peak[0], getattr(src, "_cache_bytes", 0))
        return x

    parquet_s = one_epoch(tracked)
    held = [np.array(store.sentence(i)) for i in range(len(store))]  # the whole store decoded
    memory_s = one_epoch(held.__getitem__)
    return {"reads_parquet_s": parquet_s, "reads_memory_s": memory_s, "reads_cache_peak_mb": peak[0] / 2**20,
            "reads_memory_mb": sum(h.nbytes for h in held) / 2**20}


def synthetic_reads(n: int, out: Path, num_labels: int = 21, words: int = 40, cache_mb: float = 16.0,
                    seed: int = 0) -> Dict[str, float]:
    """Random access where the store outgrows the reader's cache: a store of ``n`` sentences of
    random length (mean ``words``) and random logits written without a teacher, then one student
    epoch of logit reads (``epoch_reads``' batches) with the default cache and with ``cache_mb``."""
    from nlp_distill.data import shards
    from nlp_distill.distill.transfer_store import TransferStore, finish_folder

    folder = out / f"synthetic_{n}"
    rng = np.random.default_rng(seed)
    labels = [f"L{c}" for c in range(num_labels)]
    if not (folder / shards.STORE_FILE).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        S = 2048
        for k, a in enumerate(range(0, n, S)):
            m = min(S, n - a)
            lengths = rng.integers(1, 2 * words, m)
            toks = [["w"] * int(x) for x in lengths]
            logits = rng.normal(size=(int(lengths.sum()), num_labels)).astype(np.float16)
            shards.write_shard(folder, k, a, toks, logits, lengths, np.zeros(m, np.float32), "synthetic", labels)
        finish_folder(folder, "synthetic", labels, S, -(-n // S), n)
    row = {"synthetic_sentences": n, "synthetic_store_mb": folder_size(folder) / 2**20}
    for name, mb in (("default_cache", None), (f"cache_{cache_mb:g}mb", cache_mb)):
        from nlp_distill.data.batching import bucket_batches
        from nlp_distill.distill.teacher_cache import padded_rows

        TransferStore(folder).sentence(0)
        store = TransferStore(folder) if mb is None else TransferStore(folder, cache_mb=mb)
        lengths = [len(t) for t in store.iter_tokens()]
        t = time.perf_counter()
        for b in bucket_batches(lengths, 32, shuffle=True, seed=seed):
            padded_rows(store.sentence, b, max(lengths[i] for i in b), num_labels)  # (B, L, C)
        row[f"synthetic_reads_{name}_s"] = time.perf_counter() - t
    return row


def run(teacher: str, data_dir: str, sizes: List[int], out: Path, unlabeled: Optional[str], device: str,
        student_epochs: int, procs: int = 1, engines: List[str] = ("local",), workers: int = 0) -> Dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    if procs > 1:  # share the cores out: torch's and the tokenizer's thread pools in every process
        threads = str(max(1, (os.cpu_count() or 1) // procs))
        os.environ.update(OMP_NUM_THREADS=threads, RAYON_NUM_THREADS=threads)
    src = Path(unlabeled or Path(data_dir) / "unlabeled.txt")
    rows: Dict[str, dict] = {}
    for n in sizes:
        text = out / f"input_{n}.txt"
        make_input(src, n, text)
        rows[str(n)] = {}
        for engine in engines:
            tag = "" if engine == engines[0] else f"_{engine}"  # the first engine's figures keep the plain names
            store = out / f"store_{n}{tag}"
            extra = ["--engine", "ray", "--workers", str(workers)] if engine == "ray" else []
            lab = run_sampled(_nlp_train("label_unlabeled", "--teacher_model_path", teacher, "--unlabeled_filename",
                                         str(text), "--output_dir", str(store), "--device", device, *extra,
                                         procs=procs if engine == "local" else 1),
                              out / f"label_{n}{tag}.log")
            rows[str(n)].update({f"label_sent_per_s{tag}": n / lab["seconds"], f"label_seconds{tag}": lab["seconds"],
                                 f"label_peak_rss_mb{tag}": lab["peak_rss_mb"],
                                 f"label_peak_rss_one_process_mb{tag}": lab["peak_rss_one_process_mb"],
                                 f"store_mb{tag}": folder_size(store) / 2**20})
        store = out / f"store_{n}"
        rows[str(n)].update(epoch_reads(store))
        if student_epochs:
            stu = run_sampled(_nlp_train("tagger_kd_pseudo", "--data_dir", data_dir, "--output_dir",
                                         str(out / f"student_{n}"), "--overwrite", "--use_crf", "--teacher_model_path",
                                         teacher, "--transfer_store", str(store), "--augment", "0", "--epochs",
                                         str(student_epochs), "--device", device, "--no_show_progress"),
                              out / f"student_{n}.log")
            rows[str(n)].update(student_seconds=stu["seconds"], student_peak_rss_mb=stu["peak_rss_mb"])
        print(json.dumps({n: rows[str(n)]}), flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    ap = parser("scale", __doc__)
    ap.add_argument("--teacher", required=True, help="teacher folder (nlp-train transformer_token)")
    ap.add_argument("--data_dir", required=True, help="labeled data for the student (train/dev/test)")
    ap.add_argument("--unlabeled", default=None, help="text to repeat (default DATA_DIR/unlabeled.txt)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--student_epochs", type=int, default=1, help="student epochs from each store (0: labeling only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--procs", type=int, default=1, help="label under torchrun with this many processes (they share the device)")
    ap.add_argument("--engines", default="local", help="comma list of label_unlabeled engines: local, ray")
    ap.add_argument("--workers", type=int, default=0, help="Ray teacher actors (0: one per CPU / GPU)")
    ap.add_argument("--synthetic_reads", type=int, default=0,
                    help="also time one epoch of random logit reads from a synthetic store of this many sentences "
                         "(no teacher), with the default cache and a 16 MB one")
    ap.add_argument("--output_dir", default="results_scale")
    a = ap.parse_args(argv)
    out = Path(a.output_dir)
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    rows = run(a.teacher, a.data_dir, [int(s) for s in a.sizes.split(",")], out, a.unlabeled, a.device,
               a.student_epochs, a.procs, engines, a.workers)
    print(f"{'sentences':>10}{'engine':>8}{'label sent/s':>14}{'label peak MB':>15}{'store MB':>10}")
    for n, r in rows.items():
        for e in engines:
            tag = "" if e == engines[0] else f"_{e}"
            print(f"{n:>10}{e:>8}{r['label_sent_per_s' + tag]:>14.0f}{r['label_peak_rss_mb' + tag]:>15.0f}"
                  f"{r['store_mb' + tag]:>10.1f}")
    print(f"{'sentences':>10}{'student s':>11}{'student peak MB':>17}{'reads parquet s':>17}{'reads memory s':>16}"
          f"{'cache MB':>10}{'in-memory MB':>14}")
    for n, r in rows.items():
        print(f"{n:>10}{r.get('student_seconds', float('nan')):>11.1f}{r.get('student_peak_rss_mb', float('nan')):>17.0f}"
              f"{r['reads_parquet_s']:>17.2f}{r['reads_memory_s']:>16.2f}{r['reads_cache_peak_mb']:>10.1f}"
              f"{r['reads_memory_mb']:>14.1f}")
    synthetic = synthetic_reads(a.synthetic_reads, out) if a.synthetic_reads else None
    if synthetic:
        print(json.dumps(synthetic))
    save_json(str(out / "scale.json"), {"sizes": rows, "teacher": a.teacher, "device": a.device, "procs": a.procs,
                                        "engines": engines, "workers": a.workers, "synthetic_reads": synthetic})
    return rows


if __name__ == "__main__":
    main()
