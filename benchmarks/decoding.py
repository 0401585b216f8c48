"""What scheme-constrained decoding is worth to a softmax tagger (a teacher or a transformer
student): entity F1 on dev and test with plain argmax per word against the most probable
scheme-valid sequence (``best_valid_paths``, what ``predict`` returns), and how many ``I-X`` tags
argmax puts after ``O`` or after another type.

Run: ``python -m benchmarks.decoding --data_dir data/wnut16 --model teacher=runs/teacher --json decoding.json``
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.common import markdown_table, model_specs, models_parser, parse_with_threads, save_json
from nlp_distill.data.conll import read_conll
from nlp_distill.data.labels import is_valid
from nlp_distill.metrics import tagging_metrics
from nlp_distill.models.loader import load_model
from nlp_distill.modules.viterbi import best_valid_paths


def orphan_inside_tags(tags: Sequence[Sequence[str]]) -> int:
    """``I-X`` tags whose previous tag is ``O``, the sentence start, or another type."""
    return sum(1 for s in tags for prev, cur in zip(["O", *s], s)
               if cur.startswith("I-") and prev[2:] != cur[2:])


def evaluate(model_dir: str, data_dir: Path) -> Dict[str, float]:
    """``{split}_f1_argmax``, ``{split}_f1_valid``, ``{split}_orphan_I``, ``{split}_invalid_sentences``."""
    model = load_model(model_dir)
    row: Dict[str, float] = {}
    for split in ("dev", "test"):
        data = read_conll(data_dir / f"{split}.txt")
        logits = model.word_logits([s.tokens for s in data])
        argmax = [model.labels.decode(l.argmax(-1).tolist()) for l in logits]
        valid = [model.labels.decode(p) for p in best_valid_paths(logits, model.labels)]
        gold = [s.tags for s in data]
        row[f"{split}_f1_argmax"] = tagging_metrics(gold, argmax)["f1"]
        row[f"{split}_f1_valid"] = tagging_metrics(gold, valid)["f1"]
        row[f"{split}_orphan_I"] = orphan_inside_tags(argmax)
        row[f"{split}_invalid_sentences"] = sum(not is_valid(t, model.labels.scheme) for t in argmax)
    return row


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    ap = models_parser("decoding", __doc__, "NAME=MODEL_DIR of a softmax tagger (repeat)")
    ap.add_argument("--data_dir", required=True, help="folder with dev.txt and test.txt (CoNLL)")
    a = parse_with_threads(ap, argv)
    res = {name: evaluate(folder, Path(a.data_dir)) for name, folder in model_specs(a.model).items()}
    rows = [[name, *(f"{r[f'{s}_f1_argmax']:.4f} -> {r[f'{s}_f1_valid']:.4f}" for s in ("dev", "test")),
             *(f"{r[f'{s}_orphan_I']} ({r[f'{s}_invalid_sentences']} sentences)" for s in ("dev", "test"))]
            for name, r in res.items()]
    print(markdown_table(["model", "dev F1 argmax -> valid", "test F1 argmax -> valid", "dev orphan I-",
                          "test orphan I-"], rows))
    save_json(a.json, {"models": res})
    return res


if __name__ == "__main__":
    main()
