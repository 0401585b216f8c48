"""Our student as a spaCy component beside spaCy's own NER: a ``spacy.blank("en")`` pipeline with the
``nlp_distill_ner`` component against spaCy's trained ``efficiency`` NER pipeline, on the same
raw texts, at 1 thread.

Both pipelines read the same texts: the sentences of the test split (``--split``), tokens joined
by single spaces. Each tokenizes them its own way and is scored on character spans: an entity is
right when its start, end and type equal a gold entity's (micro precision / recall / F1; the gold
entities are read from the CoNLL tags). The F1 on gold tokens (this library's seqeval metric, as
``benchmarks.peers`` scores) is shown beside it. Speed: docs/s of ``nlp.pipe(texts,
batch_size=64)`` over 1000 SOTU sentences (``benchmarks.common.speech_sentences``), tokenization
included, best of ``--repeats``, both pipelines in this one process at ``--threads`` (torch and
the BLAS pools alike).

    python -m benchmarks.spacy_pipeline --data_dir data/wnut16 --student runs/kd/seed-1 \\
        --spacy_model runs/peers/full/spacy_efficiency_s1/model-best

Without ``--spacy_model`` spaCy's efficiency NER is first trained on the data dir's train split
the way ``benchmarks.peers`` trains it (its defaults, ``--max_epochs``, seed ``--seed``) into
``--output_dir``; a finished run there is reused. ``--student`` takes any saved model folder
(student, compact student, ONNX export). The JSON goes to ``--output_json``
(default docs/results/cpu_spacy_pipeline.json) and the table to stdout.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from benchmarks.common import REPO_ROOT, best_seconds, command_line, markdown_table, parser, speech_sentences
from benchmarks.peers import PACKAGED_GLOVE, import_spacy, machine, spacy_group, spacy_predictor
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import entity_spans
from nlp_distill.io import folder_size, resolve_model_dir, write_json
from nlp_distill.metrics import tagging_metrics

logger = logging.getLogger("spacy_pipeline")

DEFAULT_JSON = REPO_ROOT / "docs" / "results" / "cpu_spacy_pipeline.json"
CharSpan = Tuple[int, int, str]


def text_and_entities(sentence: Sentence) -> Tuple[str, List[CharSpan]]:
    """The sentence as text (tokens joined by single spaces) and its gold entities as character spans."""
    starts, pos = [], 0
    for tok in sentence.tokens:
        starts.append(pos)
        pos += len(tok) + 1
    ents = [(starts[a], starts[b - 1] + len(sentence.tokens[b - 1]), etype) for a, b, etype in entity_spans(sentence.tags)]
    return " ".join(sentence.tokens), ents


def span_scores(gold: Sequence[Set[CharSpan]], pred: Sequence[Set[CharSpan]]) -> Dict[str, float]:
    """Micro precision / recall / F1 of predicted character spans (start, end, type) against gold, per text."""
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    n_gold, n_pred = sum(map(len, gold)), sum(map(len, pred))
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "gold": n_gold, "predicted": n_pred}


def doc_entities(nlp, texts: Sequence[str], batch_size: int = 64) -> List[Set[CharSpan]]:
    """Each text's ``doc.ents`` as character spans."""
    return [{(e.start_char, e.end_char, e.label_) for e in doc.ents} for doc in nlp.pipe(texts, batch_size=batch_size)]


def our_pipeline(student: str, batch_size: int, threads: Optional[int] = None):
    """``spacy.blank("en")`` with the ``nlp_distill_ner`` component over ``student``, loaded
    (``threads``: the model's CPU threads, ONNX Runtime's included)."""
    spacy = import_spacy()
    nlp = spacy.blank("en")
    nlp.add_pipe("nlp_distill_ner", config={"model": str(student), "batch_size": batch_size, "threads": threads})
    nlp.initialize()  # loads the model (a wrong folder fails here)
    return nlp


def student_token_f1(student: str, sentences: Sequence[Sentence]) -> float:
    """The student's F1 on gold tokens: the library's pipeline on the token lists, seqeval."""
    from nlp_distill.pipelines import pipeline

    tags = [r["tags"] for r in pipeline(student).tag_tokens([list(s.tokens) for s in sentences])]
    return tagging_metrics([s.tags for s in sentences], tags)["f1"]


def train_spacy_efficiency(a: argparse.Namespace, data) -> str:
    """spaCy's efficiency NER trained as ``benchmarks.peers`` trains it (reused when finished); its ``model-best``."""
    args = argparse.Namespace(seeds=[a.seed], train_threads=a.threads, vectors=PACKAGED_GLOVE, max_epochs=a.max_epochs,
                              eval_frequency=None)
    out = Path(a.output_dir)
    return spacy_group("efficiency", args, data, out / "full", out)[0]["dir"]


def time_pipe(nlp, texts: Sequence[str], batch_size: int, repeats: int) -> Dict[str, float]:
    """docs/s and words/s of ``nlp.pipe(texts, batch_size)``, best of ``repeats`` after a warm-up."""
    for _ in nlp.pipe(texts[:16], batch_size=batch_size):
        pass
    best = best_seconds(lambda: sum(1 for _ in nlp.pipe(texts, batch_size=batch_size)), repeats)
    words = sum(len(t.split()) for t in texts)
    return {"docs_per_s": len(texts) / best, "words_per_s": words / best, "seconds": best}


