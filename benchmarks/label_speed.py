"""Teacher labeling throughput: ``nlp-train label_unlabeled``'s path (a transfer store written in
chunks) and the raw word-logit pass, against HF ``pipeline("token-classification")`` on the same
sentences, device and model; fp32 and bf16 where the device multiplies bf16 in hardware (a GPU, an
AMX CPU).

The teacher is any saved classifier, or a plain encoder given ``--labels`` (a new random head:
throughput does not depend on the head's weights). The pipeline reads each sentence as its words
joined by spaces and returns per-sub-token scores (its default, the cheapest of its modes).

``--procs 4,8`` adds rows for the store path in K processes sharing the device (what ``torchrun
--nproc_per_node K nlp-train label_unlabeled`` runs: rank r labels chunks k with k % K == r), timed
from a barrier after every process has loaded and warmed its teacher to the end of the store.

Run: ``python -m benchmarks.label_speed --teacher runs/teacher --data_file data/wnut16/unlabeled.txt
--n 5000 --device cpu --threads 2 --batch_sizes 64,256 --repeat 2 --json label_speed.json``
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from benchmarks.common import add_json, add_threads, parser, save_json
from nlp_distill.config import LabelConfig
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.models.transformer import TransformerTokenClassifier
from nlp_distill.precision import bf16_native
from nlp_distill.utils import distributed as ddp
from procedures.common import pick_device

LABEL = LabelConfig()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (device work included)."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def load_teacher(path: str, labels_file: str, device: torch.device, precision: str) -> TransformerTokenClassifier:
    labels = None
    if not (Path(path) / "nlp_distill.json").is_file() and not (Path(path) / "model" / "nlp_distill.json").is_file():
        labels = LabelVocab([l.strip() for l in open(labels_file, encoding="utf-8") if l.strip()])
    clf = TransformerTokenClassifier.from_pretrained(path, labels=labels)
    clf.config = clf.config.replace(precision=precision)
    return clf.to(device).eval()


def hf_pipeline_seconds(clf: TransformerTokenClassifier, texts: List[str], device: torch.device, batch_size: int,
                        dtype: torch.dtype) -> float:
    from transformers import pipeline

    model = copy.deepcopy(clf.model).to(dtype)  # a copy: the teacher's own weights stay untouched fp32
    pipe = pipeline("token-classification", model=model, tokenizer=clf.tokenizer, device=device,
                    batch_size=batch_size)
    pipe(texts[:batch_size])  # warm-up
    return timed(lambda: list(pipe(texts, batch_size=batch_size)), device)


def _shared_worker(rank: int, procs: int, port: int, teacher: str, labels_file: str, sents: List[List[str]],
                   device: str, precision: str, batch_size: int, chunk: int, folder: str) -> None:
    """One of ``procs`` processes labeling ``sents`` into one store, as under torchrun; rank 0
    writes the seconds from the first barrier (teachers loaded and warm) to the store's end."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(procs), RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(procs))
    threads = max(1, (os.cpu_count() or 1) // procs)  # the cores shared out: torch's and the tokenizer's pools
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    dev = pick_device(device)  # under the torchrun variables: this rank's GPU, shared round-robin
    ddp.init_from_env(dev.type)
    clf = load_teacher(teacher, labels_file, dev, precision)
    clf.word_logits(sents[:64], 64)  # warm-up
    ddp.barrier()
    secs = timed(lambda: TransferStore.label(clf, sents, folder, chunk, batch_size, show_progress=False), dev)
    if rank == 0:
        Path(folder, "seconds.txt").write_text(str(secs))
    torch.distributed.destroy_process_group()


def shared_store_seconds(procs: int, teacher: str, labels_file: str, sents: List[List[str]], device: str,
                         precision: str, batch_size: int, chunk: int) -> float:
    """Seconds for ``procs`` processes (sharing the device) to label ``sents`` into one store."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "store")
        mp.spawn(_shared_worker, args=(procs, port, teacher, labels_file, sents, device, precision, batch_size,
                                       chunk, folder), nprocs=procs, join=True)
        return float(Path(folder, "seconds.txt").read_text())


def run(teacher: str, data_file: str, n: int, device: str, batch_sizes: List[int], labels_file: str,
        json_path: Optional[str] = None, precisions: Optional[List[str]] = None, repeat: int = 1,
        procs: Optional[List[int]] = None, chunk: int = LABEL.chunk_sentences) -> Dict[str, object]:
    """Time every path at every batch size (the best of ``repeat`` runs: the first pass over new
    shapes pays cuBLAS/allocator set-up on a GPU); a failing path is recorded with its error (the
    others still run), and the JSON is rewritten after each row so a run stopped early keeps what
    it measured."""
    dev = torch.device(device)
    sents = [s.tokens for s in islice(iter_unlabeled(data_file), n)]
    words = sum(len(s) for s in sents)
    texts = [" ".join(s) for s in sents]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    res: Dict[str, object] = {"device": name, "sentences": len(sents), "words": words, "batch_sizes": batch_sizes,
                              "repeat": repeat, "rows": {}}
    rows: Dict[str, dict] = res["rows"]  # type: ignore[assignment]
    base_key = f"HF pipeline fp32 b{batch_sizes[0]}"

    def row(key: str, fn: Callable[[], float]) -> None:
        try:
            secs = min(fn() for _ in range(repeat))
            rows[key] = {"seconds": secs, "sent_per_s": len(sents) / secs, "words_per_s": words / secs}
        except Exception as e:  # noqa: BLE001 - a benchmark row reports its failure and the rest go on
            rows[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        base = rows.get(base_key, {}).get("seconds")
        for r in rows.values():
            if base and "seconds" in r:
                r["x_pipeline_fp32"] = base / r["seconds"]
        save_json(json_path, res)

    for prec in precisions or (["fp32", "bf16"] if bf16_native(dev) else ["fp32"]):
        clf = load_teacher(teacher, labels_file, dev, prec)
        clf.word_logits(sents[:64], 64)  # warm-up (kernels, allocator)
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        for bs in batch_sizes:
            row(f"HF pipeline {prec} b{bs}", lambda: hf_pipeline_seconds(clf, texts, dev, bs, dtype))
            row(f"word_logits {prec} b{bs}", lambda: timed(lambda: clf.word_logits(sents, bs), dev))
            with tempfile.TemporaryDirectory() as tmp:
                row(f"label_unlabeled store {prec} b{bs}", lambda: timed(lambda: TransferStore.label(
                    clf, sents, Path(tmp) / f"store{time.perf_counter_ns()}", chunk, bs, show_progress=False), dev))
            for k in procs or []:
                row(f"store {prec} b{bs} x{k} procs", lambda: shared_store_seconds(
                    k, teacher, labels_file, sents, device, prec, bs, chunk))
    return res


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    ap = parser("label_speed", __doc__)
    ap.add_argument("--teacher", required=True, help="saved teacher (run folder or model folder) or plain encoder")
    ap.add_argument("--labels", default="data/wnut16/labels.txt", help="labels for a plain encoder's new head")
    ap.add_argument("--data_file", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch_sizes", default=str(LABEL.teacher_batch_size), help="comma list; our paths' batches hold batch_size x max_seq_length sub-tokens")
    ap.add_argument("--precisions", default=None, help="comma list of fp32,bf16 (default: both where bf16 is native, else fp32)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest is kept")
    add_threads(ap, default=None)
    ap.add_argument("--procs", default=None, help="comma list: also the store path in K processes sharing the device")
    ap.add_argument("--chunk", type=int, default=LABEL.chunk_sentences, help="sentences per store chunk (the unit shared out to processes)")
    add_json(ap)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run(a.teacher, a.data_file, a.n, a.device, [int(b) for b in a.batch_sizes.split(",")], a.labels, a.json,
              a.precisions.split(",") if a.precisions else None, a.repeat,
              [int(k) for k in a.procs.split(",")] if a.procs else None, a.chunk)
    print(f"{res['sentences']} sentences, {res['words']} words, best of {a.repeat}, {res['device']}")
    print(f"{'path':<34}{'sent/s':>10}{'words/s':>11}{'x HF fp32':>11}")
    for k, r in res["rows"].items():
        if "error" in r:
            print(f"{k:<34}  failed: {r['error']}")
        else:
            print(f"{k:<34}{r['sent_per_s']:>10.0f}{r['words_per_s']:>11.0f}{r.get('x_pipeline_fp32', float('nan')):>11.2f}")
    return res


if __name__ == "__main__":
    main()
