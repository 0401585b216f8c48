"""Distillation runs: ``do_kd_training`` (gold + KD, plus an augmented transfer set) and
``do_kd_pseudo_training`` (the same plus unlabeled text). Every sentence that is not gold (an
augmented copy or unlabeled text) is labeled by the teacher: its soft targets (KD) and its argmax
(pseudo-label loss, above the confidence threshold). The run itself is ``distil_student``.

The student's labels are the teacher's (``teacher_labels``) unless DATA_DIR/labels.txt gives them.
``do_kd_pseudo_training`` also takes a DATA_DIR without train.txt: the student then learns from
the teacher-labeled text alone (and, without dev.txt, picks its epoch by agreement with the
teacher on held-out text)."""
from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional

from nlp_distill.config import (AugmentConfig, KDConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig,
                                TaggerConfig, TrainerConfig)
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.distill.teachers import teacher_labels
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError
from nlp_distill.training.student import distil_student
from procedures.common import RunOptions, run_folder
from procedures.tagger import student_configs

logger = logging.getLogger(__name__)


def do_kd_training(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
                   trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
                   kd: KDConfig = KDConfig(), augment: AugmentConfig = AugmentConfig(),
                   run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Student trained on gold labels + the teacher's soft targets over the training set and over
    ``augment.copies`` augmented copies of each training sentence."""
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger_kd", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer, "data": data,
                "kd": kd, "augment": augment}
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding, teacher_labels=teacher_labels(kd.teacher_model_path))
        return distil_student(output_dir=out, train=d.train, dev=d.dev, test=d.test, labels=d.labels, kd=kd,
                              tagger=tagger, trainer=trainer, data=data, augment=augment, encoding=run.encoding,
                              device=run.device, resume=run.resume).metrics


def unlabeled_path(pseudo: PseudoConfig, d: TaggingData, data_dir) -> Optional[Path]:
    """``--unlabeled_filename`` as given, else inside DATA_DIR; default DATA_DIR/unlabeled.txt;
    ``None`` when there is no text but gold train.txt (the student learns from those sentences
    and the teacher's labels of their augmented copies)."""
    name = pseudo.unlabeled_filename
    if not name:
        if d.unlabeled_path is None:
            if not d.train:
                raise ConfigError(f"{data_dir} has neither train.txt nor unlabeled.txt: put the text for the teacher to "
                                  f"label in {Path(data_dir) / 'unlabeled.txt'} (one sentence per line) or give "
                                  "--unlabeled_filename")
            logger.info("no unlabeled text (%s has no unlabeled.txt): distilling on the gold training sentences and "
                        "their augmented copies", data_dir)
            return None
        return Path(d.unlabeled_path)
    for p in (Path(name), Path(data_dir) / name):
        if p.is_file():
            return p
    raise ConfigError(f"--unlabeled_filename {name}: no such file (also looked in {data_dir})")


def read_unlabeled(path, limit: Optional[int], fmt: str = "auto", encoding: str = "utf-8") -> List[Sentence]:
    sents = list(islice(iter_unlabeled(path, None if fmt == "auto" else fmt, encoding=encoding), limit))
    if not sents:
        raise ConfigError(f"{path}: no unlabeled sentences")
    return sents


def do_kd_pseudo_training(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
                          trainer: TrainerConfig = StudentTrainerConfig(),
                          data: StudentDataConfig = StudentDataConfig(), kd: KDConfig = KDConfig(),
                          augment: AugmentConfig = AugmentConfig(), pseudo: PseudoConfig = PseudoConfig(),
                          run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Student trained on gold (CE + KD), augmented copies and unlabeled text (teacher labels +
    KD), all of it every epoch. Unlabeled sentences under ``pseudo.threshold`` keep KD only.

    ``data_dir`` may hold unlabeled text alone (no train.txt; dev.txt / test.txt optional, gold):
    the student then learns the teacher's labels from the teacher-labeled text, and without
    dev.txt its best epoch is picked by agreement with the teacher on held-out text. It may hold
    tagged train.txt alone too: without dev.txt the last of its sentences are held out as gold
    dev, and without text the student learns from train and its augmented copies."""
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger_kd_pseudo", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer,
                "data": data, "kd": kd, "augment": augment, "pseudo": pseudo}
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding, teacher_labels=teacher_labels(kd.teacher_model_path),
                          gold_optional=True)
        store = TransferStore(pseudo.transfer_store) if pseudo.transfer_store else None
        unl: List[Sentence] = []
        text = None
        upath = unlabeled_path(pseudo, d, data_dir) if store is None else None
        if upath is not None:
            if kd.logits_only:  # the text goes through a store (flat memory)
                text = upath
            else:  # the teacher's hidden states (or no cache) need the sentences in memory
                unl = read_unlabeled(upath, pseudo.max_unlabeled, pseudo.input_format, run.encoding)
                logger.info("%d unlabeled sentences (%d words) from %s", len(unl), sum(len(s) for s in unl), upath)
        return distil_student(output_dir=out, train=d.train, dev=d.dev, test=d.test, labels=d.labels, kd=kd,
                              tagger=tagger, trainer=trainer, data=data, augment=augment,
                              pseudo=pseudo if upath is not None or store is not None else None, unlabeled=unl,
                              unlabeled_store=store, unlabeled_file=text, encoding=run.encoding, device=run.device,
                              resume=run.resume).metrics
