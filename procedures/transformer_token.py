"""Fine-tune a TransformerTokenClassifier (the teacher) on a CoNLL data dir."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from nlp_distill.config import TeacherTrainerConfig, TrainerConfig, TransformerConfig
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.io import folder_size, write_json
from nlp_distill.models.transformer import TransformerTokenClassifier
from nlp_distill.utils import distributed as ddp
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.trainer import Trainer
from procedures.common import RunOptions, environment, evaluate_split, pick_device, run_folder

logger = logging.getLogger(__name__)


def do_training(data_dir, output_dir, model: TransformerConfig = TransformerConfig(),
                trainer: TrainerConfig = TeacherTrainerConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Fine-tune the teacher; best epoch on dev; test evaluated once at the end.

    Writes to ``output_dir``: ``model/`` (HF folder + labels), ``config.json``, ``metrics.json``,
    ``train_log.jsonl``, ``checkpoint/``.

    Returns:
        the metrics dict written to ``metrics.json``.
    """
    sections = {"task": "transformer_token", "data_dir": str(data_dir), "model": model, "trainer": trainer}
    with run_folder(output_dir, sections, run) as out:
        return _train_teacher(out, data_dir, model, trainer, run)


def _train_teacher(out: Path, data_dir, model: TransformerConfig, trainer: TrainerConfig,
                   run: RunOptions) -> Dict[str, Any]:
    seed_everything(trainer.seed)
    data = load_data_dir(data_dir, encoding=run.encoding)
    clf = TransformerTokenClassifier.from_pretrained(model.model_name_or_path or None, data.labels, model)
    logger.info("teacher %s: %.1fM parameters, %d labels; train/dev/test = %d/%d/%d sentences",
                clf.config.model_name_or_path, clf.num_parameters() / 1e6, len(data.labels), len(data.train),
                len(data.dev), len(data.test))
    train = [s for i, s in enumerate(data.train) if model.in_training_fold(i)]
    if len(train) < len(data.train):
        logger.info("fold %d of %d held out: training on %d of %d train sentences", model.holdout_fold[1],
                    model.holdout_fold[0], len(train), len(data.train))
    return fit_transformer(out, clf, train, data, trainer, run)


def fit_transformer(out: Path, clf: TransformerTokenClassifier, train: Sequence[Sentence], data: TaggingData,
                    trainer: TrainerConfig, run: RunOptions, loss_fn: Optional[Callable] = None,
                    extra_metrics: Optional[Dict[str, Any]] = None,
                    targets: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
    """Train ``clf`` on the windows of ``train`` (tagged sentences) with ``loss_fn`` (default: its
    own CE), keep the best on dev, score dev/test once with the best, write ``metrics.json``.
    Shared by the teacher (``transformer_token``) and transformer students (``transformer_kd``);
    ``targets`` (teacher logits per training sentence) reach ``loss_fn`` as ``teacher_logits``."""
    dev_ = pick_device(run.device)
    clf.to(dev_)
    train_tags = [data.labels.encode(s.tags) for s in train]
    windows = clf.windows([s.tokens for s in train])
    lengths = [len(w.input_ids) for w in windows]
    bs = clf.config.batch_size
    n_batches = (len(windows) + bs - 1) // bs

    def batches(epoch: int):
        return bucket_batches(lengths, bs, shuffle=True, seed=trainer.seed + epoch)

    def collate(idx):
        return {k: v.to(dev_) for k, v in clf.collate([windows[i] for i in idx], train_tags, targets).items()}

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in clf.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": trainer.weight_decay},
              {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0}]

    def evaluate():
        return evaluate_split(clf.predict, data.dev)

    t0 = time.perf_counter()
    result = Trainer(clf, trainer, loss_fn or clf.loss, batches, n_batches, evaluate, clf.save_pretrained, out,
                     param_groups=groups, collate=collate).train(resume=run.resume)
    train_time = time.perf_counter() - t0
    if not ddp.is_main():  # rank 0 scores the best model and writes metrics.json
        return {}
    best = TransformerTokenClassifier.from_pretrained(str(out / "model")).to(dev_)
    metrics = {"dev": evaluate_split(best.predict, data.dev),
               "test": evaluate_split(best.predict, data.test) if data.test else None,
               "best_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
               "train_seconds": train_time,
               "train_sentences_per_second": len(train) * len(result["history"]) / max(
                   sum(h["epoch_seconds"] for h in result["history"]), 1e-9),
               "parameters": best.num_parameters(), "size_bytes": folder_size(out / "model"),
               "environment": environment(), **(extra_metrics or {})}
    write_json(out / "metrics.json", metrics)
    test_f1 = metrics["test"]["f1"] if metrics["test"] else float("nan")
    logger.info("done: dev F1 %.4f, test F1 %.4f (best epoch %d, %.0fs)", metrics["dev"]["f1"], test_f1,
                result["best_epoch"], train_time)
    return metrics
