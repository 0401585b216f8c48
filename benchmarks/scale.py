"""Scale: label N unlabeled sentences into a transfer store and train a student from it, with
peak resident memory sampled over time (the process and its children, from /proc).

Inputs of N sentences are the unlabeled file repeated; copy k > 0 perturbs every sentence
(tokens of copy k are rotated by k positions) so no two copies are the same text. For each N:
``nlp-train label_unlabeled`` (sentences/s, peak RSS, store size); then one student epoch from
each store (``tagger_kd_pseudo --transfer_store``, peak RSS), so flat memory shows as RSS that
does not grow with N.

Run: ``python -m benchmarks.scale --teacher runs/teacher --data_dir data/wnut16 --sizes 10000,100000
--output_dir results_scale``
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

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


def run(teacher: str, data_dir: str, sizes: List[int], out: Path, unlabeled: Optional[str], device: str,
        student_epochs: int, procs: int = 1) -> Dict[str, dict]:
    out.mkdir(parents=True, exist_ok=True)
    if procs > 1:  # share the cores out: torch's and the tokenizer's thread pools in every process
        threads = str(max(1, (os.cpu_count() or 1) // procs))
        os.environ.update(OMP_NUM_THREADS=threads, RAYON_NUM_THREADS=threads)
    src = Path(unlabeled or Path(data_dir) / "unlabeled.txt")
    rows: Dict[str, dict] = {}
    for n in sizes:
        text = out / f"input_{n}.txt"
        make_input(src, n, text)
        store = out / f"store_{n}"
        lab = run_sampled(_nlp_train("label_unlabeled", "--teacher_model_path", teacher, "--unlabeled_filename",
                                     str(text), "--output_dir", str(store), "--device", device, procs=procs),
                          out / f"label_{n}.log")
        rows[str(n)] = {"label_sent_per_s": n / lab["seconds"], "label_seconds": lab["seconds"],
                        "label_peak_rss_mb": lab["peak_rss_mb"],
                        "label_peak_rss_one_process_mb": lab["peak_rss_one_process_mb"], "store_mb": folder_size(store) / 2**20}
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
    ap.add_argument("--output_dir", default="results_scale")
    a = ap.parse_args(argv)
    out = Path(a.output_dir)
    rows = run(a.teacher, a.data_dir, [int(s) for s in a.sizes.split(",")], out, a.unlabeled, a.device,
               a.student_epochs, a.procs)
    print(f"{'sentences':>10}{'label sent/s':>14}{'label peak MB':>15}{'store MB':>10}{'student peak MB':>17}")
    for n, r in rows.items():
        print(f"{n:>10}{r['label_sent_per_s']:>14.0f}{r['label_peak_rss_mb']:>15.0f}{r['store_mb']:>10.1f}"
              f"{r.get('student_peak_rss_mb', float('nan')):>17.0f}")
    save_json(str(out / "scale.json"), {"sizes": rows, "teacher": a.teacher, "device": a.device, "procs": a.procs})
    return rows


if __name__ == "__main__":
    main()
