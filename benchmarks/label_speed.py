"""Teacher labeling throughput: ``nlp-train label_unlabeled``'s path (a transfer store written in
chunks) and the raw word-logit pass, against HF ``pipeline("token-classification")`` on the same
sentences, device and model; fp32 and bf16 where the device is a GPU.

The teacher is any saved classifier, or a plain encoder given ``--labels`` (a new random head:
throughput does not depend on the head's weights). The pipeline reads each sentence as its words
joined by spaces and returns per-sub-token scores (its default, the cheapest of its modes).

Run: ``python benchmarks/label_speed.py --teacher runs/teacher --data_file data/wnut16/unlabeled.txt
--n 5000 --device cpu --threads 2 --json label_speed.json``
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlp_distill.data.labels import LabelVocab  # noqa: E402
from nlp_distill.data.transfer_store import TransferStore  # noqa: E402
from nlp_distill.data.unlabeled import iter_unlabeled  # noqa: E402
from nlp_distill.models.transformer import TransformerTokenClassifier  # noqa: E402


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

    model = clf.model.to(dtype)
    pipe = pipeline("token-classification", model=model, tokenizer=clf.tokenizer, device=device,
                    batch_size=batch_size)
    pipe(texts[:batch_size])  # warm-up
    try:
        return timed(lambda: list(pipe(texts, batch_size=batch_size)), device)
    finally:
        clf.model.to(torch.float32)


def run(teacher: str, data_file: str, n: int, device: str, batch_size: int, labels_file: str,
        json_path: Optional[str] = None) -> Dict[str, object]:
    """Time every path; a failing path is recorded with its error (the others still run), and the
    JSON is rewritten after each row so a run stopped early keeps what it measured."""
    dev = torch.device(device)
    sents = [s.tokens for s in islice(iter_unlabeled(data_file), n)]
    words = sum(len(s) for s in sents)
    texts = [" ".join(s) for s in sents]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    res: Dict[str, object] = {"device": name, "sentences": len(sents), "words": words, "batch_size": batch_size,
                              "rows": {}}
    rows: Dict[str, dict] = res["rows"]  # type: ignore[assignment]

    def row(key: str, fn: Callable[[], float]) -> None:
        try:
            secs = fn()
            rows[key] = {"seconds": secs, "sent_per_s": len(sents) / secs, "words_per_s": words / secs}
        except Exception as e:  # noqa: BLE001 - a benchmark row reports its failure and the rest go on
            rows[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        base = rows.get("HF pipeline fp32", {}).get("seconds")
        for r in rows.values():
            if base and "seconds" in r:
                r["x_pipeline_fp32"] = base / r["seconds"]
        if json_path:
            Path(json_path).write_text(json.dumps(res, indent=2))

    for prec in (["fp32", "bf16"] if dev.type == "cuda" else ["fp32"]):
        clf = load_teacher(teacher, labels_file, dev, prec)
        clf.word_logits(sents[:batch_size], batch_size)  # warm-up (kernels, allocator)
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        row(f"HF pipeline {prec}", lambda: hf_pipeline_seconds(clf, texts, dev, batch_size, dtype))
        row(f"word_logits {prec}", lambda: timed(lambda: clf.word_logits(sents, batch_size), dev))
        with tempfile.TemporaryDirectory() as tmp:
            row(f"label_unlabeled store {prec}", lambda: timed(
                lambda: TransferStore.label(clf, sents, Path(tmp) / "store", 2048, batch_size, show_progress=False), dev))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="saved teacher (run folder or model folder) or plain encoder")
    ap.add_argument("--labels", default="data/wnut16/labels.txt", help="labels for a plain encoder's new head")
    ap.add_argument("--data_file", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run(a.teacher, a.data_file, a.n, a.device, a.batch_size, a.labels, a.json)
    print(f"{res['sentences']} sentences, {res['words']} words, batch {res['batch_size']}, {res['device']}")
    print(f"{'path':<30}{'sent/s':>10}{'words/s':>11}{'x HF fp32':>11}")
    for k, r in res["rows"].items():
        if "error" in r:
            print(f"{k:<30}  failed: {r['error']}")
        else:
            print(f"{k:<30}{r['sent_per_s']:>10.0f}{r['words_per_s']:>11.0f}{r.get('x_pipeline_fp32', float('nan')):>11.2f}")


if __name__ == "__main__":
    main()