def markdown(result: Dict) -> str:
    """The table and its notes."""
    rows = result["rows"]
    ref = rows["spacy_efficiency"]["speed"]["docs_per_s"]
    t = result["threads"]
    body = [[name, f"{r['text']['f1']:.3f}", f"{r['text']['precision']:.3f}", f"{r['text']['recall']:.3f}",
             f"{r['token_f1']:.3f}", f"{r['speed']['docs_per_s']:,.0f}", f"{r['speed']['words_per_s']:,.0f}",
             f"{r['speed']['docs_per_s'] / ref:.2f}", f"{r['size_mb']:.2f}"] for name, r in rows.items()]
    table = markdown_table(["pipeline", f"{result['split']} F1 (raw text)", "P", "R", "F1 on gold tokens",
                            f"docs/s ({t} thread)", "words/s", "x spaCy", "size MB"], body)
    s = result["speed_texts"]
    notes = [f"{result['n_texts']} {result['split']} sentences as text (tokens joined by spaces), scored on character spans "
             "(start, end, type); F1 on gold tokens: seqeval on the data's own tokens.",
             f"Speed: nlp.pipe(batch_size={result['batch_size']}) over {s['n']} sentences of {s['file']} "
             f"({s['mean_words']:.1f} words mean), tokenizer included, best of {result['repeats']}, one process.",
             f"Machine: {result['machine']}. Command: `{result['command']}`."]
    return table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = parser("spacy_pipeline", __doc__)
    ap.add_argument("--data_dir", required=True, help="train/dev/test.txt (CoNLL) [+ unlabeled.txt for timing]")
    ap.add_argument("--student", required=True, help="our model: a run folder or any saved model folder (student, compact, ONNX)")
    ap.add_argument("--spacy_model", default=None, help="a trained spaCy NER pipeline folder (default: train the efficiency config)")
    ap.add_argument("--output_dir", default="runs/spacy_pipeline", help="where spaCy is trained without --spacy_model")
    ap.add_argument("--output_json", default=str(DEFAULT_JSON), help="where the result JSON goes")
    ap.add_argument("--split", default="test", choices=["dev", "test"], help="the sentences scored")
    ap.add_argument("--seed", type=int, default=1, help="spaCy's training seed (without --spacy_model)")
    ap.add_argument("--max_epochs", type=int, default=60, help="spaCy training.max_epochs (without --spacy_model)")
    ap.add_argument("--speed_file", default=None, help="sentences to time (default: every 19th line of DATA_DIR/unlabeled.txt, 1000)")
    ap.add_argument("--batch_size", type=int, default=64, help="nlp.pipe batch size (docs per model call)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of both pipelines")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    return ap.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    a = parse_args(argv)
    spacy = import_spacy()
    import torch
    from threadpoolctl import threadpool_limits

    data = load_data_dir(a.data_dir)
    sentences = [s for s in getattr(data, a.split) if s.tokens]
    texts, gold = zip(*(text_and_entities(s) for s in sentences))
    gold_sets = [set(g) for g in gold]
    spacy_dir = a.spacy_model or train_spacy_efficiency(a, data)
    speed = [" ".join(s) for s in speech_sentences(a.data_dir, a.speed_file, a.output_dir)]

    rows: Dict[str, Dict] = {}
    torch.set_num_threads(a.threads)
    with threadpool_limits(a.threads):
        for name, nlp, size_dir in (("spacy_efficiency", spacy.load(spacy_dir), Path(spacy_dir)),
                                    ("nlp_distill_ner", our_pipeline(a.student, a.batch_size, a.threads), resolve_model_dir(a.student))):
            t = time.perf_counter()
            pred = doc_entities(nlp, texts, a.batch_size)
            rows[name] = {"dir": str(size_dir), "pipeline": nlp.pipe_names, "text": span_scores(gold_sets, pred),
                          "score_seconds": time.perf_counter() - t, "size_mb": folder_size(size_dir) / 1e6,
                          "speed": time_pipe(nlp, speed, a.batch_size, a.repeats)}
            logger.info("%s: %s", name, rows[name])
        rows["spacy_efficiency"]["token_f1"] = tagging_metrics(
            [s.tags for s in sentences], spacy_predictor(Path(spacy_dir))([list(s.tokens) for s in sentences], a.batch_size))["f1"]
        rows["nlp_distill_ner"]["token_f1"] = student_token_f1(a.student, sentences)
    result = {"data_dir": str(a.data_dir), "split": a.split, "n_texts": len(texts), "threads": a.threads,
              "batch_size": a.batch_size, "repeats": a.repeats, "machine": machine(),
              "command": command_line("spacy_pipeline", argv),
              "speed_texts": {"file": a.speed_file or str(Path(a.output_dir) / "speech1000.txt"), "n": len(speed),
                              "mean_words": sum(len(t.split()) for t in speed) / len(speed)},
              "rows": rows}
    write_json(a.output_json, result)
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
