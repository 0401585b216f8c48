"""Our students beside spaCy's own NER trained on the same sentences, scored and timed the same way.

spaCy 3.8 NER is trained per seed from ``spacy init config --lang en --pipeline ner --optimize
efficiency`` and ``--optimize accuracy`` (the latter with the packaged GloVe 6B 50d as static
vectors, ``spacy init vectors ... --attr LOWER``), spaCy's defaults except ``max_epochs`` and
``gold_preproc = true`` (so it keeps our tokens), on DocBin copies of the data dir's CoNLL files.
Every model (spaCy's and the ``--student`` run folders) is scored on dev and test with this
library's seqeval metric on our tokens, and timed in this one process at batch 64 at each thread
count (``benchmarks.common.measure``) on 1000 SOTU sentences.

    python -m benchmarks.peers --data_dir data/wnut16 --output_dir runs/peers --seeds 1,2,3 \\
        --student tagger_kd=runs/kd_s1 --student tagger_kd=runs/kd_s2 --student tagger_kd=runs/kd_s3
    python -m benchmarks.peers --data_dir data/wnut16 --output_dir runs/peers --gold_fraction 0.25 ...

``--gold_fraction 0.25`` trains spaCy on the low-resource split of ``benchmarks/run_all.py`` (train
sentence i keeps its tags when i % 4 == 0), the sentences its ``low25_*`` students saw. spaCy runs
that finished (``model-best`` and ``peers_run.json`` in their folder) are reused, so running the
same command again on an idle machine redoes only the scoring and the timing. Needs
``pip install -e .[peers]``; the accuracy config also needs the GloVe package (``.[glove]``).

spaCy 3.8 saves default-mode vectors without their lookup attribute, so a pipeline built with
``--attr LOWER`` reloads looking vectors up by ORTH (capitalised tokens miss lowercase GloVe; on
WNUT-16 the 1-epoch accuracy model fell from dev F1 0.453 to 0.266 on reload); ``keep_vectors_attr``
writes the attribute back into the vectors pipeline and every trained model.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from benchmarks.common import Predict, best_seconds, command_line, measure, parser, speech_sentences, subsampled_dir
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.data.labels import convert_tags, is_valid
from nlp_distill.io import folder_size, read_json, write_json
from nlp_distill.metrics import tagging_metrics
from nlp_distill.models.loader import load_model

logger = logging.getLogger("peers")

SPACY_INSTALL = "pip install 'spacy>=3.8,<3.9'  (or pip install -e .[peers])"
CONFIGS = ("efficiency", "accuracy")
PACKAGED_GLOVE = "glove-6b-50d"


def import_spacy():
    """spaCy, or a clear error saying how to install it."""
    try:
        import spacy
    except ImportError:
        raise SystemExit(f"benchmarks.peers needs spaCy 3.8: {SPACY_INSTALL}") from None
    return spacy


# ---------------------------------------------------------------- data

def split_data(data_dir: Path, out: Path, gold_fraction: float) -> TaggingData:
    """The data dir, or (0.25) the low-resource copy ``benchmarks/run_all.py`` trains its
    ``low25_*`` rows on: the same train sentences on both sides, dev and test whole."""
    if gold_fraction == 1.0:
        return load_data_dir(data_dir)
    if gold_fraction == 0.25:
        return load_data_dir(subsampled_dir(data_dir, out / "data" / "low25", None, low_resource=True))
    raise SystemExit(f"--gold_fraction {gold_fraction}: only 1.0 and 0.25 (the low-resource split of "
                     "benchmarks/run_all.py: train sentence i keeps its tags when i % 4 == 0) are supported")


def to_docbin(sentences: Sequence[Sentence], path: Path) -> None:
    """Write tagged sentences as a spaCy DocBin on our tokens (one space after every token)."""
    spacy = import_spacy()
    from spacy.tokens import Doc, DocBin

    vocab = spacy.blank("en").vocab
    db = DocBin(store_user_data=False)
    repaired = 0
    for s in sentences:
        tags = list(s.tags)
        if not is_valid(tags, "BIO"):  # an orphan I-X starts an entity, as our metric reads it
            tags, repaired = convert_tags(tags, "BIO"), repaired + 1
        db.add(Doc(vocab, words=list(s.tokens), spaces=[True] * len(s.tokens), ents=tags))
    if repaired:
        logger.warning("%s: %d sentences had an I- tag without its B-; written with that entity starting there",
                       path, repaired)
    path.parent.mkdir(parents=True, exist_ok=True)
    db.to_disk(path)


# ---------------------------------------------------------------- spaCy training

def glove_vectors(vectors: str, work: Path) -> Path:
    """A spaCy vectors pipeline (``spacy init vectors en FILE DIR --attr LOWER``), built once in
    ``WORK/vectors``; ``vectors`` is ``glove-6b-50d`` (the packaged GloVe) or a word2vec/GloVe
    text file."""
    out = work / f"vectors_{Path(vectors).stem}"
    if (out / "meta.json").is_file():
        return out
    src = Path(vectors)
    if vectors == PACKAGED_GLOVE:
        from nlp_distill.modules.pretrained import packaged_glove_6b_50d

        words, emb = packaged_glove_6b_50d()
        src = work / "glove_6b_50d.txt"
        work.mkdir(parents=True, exist_ok=True)
        with open(src, "w", encoding="utf-8") as f:
            f.write(f"{len(words)} {emb.shape[1]}\n")
            for w, row in zip(words, emb):
                f.write(w + " " + " ".join(f"{x:.6g}" for x in row) + "\n")
    elif not src.is_file():
        raise SystemExit(f"--vectors {vectors}: no such file (or '{PACKAGED_GLOVE}' for the packaged GloVe)")
    spacy = import_spacy()
    from spacy.training.initialize import convert_vectors

    nlp = spacy.blank("en")  # what `spacy init vectors en SRC OUT --attr LOWER` runs, without a second process
    convert_vectors(nlp, src, truncate=0, prune=-1, attr="LOWER")
    nlp.to_disk(out)
    keep_vectors_attr(out)
    if vectors == PACKAGED_GLOVE:
        src.unlink()  # 170 MB of text, only needed to build the vectors pipeline
    return out


def keep_vectors_attr(folder: Path, attr: str = "LOWER") -> None:
    """Make a saved pipeline look its vectors up by ``attr`` again when loaded.

    spaCy 3.8 writes ``vocab/vectors.cfg`` of default-mode vectors without their ``attr``, so
    ``spacy init vectors --attr LOWER`` output, and every pipeline trained from it, reloads with
    ORTH lookups: lowercase GloVe would then miss every capitalised token."""
    from spacy.attrs import IDS

    cfg_path = folder / "vocab" / "vectors.cfg"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("attr") != IDS[attr]:
        cfg["attr"] = IDS[attr]
        cfg_path.write_text(json.dumps(cfg), encoding="utf-8")


def thread_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def run_spacy(args: List[str], threads: int, log: Optional[Path] = None) -> None:
    """``python -m spacy ARGS`` in a child process (offline; its output goes to ``log``)."""
    cmd = [sys.executable, "-m", "spacy", *args]
    with open(log, "w", encoding="utf-8") if log else open(os.devnull, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=thread_env(threads))
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log or 'its output'}")


def write_config(kind: str, path: Path, max_epochs: int, eval_frequency: Optional[int]) -> Path:
    """``spacy init config --lang en --pipeline ner --optimize KIND`` with spaCy's defaults except
    ``max_epochs``, ``gold_preproc = true`` (train and dev) and, if given, ``eval_frequency``."""
    import_spacy()
    from spacy.cli.init_config import init_config

    cfg = init_config(lang="en", pipeline=["ner"], optimize=kind, gpu=False)
    cfg["training"]["max_epochs"] = max_epochs
    if eval_frequency:
        cfg["training"]["eval_frequency"] = eval_frequency
    for split in ("train", "dev"):
        cfg["corpora"][split]["gold_preproc"] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(path)
    return path


def train_spacy(config: Path, corpus: Path, out: Path, seed: int, threads: int,
                vectors: Optional[Path]) -> Dict[str, float]:
    """``spacy train`` one seed into ``out`` (reused when it has finished); returns its wall time."""
    done = out / "peers_run.json"
    if done.is_file() and (out / "model-best" / "meta.json").is_file():
        return read_json(done)
    out.mkdir(parents=True, exist_ok=True)
    args = ["train", str(config), "--output", str(out), "--paths.train", str(corpus / "train.spacy"),
            "--paths.dev", str(corpus / "dev.spacy"), "--system.seed", str(seed)]
    args += ["--paths.vectors", str(vectors)] if vectors else []
    t = time.perf_counter()
    run_spacy(args, threads, out / "train.log")
    run = {"train_seconds": time.perf_counter() - t, "seed": seed, "threads": threads}
    write_json(done, run)
    return run


# ---------------------------------------------------------------- predict + score

def doc_tags(doc) -> List[str]:
    """A spaCy Doc's entities as BIO tags, one per token."""
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def spacy_predictor(model_dir: Path, n_process: int = 1) -> Predict:
    """``predict(token_lists, batch_size) -> BIO tag lists`` with a trained spaCy pipeline, on our tokens."""
    spacy = import_spacy()
    from spacy.tokens import Doc

    nlp = spacy.load(model_dir)

    def predict(sents: List[List[str]], batch_size: int) -> List[List[str]]:
        docs = (Doc(nlp.vocab, words=s, spaces=[True] * len(s)) for s in sents)
        return [doc_tags(doc) for doc in nlp.pipe(docs, batch_size=batch_size, n_process=n_process)]

    return predict


