"""Side-by-side epoch times: plain student vs KD with cached teacher logits vs KD running the
teacher every step (the NLP Architect way), same student, same batches, one process.

    python -m benchmarks.kd_speed --data_dir data/wnut16 --teacher runs/teacher --json kd_speed.json
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from benchmarks.common import add_json, add_threads, parser, save_json
from nlp_distill.config import StudentDataConfig, TaggerConfig
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.teacher_cache import TeacherLogitsCache
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.distill.teachers import load_teacher
from nlp_distill.models.neural_tagger import NeuralTagger

TAGGER, DATA = TaggerConfig(), StudentDataConfig()


def run(data_dir, teacher_dir, model_type: str = TAGGER.model_type, batch_size: int = DATA.batch_size,
        max_sentences: Optional[int] = None, threads: int = 2, seed: int = 0,
        tagger_overrides: Optional[dict] = None) -> Dict[str, float]:
    """Time one epoch of each mode. Returns seconds per mode, the cache build time and ratios."""
    torch.set_num_threads(threads)
    d = load_data_dir(data_dir)
    train = d.train[:max_sentences] if max_sentences else d.train
    teacher = load_teacher(str(teacher_dir))
    cfg = TaggerConfig(model_type=model_type, **(tagger_overrides or {}))
    tokens = [s.tokens for s in train]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cache = TeacherLogitsCache.build(teacher, tokens, Path(tmp) / "cache", show_progress=False)
        cache_build = time.perf_counter() - t
        t = time.perf_counter()
        TeacherLogitsCache.build(teacher, tokens, Path(tmp) / "cache", show_progress=False)
        cache_hit = time.perf_counter() - t
        results: Dict[str, float] = {}
        for mode in ("plain", "kd_cached", "kd_teacher_every_step"):
            torch.manual_seed(seed)
            student = NeuralTagger.build(cfg, train, d.labels)
            enc = student.encode(train)
            dist = None
            if mode != "plain":
                dist = TeacherStudentDistill(teacher)
                dist.attach(d.labels, tokens, cache if mode == "kd_cached" else None)
            opt = torch.optim.Adam(student.parameters(), lr=1e-3)
            student.train()
            t = time.perf_counter()
            for idx in bucket_batches(enc.lengths, batch_size, shuffle=True, seed=seed):
                b = enc.collate(idx)
                loss, n = dist.loss(student, b) if dist else student.gold_loss(student(b), b)
                (loss / n).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            results[f"{mode}_epoch_s"] = time.perf_counter() - t
    results["cache_build_s"] = cache_build
    results["cache_hit_s"] = cache_hit
    results["ratio_kd_cached_vs_plain"] = results["kd_cached_epoch_s"] / results["plain_epoch_s"]
    results["ratio_kd_every_step_vs_plain"] = results["kd_teacher_every_step_epoch_s"] / results["plain_epoch_s"]
    results["ratio_every_step_vs_cached"] = results["kd_teacher_every_step_epoch_s"] / results["kd_cached_epoch_s"]
    results.update(sentences=len(train), model_type=model_type, batch_size=batch_size, threads=threads)
    return results


def print_table(r: Dict[str, float]) -> None:
    print(f"KD epoch cost, {r['model_type']}, {r['sentences']} sentences, batch {r['batch_size']}, {r['threads']} threads")
    print(f"{'mode':<26}{'epoch s':>10}{'x plain':>10}")
    for mode in ("plain", "kd_cached", "kd_teacher_every_step"):
        s = r[f"{mode}_epoch_s"]
        print(f"{mode:<26}{s:>10.2f}{s / r['plain_epoch_s']:>10.2f}")
    print(f"one-off teacher pass to build the cache: {r['cache_build_s']:.2f}s (reopen on hit: {r['cache_hit_s']:.2f}s)")


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    ap = parser("kd_speed", __doc__)
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--teacher", required=True, help="teacher folder or run folder (nlp-train transformer_token)")
    model_type = TaggerConfig.__dataclass_fields__["model_type"]
    ap.add_argument("--model_type", default=TAGGER.model_type, choices=model_type.metadata["choices"])
    ap.add_argument("--batch_size", type=int, default=DATA.batch_size, help="sentences per training batch")
    ap.add_argument("--max_sentences", type=int, default=None)
    add_threads(ap)
    add_json(ap)
    a = ap.parse_args(argv)
    r = run(a.data_dir, a.teacher, a.model_type, a.batch_size, a.max_sentences, a.threads)
    print_table(r)
    save_json(a.json, r)
    return r


if __name__ == "__main__":
    main()
