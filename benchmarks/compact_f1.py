"""What ``nlp-export compact`` costs: F1 on dev and test, tag agreement and size on disk of each
student against its compact copies (one per ``--pq_head`` value), predicted the same way.

Run: ``python -m benchmarks.compact_f1 --data_dir data/wnut16 --model h128_s1=runs/glove/kd_gv_h128_s1
--model ... --pq_head 0 --pq_head 8000 --json compact.json``
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.common import agreement, model_specs, models_parser, parse_with_threads, save_json
from nlp_distill.config import CompactConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.export.compact import compact_tagger
from nlp_distill.metrics import tagging_metrics
from nlp_distill.models.loader import load_model


def evaluate(model_dir: str, data_dir: Path, heads: Sequence[int], work: Path) -> Dict[str, float]:
    """Row of one student: ``{split}_f1`` for the original, ``{split}_f1_h{N}`` / ``{split}_agree_h{N}``
    / ``mb_h{N}`` for each compact copy, ``mb`` for the original."""
    models = {"": load_model(model_dir)}
    row: Dict[str, float] = {}
    for head in heads:
        r = compact_tagger(model_dir, work / f"h{head}", CompactConfig(pq_head=head))
        models[f"_h{head}"] = load_model(r["folder"])
        row["mb"], row[f"mb_h{head}"] = r["bytes_before"] / 1e6, r["bytes_after"] / 1e6
    for split in ("dev", "test"):
        data = read_conll(data_dir / f"{split}.txt")
        preds = {k: m.predict([s.tokens for s in data], 64) for k, m in models.items()}
        for k, p in preds.items():
            row[f"{split}_f1{k}"] = tagging_metrics([s.tags for s in data], p)["f1"]
            if k:
                row[f"{split}_agree{k}"] = agreement(preds[""], p)
    return row


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    ap = models_parser("compact_f1", __doc__, "NAME=STUDENT_DIR (repeat)")
    ap.add_argument("--data_dir", required=True, help="folder with dev.txt and test.txt (CoNLL)")
    ap.add_argument("--pq_head", action="append", type=int, default=None, help=f"compact copies to compare (repeat; default {CompactConfig().pq_head})")
    a = parse_with_threads(ap, argv)
    heads = a.pq_head or [CompactConfig().pq_head]
    res = {}
    for name, folder in model_specs(a.model).items():
        with tempfile.TemporaryDirectory() as tmp:
            res[name] = evaluate(folder, Path(a.data_dir), heads, Path(tmp))
        r = res[name]
        print(f"{name:<20} {r['mb']:.2f} MB  dev {r['dev_f1']:.4f} test {r['test_f1']:.4f}  " + "  ".join(
            f"h{h}: {r[f'mb_h{h}']:.2f} MB dev {r[f'dev_f1_h{h}']:.4f} ({100 * r[f'dev_agree_h{h}']:.2f}% tags) "
            f"test {r[f'test_f1_h{h}']:.4f} ({100 * r[f'test_agree_h{h}']:.2f}%)" for h in heads), flush=True)
    save_json(a.json, {"pq_head": heads, "models": res})
    return res


if __name__ == "__main__":
    main()