def student_predictor(run_dir: str) -> Predict:
    """The library's normal loader and predict path (as ``benchmarks.speed`` times it)."""
    model = load_model(run_dir)
    model.eval()

    def predict(sents: List[List[str]], batch_size: int) -> List[List[str]]:
        with torch.inference_mode():
            return model.predict(sents, batch_size=batch_size)

    return predict


def score(predict: Predict, data: TaggingData, batch_size: int = 64) -> Dict[str, float]:
    """Entity F1 on dev and test with this library's seqeval metric."""
    out = {}
    for split in ("dev", "test"):
        sents = getattr(data, split)
        out[f"{split}_f1"] = tagging_metrics([s.tags for s in sents], predict([list(s.tokens) for s in sents], batch_size))["f1"]
    return out


def model_folder(run_dir: Path) -> Path:
    return run_dir / "model" if (run_dir / "model").is_dir() else run_dir


# ---------------------------------------------------------------- the rows

def spacy_group(kind: str, a: argparse.Namespace, data: TaggingData, root: Path, out: Path) -> List[Dict]:
    """Train (or reuse) and score spaCy ``kind`` for every seed; one dict per seed."""
    corpus = root / "corpus"
    if not (corpus / "dev.spacy").is_file():
        for split in ("train", "dev"):
            to_docbin(getattr(data, split), corpus / f"{split}.spacy")
    vectors = glove_vectors(a.vectors, out) if kind == "accuracy" else None
    config = write_config(kind, root / f"{kind}.cfg", a.max_epochs, a.eval_frequency)
    rows = []
    for seed in a.seeds:
        run_dir = root / f"spacy_{kind}_s{seed}"
        logger.info("spaCy %s seed %d -> %s", kind, seed, run_dir)
        run = train_spacy(config, corpus, run_dir, seed, a.train_threads, vectors)
        best = run_dir / "model-best"
        if vectors is not None:
            keep_vectors_attr(best)
        own = read_json(best / "meta.json").get("performance", {}).get("ents_f")  # spaCy's scorer, a cross-check
        rows.append({"seed": seed, "dir": str(best), "train_seconds": run["train_seconds"],
                     "size_mb": folder_size(best) / 1e6, **score(spacy_predictor(best), data), "spacy_dev_ents_f": own})
        logger.info("spaCy %s seed %d: %s", kind, seed, {k: v for k, v in rows[-1].items() if k != "dir"})
    return rows


