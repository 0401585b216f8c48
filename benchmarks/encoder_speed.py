"""CPU cost of fine-tuning a teacher encoder: seconds per training step (forward, backward,
AdamW step; length-bucketed batches as ``transformer_token`` draws them) and inference
sentences/s, at each thread count asked for. Use it to plan a CPU training run: an epoch of the
standard WNUT-16 split is ``ceil(1916 / batch_size)`` steps plus one dev pass.

Run: ``python -m benchmarks.encoder_speed --encoder mpnet --data_dir data/wnut16 --threads 1,2
--json speed.json`` (``--encoder``: a short name of the packaged encoders or an HF folder). The load
of the machine (``os.getloadavg``) is recorded beside each figure: other processes slow them down.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Dict, List, Optional

import torch

from benchmarks.common import add_json, parser, save_json
from nlp_distill.config import TeacherTrainerConfig, TransformerConfig
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.models.transformer import TransformerTokenClassifier

TEACHER = TransformerConfig()


def train_steps(clf: TransformerTokenClassifier, data, batch_size: int, steps: int) -> Dict[str, float]:
    """Seconds per training step over ``steps`` steps (after one warm-up step)."""
    train = data.train
    windows = clf.windows([s.tokens for s in train])
    tags = [data.labels.encode(s.tags) for s in train]
    batches = bucket_batches([len(w.input_ids) for w in windows], batch_size, shuffle=True, seed=0)[: steps + 1]
    opt = torch.optim.AdamW(clf.parameters(), lr=TeacherTrainerConfig().lr)
    clf.train()
    times, subtokens = [], []
    for i, idx in enumerate(batches):
        t = time.perf_counter()
        batch = clf.collate([windows[k] for k in idx], tags)
        loss, n = clf.loss(batch)
        (loss / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step pays for allocations
            times.append(time.perf_counter() - t)
            subtokens.append(int(batch["input_ids"].numel()))
    return {"step_s_mean": statistics.mean(times), "step_s_median": statistics.median(times),
            "padded_subtokens_per_batch": statistics.mean(subtokens), "steps_timed": len(times),
            "epoch_minutes_est": math.ceil(len(train) / batch_size) * statistics.mean(times) / 60}


def inference(clf: TransformerTokenClassifier, data, batch_size: int) -> Dict[str, float]:
    """Sentences/s tagging the dev split (word logits, length-sorted batches)."""
    sents = [s.tokens for s in data.dev]
    clf.word_logits(sents[:8], batch_size)  # warm-up
    t = time.perf_counter()
    clf.word_logits(sents, batch_size)
    dt = time.perf_counter() - t
    return {"sent_per_s": len(sents) / dt, "words_per_s": sum(map(len, sents)) / dt, "sentences": len(sents)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = parser("encoder_speed", __doc__)
    ap.add_argument("--encoder", default="mpnet", help="short name (minilm, mpnet) or HF encoder folder")
    ap.add_argument("--data_dir", default="data/wnut16")
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    ap.add_argument("--batch_size", type=int, default=TEACHER.batch_size, help="windows per training batch")
    ap.add_argument("--eval_batch_size", type=int, default=TEACHER.eval_batch_size, help="windows per inference batch")
    ap.add_argument("--steps", type=int, default=5)
    add_json(ap)
    a = ap.parse_args(argv)
    data = load_data_dir(a.data_dir)
    torch.manual_seed(0)
    clf = TransformerTokenClassifier.from_pretrained(a.encoder, data.labels, TransformerConfig(precision="fp32"))
    rows: Dict[str, Any] = {"encoder": a.encoder, "parameters_m": clf.num_parameters() / 1e6,
                            "batch_size": a.batch_size, "cpu": os.cpu_count(), "by_threads": {}}
    print(f"{'threads':>7} {'step s':>7} {'epoch min':>9} {'sent/s':>7} {'load before':>11}")
    for th in [int(x) for x in a.threads.split(",")]:
        torch.set_num_threads(th)
        load = os.getloadavg()[0]
        r = {"load_avg_1min_before": load, **train_steps(clf, data, a.batch_size, a.steps),
             **inference(clf, data, a.eval_batch_size)}
        rows["by_threads"][th] = r
        print(f"{th:>7} {r['step_s_mean']:>7.2f} {r['epoch_minutes_est']:>9.1f} {r['sent_per_s']:>7.1f} {load:>11.2f}")
    save_json(a.json, rows)
    return rows


if __name__ == "__main__":
    main()
