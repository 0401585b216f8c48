"""Train a NeuralTagger student on gold labels (and, via ``train_student``, with a distiller)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn


from nlp_distill.config import StudentDataConfig, StudentTrainerConfig, TaggerConfig, TrainerConfig
from nlp_distill.data.batching import ConcatEncoded, bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab, is_valid, repair
from nlp_distill.errors import DataFormatError
from nlp_distill.io import folder_size, write_json
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.student import build_student
from nlp_distill.modules.pretrained import resolve_word_vectors
from nlp_distill.utils import distributed as ddp
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.trainer import Trainer
from procedures.common import RunOptions, environment, pick_device, run_folder, setup_logging

logger = logging.getLogger(__name__)


def _checked_tags(train: Sequence[Sentence], labels: LabelVocab, tagger: TaggerConfig,
                  data: StudentDataConfig) -> List[Sentence]:
    """Repair scheme-invalid tag sequences (``--repair_tags``) or, for a constrained CRF that
    could not score them, stop with the first one's line and the fixes."""
    if labels.scheme in ("IO", "plain"):  # every sequence is valid
        return list(train)
    bad = [s for s in train if s.tags is not None and not is_valid(s.tags, labels.scheme)]
    if bad and data.repair_tags:
        logger.warning("--repair_tags: %d training sentences repaired to valid %s (an orphan I-X starts an X entity)",
                       len(bad), labels.scheme)
        return [Sentence(s.tokens, repair(s.tags, labels.scheme), s.line) if s.tags is not None else s for s in train]
    if bad and tagger.use_crf and tagger.crf_constraints:
        raise DataFormatError(None if bad[0].line is None else "train.txt", bad[0].line,
                              f"{len(bad)} training sentences have tag sequences invalid in {labels.scheme} (e.g. "
                              f"{bad[0].tags[:8]}; IOB1 data?); a constrained CRF cannot score them: pass --repair_tags "
                              "(an orphan I-X starts an X entity) or --no_crf_constraints")
    return list(train)


def train_student(output_dir, train: Sequence[Sentence], dev: Sequence[Sentence], test: Sequence[Sentence],
                  labels: LabelVocab, tagger: TaggerConfig, trainer: TrainerConfig, data: StudentDataConfig,
                  weights: Optional[Sequence[float]] = None, vocab_sentences: Optional[Sequence[Sentence]] = None,
                  distiller=None, run: RunOptions = RunOptions(), teacher_scores: Optional[Dict[str, Any]] = None,
                  extra: Optional[Callable[[NeuralTagger], Any]] = None) -> Dict[str, Any]:
    """Build, train (best on dev) and evaluate a NeuralTagger; the common core of every student run.

    Args:
        train: training sentences; tags may be ``None`` (KD-only) or pseudo-labels.
        weights: per-sentence loss weights (default 1).
        vocab_sentences: sentences the word/char vocabularies are built from (default ``train``;
            never dev/test).
        distiller: a ``TeacherStudentDistill`` already ``attach``-ed to ``train``; ``None`` trains
            on hard labels only.
        run: device and resume (the folder itself is claimed by the caller's ``run_folder``).
        teacher_scores: the teacher's own ``{"dev": ..., "test": ...}`` metrics, written beside
            the student's; a student better than its teacher on dev is warned about.
        extra: ``model -> encoded rows`` appended after ``train`` (e.g. a transfer store's
            ``StoreFeatures``, read from disk batch by batch); they need the model's vocabularies.

    Returns:
        metrics dict (also written to ``metrics.json``).
    """
    out = Path(output_dir)
    seed_everything(trainer.seed)
    dev_ = pick_device(run.device)
    train = _checked_tags(train, labels, tagger, data)
    model = build_student(tagger, data, vocab_sentences if vocab_sentences is not None else train, labels).to(dev_)
    enc = model.encode(train, weights)
    if extra is not None:
        enc = ConcatEncoded([enc, extra(model)])
    logger.info("student %s%s: %.2fM parameters, vocab %d words / %d chars, %d training sentences",
                tagger.model_type, "+crf" if tagger.use_crf else "", model.num_parameters() / 1e6,
                len(model.word_vocab), len(model.char_vocab), len(enc))
    n_batches = len(bucket_batches(enc.lengths, data.batch_size, shuffle=False))

    def batches(epoch: int):
        if distiller is not None:
            distiller.epoch = epoch  # selects the stage of a staged schedule
        return bucket_batches(enc.lengths, data.batch_size, shuffle=True, seed=trainer.seed + epoch)

    trained: nn.Module = model  # what the optimiser and the checkpoint hold
    if distiller is not None:
        loss_fn: Callable = lambda b: (*distiller.loss(model, b), distiller.last_parts)  # noqa: E731
        if distiller.uses_hidden:  # the projection onto the teacher's width trains with the student
            trained = nn.ModuleDict({"student": model, "projection": distiller.init_projection(model.encoder.out_dim)})
            trained.to(dev_)
    else:
        def loss_fn(b):
            return model.gold_loss(model(b), b)

    def evaluate():
        return evaluate_split(lambda s: model.predict(s, data.eval_batch_size), dev)

    stages = sum(distiller.kd.stages) if distiller is not None else 0  # no early stop before the last stage
    result = Trainer(trained, trainer, loss_fn, batches, n_batches, evaluate, model.save_pretrained, out,
                     patience_start=stages, collate=lambda idx: enc.collate(idx).to(dev_)).train(run.resume)
    if not ddp.is_main():  # rank 0 scores the best model and writes metrics.json
        return {}
    return _student_metrics(out, result, dev, test, data, dev_, teacher_scores)


