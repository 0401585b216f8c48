"""Distillation runs: ``do_kd_training`` (gold + KD) and ``do_kd_pseudo_training`` (gold + KD on
labeled data, pseudo-label CE + KD on unlabeled text)."""
from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional

from nlp_distill.config import KDConfig, PseudoConfig, StudentDataConfig, TaggerConfig, TrainerConfig
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.distill.pseudo_label import label_from_logits, write_pseudo_labeled
from nlp_distill.distill.teacher_cache import TeacherLogitsCache
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.common import pick_device, setup_logging
from procedures.tagger import train_student

logger = logging.getLogger(__name__)


def load_teacher(kd: KDConfig, device) -> TransformerTokenClassifier:
    if not kd.teacher_model_path:
        raise ValueError("--teacher_model_path is required (a folder written by `nlp-train transformer_token`)")
    teacher = TransformerTokenClassifier.from_pretrained(kd.teacher_model_path)
    if kd.teacher_max_seq_len and teacher.config.max_seq_length != kd.teacher_max_seq_len:
        cfg = teacher.config.replace(max_seq_length=kd.teacher_max_seq_len)
        teacher = TransformerTokenClassifier(teacher.model, teacher.tokenizer, teacher.labels, cfg)
    return teacher.to(device)


def _distiller(teacher, kd: KDConfig, labels, sentences: List[Sentence], out: Path) -> TeacherStudentDistill:
    dist = TeacherStudentDistill(teacher, kd.temperature, kd.dist_w, kd.student_w, kd.loss_function)
    dist.check_labels(labels)  # fail before spending time on the teacher pass
    cache = None
    if kd.use_cache:
        t = time.perf_counter()
        cache = TeacherLogitsCache.build(teacher, [s.tokens for s in sentences], out / "teacher_cache",
                                         kd.teacher_batch_size)
        logger.info("teacher logits ready in %.1fs", time.perf_counter() - t)
    dist.attach(labels, [s.tokens for s in sentences], cache)
    return dist


def do_kd_training(data_dir, output_dir, tagger: TaggerConfig, trainer: TrainerConfig, data: StudentDataConfig,
                   kd: KDConfig, device: Optional[str] = None, resume: bool = False) -> Dict[str, Any]:
    """Student trained on gold labels + the teacher's soft targets over the training set."""
    out = Path(output_dir)
    setup_logging(out)
    dev_ = pick_device(device)
    d = load_data_dir(data_dir)
    teacher = load_teacher(kd, dev_)
    dist = _distiller(teacher, kd, d.labels, d.train, out)
    return train_student(out, d.train, d.dev, d.test, d.labels, tagger, trainer, data, distiller=dist, device=device,
                         resume=resume, run_config={"task": "tagger_kd", "data_dir": str(data_dir), "kd": kd})


def read_unlabeled(path, limit: Optional[int]) -> List[Sentence]:
    sents = list(islice(iter_unlabeled(path), limit)) if limit is not None else list(iter_unlabeled(path))
    if not sents:
        raise ValueError(f"{path}: no unlabeled sentences")
    return sents


def do_kd_pseudo_training(data_dir, output_dir, tagger: TaggerConfig, trainer: TrainerConfig,
                          data: StudentDataConfig, kd: KDConfig, pseudo: PseudoConfig,
                          device: Optional[str] = None, resume: bool = False) -> Dict[str, Any]:
    """Student trained on gold (CE + KD) and on unlabeled text (pseudo-label CE + KD), both in full
    every epoch. Unlabeled sentences under ``pseudo.threshold`` keep the KD term only."""
    out = Path(output_dir)
    setup_logging(out)
    dev_ = pick_device(device)
    d = load_data_dir(data_dir)
    upath = pseudo.unlabeled_filename or (str(d.unlabeled_path) if d.unlabeled_path else "")
    if not upath:
        raise ValueError("--unlabeled_filename is required (or put unlabeled.txt in the data dir)")
    unl = read_unlabeled(upath, pseudo.max_unlabeled)
    logger.info("%d unlabeled sentences (%d words) from %s", len(unl), sum(len(s) for s in unl), upath)
    teacher = load_teacher(kd, dev_)
    everything = list(d.train) + unl
    dist = _distiller(teacher, kd, d.labels, everything, out)
    n_gold = len(d.train)
    if dist.cache is not None:
        logits_of = dist.cache.sentence
    else:  # no cache: one teacher pass here for the labels (KD still runs the teacher every step)
        computed = teacher.word_logits([s.tokens for s in unl], kd.teacher_batch_size)
        logits_of = lambda i: computed[i - n_gold]  # noqa: E731
    labeled = [label_from_logits(s.tokens, logits_of(n_gold + k), teacher.labels, pseudo.threshold)
               for k, s in enumerate(unl)]
    n_written, n_acc = write_pseudo_labeled(out / "pseudo_labeled.txt", labeled)
    logger.info("pseudo-labels: %d / %d sentences at confidence >= %.2f (written to %s)", n_acc, n_written,
                pseudo.threshold, out / "pseudo_labeled.txt")
    train = list(d.train) + [Sentence(p.sentence.tokens, p.sentence.tags if p.accepted else None) for p in labeled]
    weights = [1.0] * n_gold + [pseudo.unlabeled_weight] * len(unl)
    vocab_sents = train if data.vocab_from_unlabeled else list(d.train)
    return train_student(out, train, d.dev, d.test, d.labels, tagger, trainer, data, weights=weights,
                         vocab_sentences=vocab_sents, distiller=dist, device=device, resume=resume,
                         run_config={"task": "tagger_kd_pseudo", "data_dir": str(data_dir), "kd": kd, "pseudo": pseudo})
