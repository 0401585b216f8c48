"""Where a student's ``predict`` time goes, stage by stage on the same sentences, for two paths:

- per occurrence (how ``predict`` featurised before): ids, shapes and char rows for every token
  (``encode``), collation, the whole network, decoding (Viterbi or argmax) batch by batch;
- per distinct token (``predict`` now): the token table, the embedder once per distinct token
  (``token_vectors``), collation of row ids, encoder + projection (at the model's ``precision``,
  bf16 on an AMX CPU by default), decoding all sentences at once (``decode_rows``);

with ``predict`` end to end beside them.

Run: ``python -m benchmarks.predict_profile --data_file speech.txt --model base=runs/kd
--model tiny=runs/kd_tiny --threads 2 --json profile.json``
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional

import torch

from benchmarks.common import model_specs, models_parser, parse_with_threads, read_sentences, save_json
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.token_table import TokenTable
from nlp_distill.models.loader import load_model
from nlp_distill.models.neural_tagger import NeuralTagger


def _occurrence_path(model: NeuralTagger, sents: List[List[str]], batch_size: int, keep) -> None:
    t = time.perf_counter()
    data = model.encode([Sentence(list(s)) for s in sents])
    keep("occ_featurise", time.perf_counter() - t)
    t = time.perf_counter()
    batches = [data.collate(i) for i in bucket_batches(data.lengths, batch_size, shuffle=False)]
    keep("occ_collate", time.perf_counter() - t)
    t = time.perf_counter()
    emissions = [model(b) for b in batches]
    keep("occ_network", time.perf_counter() - t)
    t = time.perf_counter()
    for e, b in zip(emissions, batches):
        model.decode(e, b.mask)  # one Viterbi per batch
    keep("occ_decode", time.perf_counter() - t)


def _table_path(model: NeuralTagger, sents: List[List[str]], batch_size: int, keep) -> None:
    t = time.perf_counter()
    table = TokenTable(sents)
    keep("table", time.perf_counter() - t)
    t = time.perf_counter()
    vectors = model.token_vectors(table.tokens)
    keep("vectors", time.perf_counter() - t)
    t = time.perf_counter()
    batches = [table.collate(i) for i in bucket_batches(table.lengths, batch_size, shuffle=False)]
    keep("collate", time.perf_counter() - t)
    t = time.perf_counter()
    rows = []
    with model.autocast():  # as predict runs it
        for ids, mask in batches:
            rows.append(model.proj(model.encoder(vectors[ids], mask)).float()[mask])
    keep("encoder", time.perf_counter() - t)
    t = time.perf_counter()
    model.decode_rows(torch.cat(rows), [n for _, mask in batches for n in mask.sum(1).tolist()])  # one for all
    keep("decode", time.perf_counter() - t)


def profile(model: NeuralTagger, sents: List[List[str]], batch_size: int = 64, repeats: int = 3) -> Dict[str, float]:
    """Best-of-``repeats`` seconds per stage and for ``predict``; sentences/s end to end."""
    model.eval()
    best: Dict[str, float] = {}

    def keep(name: str, secs: float) -> None:
        best[name] = min(best.get(name, float("inf")), secs)

    for _ in range(repeats):
        with torch.no_grad():
            _occurrence_path(model, sents, batch_size, keep)
            _table_path(model, sents, batch_size, keep)
        t = time.perf_counter()
        model.predict(sents, batch_size)
        keep("predict", time.perf_counter() - t)
    best["occ_total"] = best["occ_featurise"] + best["occ_collate"] + best["occ_network"] + best["occ_decode"]
    best["sent_per_s"] = len(sents) / best["predict"]
    return best


COLUMNS = [("occ_featurise", "featurise"), ("occ_collate", "collate"), ("occ_network", "network"),
           ("occ_decode", "decode"), ("occ_total", "total"), ("table", "table"), ("vectors", "vectors"), ("collate", "collate"),
           ("encoder", "encoder"), ("decode", "decode"), ("predict", "predict")]


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    ap = models_parser("predict_profile", __doc__, "NAME=STUDENT_DIR (repeat)")
    ap.add_argument("--data_file", required=True, help="sentences (raw text, one tokenized sentence per line, or CoNLL)")
    a = parse_with_threads(ap, argv)
    sents = read_sentences(a.data_file)
    rows = {}
    print(f"{'':<16}{'per occurrence, decoded per batch (s)':^50}{'per distinct token, decoded per block (s)':^60}")
    print(f"{'model':<16}" + "".join(f"{c:>10}" for _, c in COLUMNS) + f"{'sent/s':>8}")
    for name, folder in model_specs(a.model).items():
        r = rows[name] = profile(load_model(folder, expect=NeuralTagger.__name__), sents)
        print(f"{name:<16}" + "".join(f"{r[k]:>10.3f}" for k, _ in COLUMNS) + f"{r['sent_per_s']:>8.0f}")
    save_json(a.json, {"sentences": len(sents), "threads": a.threads, "models": rows})
    return rows


if __name__ == "__main__":
    main()