def student_group(dirs: List[str], data: TaggingData) -> List[Dict]:
    """Score saved students on the same dev/test; train time and seed from their run folders."""
    rows = []
    for d in dirs:
        run = Path(d)
        metrics = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else {}
        cfg = read_json(run / "config.json") if (run / "config.json").is_file() else {}
        seed = next((v["seed"] for v in cfg.values() if isinstance(v, dict) and "seed" in v), None)
        rows.append({"seed": seed, "dir": d, "train_seconds": metrics.get("train_seconds"),
                     "size_mb": folder_size(model_folder(run)) / 1e6, **score(student_predictor(d), data)})
    return rows


def time_models(predictors: Dict[str, Predict], sents: List[List[str]], threads: Sequence[int],
                latency_n: int) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``benchmarks.common.measure`` of every model at each thread count, side by side in this
    process: torch intra-op threads and the BLAS pools (numpy's, which thinc may use) set alike."""
    from threadpoolctl import threadpool_limits

    res: Dict[str, Dict[str, Dict[str, float]]] = {name: {} for name in predictors}
    for t in threads:
        torch.set_num_threads(t)
        with threadpool_limits(t):
            for name, predict in predictors.items():
                res[name][str(t)] = measure(predict, sents, latency_n)
                logger.info("%s, %d thread(s): %.1f sent/s at batch 64", name, t, res[name][str(t)]["sent_per_s_b64"])
    return res


def time_spacy_processes(model_dir: str, sents: List[List[str]], n_process: int, repeats: int = 2) -> Dict[str, float]:
    """spaCy's own way to use more cores: ``nlp.pipe(n_process=N)``, batch 64, best of ``repeats``
    (process start-up included: it is paid on every call)."""
    predict = spacy_predictor(Path(model_dir), n_process)
    best = best_seconds(lambda: predict(sents, 64), repeats)
    return {"sent_per_s_b64": len(sents) / best, "words_per_s_b64": sum(map(len, sents)) / best}


# ---------------------------------------------------------------- report

def mean_sd(xs: Sequence[Optional[float]], fmt: str = "{:.3f}") -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format(statistics.stdev(xs))}"


