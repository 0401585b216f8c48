"""Resident memory of teacher labeling, shard by shard (a chunk: one shard), in one process: ``TransferStore.label``
over N sentences (the unlabeled file repeated, copy k rotated by k tokens, as in
``benchmarks.scale``), with RSS and peak RSS (``benchmarks.common.rss_mb`` / ``peak_rss_mb``)
printed after every ``--every`` chunks and the count of live Python objects (flat when what
grows is native memory). Use it to see whether labeling memory grows with the number of
sentences, and when.

Run: ``python -m benchmarks.label_memory --teacher runs/teacher --data_file data/wnut16/unlabeled.txt
--n 100000 --threads 2 --json label_memory.json``
"""
from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch

from benchmarks.common import add_json, add_threads, parser, peak_rss_mb, rotated, rss_mb, save_json
from nlp_distill.config import LabelConfig
from nlp_distill.distill import transfer_store as ts
from nlp_distill.distill.teachers import load_teacher

LABEL = LabelConfig()


def main(argv: Optional[List[str]] = None) -> List[dict]:
    ap = parser("label_memory", __doc__)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data_file", required=True, help="raw text, one sentence per line")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--chunk", type=int, default=LABEL.chunk_sentences, help="sentences per store chunk")
    ap.add_argument("--every", type=int, default=2, help="print after every this many chunks")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (RSS is host memory either way)")
    ap.add_argument("--batch_size", type=int, default=LABEL.teacher_batch_size, help="windows per teacher batch")
    add_threads(ap, default=None)
    add_json(ap)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    clf = load_teacher(a.teacher, a.device).eval()
    lines = [l.split() for l in open(a.data_file, encoding="utf-8") if l.strip()]
    rows, write, t0 = [], ts.shards.write_shard, time.perf_counter()

    def write_and_measure(*args, **kw):  # the store's own shard writer, measured after each call
        path = write(*args, **kw)
        rows.append({"chunk": len(rows) + 1, "sentences": min((len(rows) + 1) * a.chunk, a.n), "rss_mb": rss_mb(),
                     "peak_rss_mb": peak_rss_mb(),
                     "python_objects": len(gc.get_objects()), "seconds": time.perf_counter() - t0})
        if len(rows) % a.every == 0:
            print(json.dumps(rows[-1]), flush=True)
        return path

    ts.shards.write_shard = write_and_measure
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ts.TransferStore.label(clf, rotated(lines, a.n), Path(tmp) / "store", a.chunk, a.batch_size,
                                   show_progress=False)
    finally:
        ts.shards.write_shard = write
    first, last = rows[0], rows[-1]
    print(f"peak RSS {first['peak_rss_mb']:.0f} MB after chunk 1 -> {last['peak_rss_mb']:.0f} MB after chunk "
          f"{last['chunk']} ({100 * (last['peak_rss_mb'] / first['peak_rss_mb'] - 1):+.1f}%), "
          f"{a.n / last['seconds']:.0f} sent/s")
    save_json(a.json, {"teacher": a.teacher, "n": a.n, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