def _student_metrics(out: Path, result: Dict[str, Any], dev: Sequence[Sentence], test: Sequence[Sentence],
                     data: StudentDataConfig, device, teacher_scores: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Score the best-on-dev model once on dev and test, beside the teacher's scores; write metrics.json."""
    best = NeuralTagger.from_pretrained(out / "model").to(device)
    epoch_secs = [h["epoch_seconds"] for h in result["history"]]
    metrics = {
        "dev": evaluate_split(lambda s: best.predict(s, data.eval_batch_size), dev),
        "test": evaluate_split(lambda s: best.predict(s, data.eval_batch_size), test) if test else None,
        "best_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
        "train_seconds": result["train_seconds"], "mean_epoch_seconds": sum(epoch_secs) / max(len(epoch_secs), 1),
        "parameters": best.num_parameters(), "size_bytes": folder_size(out / "model"),
        "environment": environment(),
    }
    if teacher_scores is not None:
        metrics["teacher"] = teacher_scores
        if metrics["dev"]["f1"] > teacher_scores["dev"]["f1"]:
            logger.warning("the student (dev F1 %.4f) beats its teacher (dev F1 %.4f): the teacher is the weaker "
                           "model; train it longer or ensemble several", metrics["dev"]["f1"], teacher_scores["dev"]["f1"])
    write_json(out / "metrics.json", metrics)
    logger.info("student done: dev F1 %.4f, test F1 %s (best epoch %d, %.0fs)", metrics["dev"]["f1"],
                f"{metrics['test']['f1']:.4f}" if test else "n/a", result["best_epoch"], result["train_seconds"])
    return metrics


def student_configs(tagger: TaggerConfig, data: StudentDataConfig) -> Tuple[TaggerConfig, StudentDataConfig]:
    """The run's student settings with the vectors file and word size resolved
    (``resolve_word_vectors``), so ``config.json`` records what was used; its warning (no
    packaged GloVe) reaches the console before the run folder's log starts."""
    setup_logging()
    return resolve_word_vectors(tagger, data)


def do_training(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
                trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
                run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Train a student on the gold labels of ``data_dir`` (no teacher)."""
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer, "data": data}
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding)
        return train_student(out, d.train, d.dev, d.test, d.labels, tagger, trainer, data, run=run)