def markdown(result: Dict) -> str:
    """The table block for docs/benchmarks.md."""
    threads = result["threads"]
    ref = result["speed"].get("spacy_efficiency")
    head = ["model", "seeds", "test F1", "dev F1", "train wall s", "size MB"]
    for t in threads:
        head += [f"sent/s {t}t", f"words/s {t}t"]
    head.append("x spaCy efficiency (" + " / ".join(f"{t}t" for t in threads) + ")")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in result["models"].items():
        sp = result["speed"].get(name, {})
        cells = [name, ",".join(str(r["seed"]) for r in rows), mean_sd([r["test_f1"] for r in rows]),
                 mean_sd([r["dev_f1"] for r in rows]), mean_sd([r["train_seconds"] for r in rows], "{:.0f}"),
                 mean_sd([r["size_mb"] for r in rows], "{:.1f}")]
        for t in threads:
            s = sp.get(str(t))
            cells += [f"{s['sent_per_s_b64']:,.0f}", f"{s['words_per_s_b64']:,.0f}"] if s else ["", ""]
        cells.append(" / ".join(f"{sp[str(t)]['sent_per_s_b64'] / ref[str(t)]['sent_per_s_b64']:.2f}"
                                for t in threads) if ref and sp else "")
        lines.append("| " + " | ".join(cells) + " |")
    s = result["speed_sentences"]
    notes = [f"Speed: {s['n']} sentences of {s['file']} ({s['mean_words']:.1f} words mean), batch 64, one process, "
             "best of 2 (`benchmarks.common.measure`); the first seed of each row is timed."]
    for name, v in result.get("spacy_n_process", {}).items():
        notes.append(f"{name} with `nlp.pipe(n_process={v['n_process']})` (spaCy's way to use more cores; thinc's "
                     f"blis matmuls run on one thread): {v['sent_per_s_b64']:,.0f} sent/s, {v['words_per_s_b64']:,.0f} words/s.")
    notes.append("Train wall: spaCy's `spacy train` process with " + f"{result['train_threads']} thread(s) "
                 "(building the vectors pipeline once is not counted); students: `train_seconds` of their "
                 "run folder's metrics.json (a teacher's training and labeling are not counted).")
    notes.append(f"Machine: {result['machine']}. Command: `{result['command']}`.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def machine() -> str:
    from nlp_distill.utils.machine import cpu_name

    spacy = import_spacy()
    return (f"{cpu_name()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}, torch {torch.__version__}, "
            f"spaCy {spacy.__version__}")


# ---------------------------------------------------------------- main

def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = parser("peers", __doc__)
    ap.add_argument("--data_dir", required=True, help="train/dev/test.txt (CoNLL, BIO) [+ unlabeled.txt for timing]")
    ap.add_argument("--output_dir", required=True, help="spaCy corpora, configs, runs and vectors go here")
    ap.add_argument("--output_json", default=None, help="default: OUTPUT_DIR/peers[_gold25].json")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated spaCy seeds")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="spaCy configs to train: efficiency,accuracy")
    ap.add_argument("--max_epochs", type=int, default=60, help="spaCy training.max_epochs (its other limits stay)")
    ap.add_argument("--eval_frequency", type=int, default=None, help="spaCy training.eval_frequency (default: spaCy's 200 steps)")
    ap.add_argument("--gold_fraction", type=float, default=1.0, help="1.0, or 0.25: run_all.py's low-resource train split")
    ap.add_argument("--vectors", default=PACKAGED_GLOVE, help="static vectors of the accuracy config: glove-6b-50d or a word2vec/GloVe text file")
    ap.add_argument("--student", action="append", default=[], help="NAME=RUN_DIR (repeat; runs sharing a NAME are seeds of one row)")
    ap.add_argument("--threads", default="1,2", help="thread counts to time at")
    ap.add_argument("--train_threads", type=int, default=1, help="BLAS/OpenMP threads of each spaCy training process")
    ap.add_argument("--speed_file", default=None, help="sentences to time (default: every 19th line of DATA_DIR/unlabeled.txt, 1000)")
    ap.add_argument("--latency_n", type=int, default=200, help="sentences timed one at a time (batch 1)")
    ap.add_argument("--n_process", type=int, default=2, help="also time spaCy with nlp.pipe(n_process=N); 0: skip")
    a = ap.parse_args(argv)
    a.seeds = [int(s) for s in a.seeds.split(",") if s]
    a.configs = [c for c in a.configs.split(",") if c]
    a.threads = [int(t) for t in a.threads.split(",") if t]
    bad = sorted(set(a.configs) - set(CONFIGS))
    if bad:
        ap.error(f"--configs: unknown {bad}; choose from {list(CONFIGS)}")
    if any("=" not in s for s in a.student):
        ap.error("--student takes NAME=RUN_DIR")
    return a


def main(argv: Optional[List[str]] = None) -> Dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    a = parse_args(argv)
    import_spacy()
    out, data_dir = Path(a.output_dir), Path(a.data_dir)
    root = out / ("full" if a.gold_fraction == 1.0 else f"gold{round(a.gold_fraction * 100)}")
    data = split_data(data_dir, out, a.gold_fraction)
    models: Dict[str, List[Dict]] = {}
    for kind in a.configs:
        models[f"spacy_{kind}"] = spacy_group(kind, a, data, root, out)
    students: Dict[str, List[str]] = {}
    for spec in a.student:
        name, d = spec.split("=", 1)
        students.setdefault(name, []).append(d)
    for name, dirs in students.items():
        if name in models:
            raise SystemExit(f"--student {name}=...: {name} names a spaCy row; choose another name")
        models[name] = student_group(dirs, data)
    sents = speech_sentences(data_dir, a.speed_file, out)
    spacy_names = [f"spacy_{kind}" for kind in a.configs]
    predictors = {name: (spacy_predictor(Path(rows[0]["dir"])) if name in spacy_names else student_predictor(rows[0]["dir"]))
                  for name, rows in models.items()}
    result = {"data_dir": str(data_dir), "gold_fraction": a.gold_fraction, "train_sentences": len(data.train),
              "threads": a.threads, "train_threads": a.train_threads, "max_epochs": a.max_epochs,
              "machine": machine(), "command": command_line("peers", argv),
              "speed_sentences": {"file": a.speed_file or str(out / "speech1000.txt"), "n": len(sents),
                                  "mean_words": sum(map(len, sents)) / len(sents)},
              "models": models, "speed": time_models(predictors, sents, a.threads, a.latency_n)}
    if a.n_process > 1:
        result["spacy_n_process"] = {name: {"n_process": a.n_process, **time_spacy_processes(models[name][0]["dir"], sents, a.n_process)}
                                     for name in spacy_names}
    json_path = Path(a.output_json) if a.output_json else out / f"peers{'' if a.gold_fraction == 1.0 else '_' + root.name}.json"
    write_json(json_path, result)
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
