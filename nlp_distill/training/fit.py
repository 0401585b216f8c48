"""Fine-tune a ``TransformerTokenClassifier``: the teacher on gold tags (``train_teacher``), a
transformer student distilled from it (``distil_transformer``), or any transformer with a given
loss (``fit_transformer``, which both use).

Both write into ``output_dir``: ``model/`` (best on dev), ``metrics.json``, ``train_log.jsonl`` and
``checkpoint/`` (the last epoch, for a resume; delete it once the run is final).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from nlp_distill.config import (AugmentConfig, LayerDropModelConfig, TeacherTrainerConfig, TrainerConfig,
                                TransformerConfig, TransformerKDConfig, TransformerStudentConfig)
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill.teachers import load_teacher, teacher_scores
from nlp_distill.distill.transfer_set import label_copies_in_memory
from nlp_distill.distill.transformer_kd import TransformerDistill, transformer_student
from nlp_distill.errors import ConfigError
from nlp_distill.io import write_json
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.packaged_encoders import ENCODERS
from nlp_distill.models.transformer import TransformerTokenClassifier
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.result import TrainResult, final_metrics
from nlp_distill.training.trainer import Trainer
from nlp_distill.utils import distributed as ddp
from nlp_distill.utils.device import pick_device

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


def encoder_recipe(configs: Dict[str, Any], given: Set[Tuple[str, str]]) -> Dict[str, Any]:
    """A packaged encoder's measured recipe (``PackagedEncoder.recipe``, e.g. mpnet's lr, batch
    size and head lr) in place of the settings the user did not give; the change is logged.

    Args:
        configs: ``{section: config}``, with ``configs["model"]`` a ``TransformerConfig``.
        given: the (section, field) pairs the user set, which the recipe leaves alone.
    """
    enc = ENCODERS.get(configs["model"].model_name_or_path)
    applied = []
    for section, field, value in enc.recipe if enc else ():
        if (section, field) not in given and getattr(configs[section], field) != value:
            configs = {**configs, section: configs[section].replace(**{field: value})}
            applied.append(f"{field} {value:g}")
    if applied:
        logger.info("%s: its measured recipe sets %s (flags override)", enc.name, ", ".join(applied))
    return configs


def param_groups(clf: TransformerTokenClassifier, weight_decay: float, head_lr: Optional[float]) -> List[Dict]:
    """Optimiser groups: no weight decay on biases and norms; the classification head at ``head_lr``
    (``None``: the optimiser's lr). Empty groups are left out."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    head = {id(p) for p in clf.model.classifier.parameters()} if head_lr else set()
    groups = []
    for is_head in (False, True):
        for decay in (True, False):
            ps = [p for n, p in clf.named_parameters()
                  if p.requires_grad and (id(p) in head) == is_head and n.endswith(no_decay) != decay]
            if ps:
                groups.append({"params": ps, "weight_decay": weight_decay if decay else 0.0,
                               **({"lr": head_lr} if is_head else {})})
    return groups


def fit_transformer(*, output_dir: PathLike, model: TransformerTokenClassifier, train: Sequence[Sentence],
                    dev: Sequence[Sentence], test: Sequence[Sentence] = (), labels: Optional[LabelVocab] = None,
                    trainer: TrainerConfig = TeacherTrainerConfig(), loss_fn: Optional[Callable] = None,
                    targets: Optional[Sequence[np.ndarray]] = None, extra_metrics: Optional[Dict[str, Any]] = None,
                    device: Optional[str] = None, resume: bool = False) -> TrainResult:
    """Train ``model`` on the windows of ``train``, keep the best on dev, score dev and test once
    with the best, write ``metrics.json``.

    Args:
        output_dir: run folder (``model/``, ``metrics.json``, ``train_log.jsonl``, ``checkpoint/``).
        model: the classifier to train (its ``config`` gives batch size and head lr).
        train: tagged training sentences; dev: picks the best epoch; test: may be empty.
        labels: what ``train``'s tags are encoded with (default ``model.labels``).
        loss_fn: ``batch dict -> (loss sum, items[, parts])`` (default: the model's own CE).
        targets: one (n_words, C) teacher-logit array per training sentence, reaching ``loss_fn``
            as the batch's ``teacher_logits`` (B, W, C).
        extra_metrics: written into ``metrics.json`` beside the scores.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: cuda when available).
        resume: continue from ``output_dir/checkpoint`` when it exists.
    """
    out, dev_ = Path(output_dir), pick_device(device)
    model.to(dev_)
    train_tags = [(labels or model.labels).encode(s.tags) for s in train]
    windows = model.windows([s.tokens for s in train])
    lengths = [len(w.input_ids) for w in windows]
    bs = model.config.batch_size

    def collate(idx):
        return {k: v.to(dev_) for k, v in model.collate([windows[i] for i in idx], train_tags, targets).items()}

    loop = Trainer(
        model=model, config=trainer, loss_fn=loss_fn or model.loss,
        train_batches=lambda epoch: bucket_batches(lengths, bs, shuffle=True, seed=trainer.seed + epoch),
        num_batches=(len(windows) + bs - 1) // bs, evaluate=lambda: evaluate_split(model.predict, dev),
        save_model=model.save_pretrained, output_dir=out,
        param_groups=param_groups(model, trainer.weight_decay, model.config.head_lr), collate=collate,
    ).train(resume=resume)
    if not ddp.is_main():  # rank 0 scores the best model and writes metrics.json
        return TrainResult(None, {}, out)
    best = TransformerTokenClassifier.from_pretrained(str(out / "model")).to(dev_)
    per_second = len(train) * len(loop.history) / max(sum(loop.epoch_seconds), 1e-9)
    metrics = final_metrics(best, best.predict, loop, dev, test, out / "model", train_sentences_per_second=per_second,
                            **(extra_metrics or {}))
    write_json(out / "metrics.json", metrics)
    test_f1 = metrics["test"]["f1"] if metrics["test"] else float("nan")
    logger.info("done: dev F1 %.4f, test F1 %.4f (best epoch %d, %.0fs)", metrics["dev"]["f1"], test_f1,
                loop.best_epoch, loop.train_seconds)
    return TrainResult(best, metrics, out)


def train_teacher(*, output_dir: PathLike, train: Sequence[Sentence], dev: Sequence[Sentence], labels: LabelVocab,
                  test: Sequence[Sentence] = (), model: TransformerConfig = TransformerConfig(),
                  trainer: TrainerConfig = TeacherTrainerConfig(), device: Optional[str] = None,
                  resume: bool = False) -> TrainResult:
    """Fine-tune the encoder of ``model.model_name_or_path`` (a HF folder or a packaged encoder:
    minilm when empty) with a new head for ``labels``, on every ``train`` sentence outside
    ``model.holdout_fold``: a teacher for ``distil_student``.

    Args:
        output_dir, device, resume: as ``fit_transformer``.
        train, dev, test, labels: the gold data (``load_data_dir``).
        model: encoder, windows, batch sizes, head lr, held-out fold; trainer: the loop's settings.
    """
    seed_everything(trainer.seed)
    clf = TransformerTokenClassifier.from_pretrained(model.model_name_or_path or None, labels, model)
    logger.info("teacher %s: %.1fM parameters, %d labels; train/dev/test = %d/%d/%d sentences",
                clf.config.model_name_or_path, clf.num_parameters() / 1e6, len(labels), len(train), len(dev), len(test))
    kept = [s for i, s in enumerate(train) if model.in_training_fold(i)]
    if len(kept) < len(train):
        logger.info("fold %d of %d held out: training on %d of %d train sentences", model.holdout_fold[1],
                    model.holdout_fold[0], len(kept), len(train))
    return fit_transformer(output_dir=output_dir, model=clf, train=kept, dev=dev, test=test, labels=labels,
                           trainer=trainer, device=device, resume=resume)


def distil_transformer(*, output_dir: PathLike, train: Sequence[Sentence], dev: Sequence[Sentence],
                       labels: LabelVocab, kd: TransformerKDConfig, test: Sequence[Sentence] = (),
                       student: TransformerStudentConfig = TransformerStudentConfig(),
                       model: LayerDropModelConfig = LayerDropModelConfig(),
                       trainer: TrainerConfig = TeacherTrainerConfig(), augment: AugmentConfig = AugmentConfig(),
                       device: Optional[str] = None, resume: bool = False) -> TrainResult:
    """A transformer student cut from the teacher of ``kd.teacher_model_path`` (kept layers, copied
    weights: logits KD, hidden-state MSE and attention KL on mapped layers), or another encoder
    (``student.model_name_or_path``: its own tokenizer, taught by the teacher's word logits alone),
    trained on ``train`` and ``augment.copies`` teacher-tagged copies of each sentence.

    Several teacher folders form an ensemble: the student is cut from the first, which also gives
    the hidden and attention targets; the logit targets are the ensemble's, computed once.

    Args:
        output_dir, device, resume: as ``fit_transformer`` (``augmented.txt`` is written there too).
        train, dev, test, labels: the gold data (``load_data_dir``).
        model: the student's batch sizes and precision (windows and pooling are the teacher's).

    Raises:
        ConfigError: out-of-fold teachers, or a teacher whose labels are not ``labels``.
    """
    seed_everything(trainer.seed)
    teacher = load_teacher(kd.teacher_model_path, pick_device(device), labels, kd.teacher_max_seq_len)
    if teacher.routed:
        raise ConfigError("transformer_kd does not route sentences to out-of-fold teachers (tagger_kd does): "
                          "give teachers trained on all of train")
    source = teacher.members[0]
    if source is teacher:  # the student cut from it predicts in the data's label order
        teacher.select_labels(labels)
    if teacher.labels != labels:
        raise ConfigError(f"the teacher's labels {teacher.labels.labels} differ from the data's {labels.labels}")
    scores = teacher_scores(teacher, dev, test)
    clf, kept, mapping = transformer_student(source, student, kd, labels)
    clf.config = clf.config.replace(batch_size=model.batch_size, eval_batch_size=model.eval_batch_size,
                                    precision=model.precision, holdout_fold=[],  # a student of all of train
                                    head_lr=None)
    own = bool(student.model_name_or_path)  # a separate encoder: the teacher's logits are its only targets
    sentences, targets = label_copies_in_memory(teacher, train, augment, labels.scheme,
                                                Path(output_dir) / "augmented.txt",
                                                soft_targets=own or source is not teacher,
                                                batch_size=kd.teacher_batch_size)
    dist = TransformerDistill(source, clf, kd, student, mapping)
    return fit_transformer(output_dir=output_dir, model=clf, train=sentences, dev=dev, test=test, labels=labels,
                           trainer=trainer, loss_fn=lambda b: (*dist.loss(b), dist.last_parts), targets=targets,
                           extra_metrics={"teacher": scores, "student_layers": kept,
                                          "student_model": student.model_name_or_path or None},
                           device=device, resume=resume)
