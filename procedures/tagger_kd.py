"""Distillation runs: ``do_kd_training`` (gold + KD, plus an augmented transfer set) and
``do_kd_pseudo_training`` (the same plus unlabeled text). Every sentence that is not gold (an
augmented copy or unlabeled text) is labeled by the teacher: its soft targets (KD) and its argmax
(pseudo-label loss, above the confidence threshold)."""
from __future__ import annotations

import logging
import time
from itertools import chain, islice
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from nlp_distill.config import (AugmentConfig, KDConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig,
                                TaggerConfig, TrainerConfig)
from nlp_distill.data.augment import augment_corpus_indexed, choose_ops
from nlp_distill.data.batching import ConcatEncoded
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.distill.ensemble import OutOfFoldTeachers
from nlp_distill.distill.pseudo_label import label_from_logits, write_pseudo_labeled
from nlp_distill.distill.store_features import StoreFeatures
from nlp_distill.distill.teacher_cache import ConcatLogits, TeacherLogitsCache, teacher_fingerprint
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.distill.teachers import load_teacher, teacher_scores
from nlp_distill.distill.transfer_set import Reiterable, label_augmented, label_text, write_store_labels
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError
from nlp_distill.utils import distributed as ddp
from procedures.common import RunOptions, pick_device, run_folder
from procedures.tagger import student_configs, train_student

logger = logging.getLogger(__name__)


class Streamed(NamedTuple):
    """Teacher-labeled sentences read from a transfer store during training (not held in memory)."""

    name: str  # "augment" | "unlabeled": subfolder of OUTPUT_DIR/features
    store: TransferStore
    n: int  # the store's first n sentences are used
    threshold: float  # teacher confidence under which a sentence keeps KD only
    weight: float  # loss weight of each sentence
    labels_file: str  # the teacher's tags written here as CoNLL


def _attach(dist: TeacherStudentDistill, labels, own: List[Sentence], out: Path, streamed: Sequence[Streamed],
            show_progress: bool = True) -> None:
    """Bind ``own`` sentences (teacher logits from the cache) followed by the ``streamed`` stores'
    sentences (logits read from the stores) to the distiller."""
    kd = dist.kd
    if streamed and not kd.logits_only:
        raise ConfigError("--transfer_store holds logits only: it cannot be combined with --no_cache or hidden-state losses")
    cache = None
    if kd.use_cache:
        t = time.perf_counter()
        with ddp.main_first():  # under torchrun, rank 0 runs the teacher; the others read its cache
            cache = TeacherLogitsCache.build(dist.teacher, [s.tokens for s in own],
                                             Path(kd.cache_dir) if kd.cache_dir else out / "teacher_cache",
                                             kd.teacher_batch_size, show_progress=show_progress, hidden=dist.uses_hidden)
        logger.info("teacher logits ready in %.1fs", time.perf_counter() - t)
    if streamed:
        dist.attach(labels, None, ConcatLogits([cache, *(s.store for s in streamed)], [len(own), *(s.n for s in streamed)]))
    else:
        dist.attach(labels, [s.tokens for s in own], cache)


def streams_augmentation(dist: TeacherStudentDistill) -> bool:
    """Whether augmented copies go through a transfer store (labeled in chunks, read from disk:
    memory flat in the number of copies). Not for hidden-state losses or ``--no_cache`` (a store
    holds logits only) nor for out-of-fold teachers (which route each copy by its source)."""
    return dist.kd.logits_only and not isinstance(dist.teacher, OutOfFoldTeachers)


def _augment_store(teacher, d: TaggingData, augment: AugmentConfig, kd: KDConfig, out: Path,
                   show_progress: bool = True) -> Streamed:
    """``augment.copies`` copies of each training sentence, made one at a time and labeled by the
    teacher into ``OUTPUT_DIR/augment_store`` (a resumed run keeps its finished chunks)."""
    store = label_augmented(teacher, d.train, augment, d.labels.scheme, out / "augment_store", kd.teacher_batch_size,
                            show_progress)
    return Streamed("augment", store, len(store), 0.0, 1.0, "augmented.txt")


def _teacher_labeled(dist: TeacherStudentDistill, teacher, first: int, sentences: Sequence[Sentence], threshold: float,
                     batch_size: int, path: Path) -> List[Sentence]:
    """Teacher argmax tags for ``sentences`` (rows ``first..`` of the distiller's data), written to
    ``path``; sentences under ``threshold`` come back untagged (KD only)."""
    if dist.cache is not None:
        logits = [dist.cache.sentence(first + k) for k in range(len(sentences))]
    else:  # no cache: one teacher pass here for the labels (KD still runs the teacher every step)
        logits = teacher.word_logits([s.tokens for s in sentences], batch_size)
    labeled = [label_from_logits(s.tokens, lg, teacher.labels, threshold) for s, lg in zip(sentences, logits)]
    if ddp.is_main():
        n, acc = write_pseudo_labeled(path, labeled)
    else:
        n, acc = len(labeled), sum(p.accepted for p in labeled)
    logger.info("teacher labels: %d / %d sentences at confidence >= %.2f (written to %s)", acc, n, threshold, path)
    return [Sentence(p.sentence.tokens, p.sentence.tags if p.accepted else None) for p in labeled]


def _kd_run(task: str, data_dir, out: Path, d: TaggingData, tagger: TaggerConfig, trainer: TrainerConfig,
            data: StudentDataConfig, kd: KDConfig, augment: AugmentConfig, unlabeled: Sequence[Sentence],
            pseudo: Optional[PseudoConfig], run: RunOptions, store: Optional[TransferStore] = None,
            text: Optional[Path] = None) -> Dict[str, Any]:
    """Gold + teacher-labeled augmented copies + teacher-labeled unlabeled text, one training set.
    The copies go through a transfer store when they can (``streams_augmentation``); with ``store``
    (or ``text``, labeled into ``OUTPUT_DIR/transfer_store`` first), so does the unlabeled part."""
    augment = choose_ops(augment, len(d.train))  # --augment_ops auto: from the amount of gold data
    teacher = load_teacher(kd.teacher_model_path, pick_device(run.device), d.labels, kd.teacher_max_seq_len)
    if text is not None:
        store = label_text(teacher, text, out / "transfer_store", pseudo.input_format, run.encoding, pseudo.max_unlabeled,
                           batch_size=kd.teacher_batch_size, show_progress=trainer.show_progress)
        if not len(store):
            raise ConfigError(f"{text}: no unlabeled sentences")
    if store is not None and store.key != teacher_fingerprint(teacher):
        if store.labels != teacher.labels.labels:  # same teacher, head not cut to the data's labels
            raise ConfigError(f"--transfer_store {store.folder} holds the labels {store.labels}, the teacher here "
                              f"predicts the data's {teacher.labels.labels}: label the text again with "
                              f"`nlp-train label_unlabeled --data_dir {data_dir} ...`")
        raise ConfigError(f"--transfer_store {store.folder} was labeled by another teacher than --teacher_model_path")
    scores = teacher_scores(teacher, d.dev, d.test)
    dist = TeacherStudentDistill(teacher, kd)
    dist.check_labels(d.labels)  # fail before spending time on the teacher pass
    streamed: List[Streamed] = []
    aug: List[Sentence] = []
    indexed: List = []
    if augment.copies and streams_augmentation(dist):
        streamed.append(_augment_store(teacher, d, augment, kd, out, trainer.show_progress))
    elif augment.copies:
        indexed = augment_corpus_indexed(d.train, augment.copies, augment.ops, augment.seed, d.labels.scheme)
        aug = [Sentence(s.tokens) for _, s in indexed]  # the teacher labels them, not the operators
    if isinstance(teacher, OutOfFoldTeachers):  # with or without copies: train sentences go to their fold's teacher
        teacher.set_route([s.tokens for s in d.train] + [s.tokens for s in aug],
                          list(range(len(d.train))) + [i for i, _ in indexed])
    if store is not None:
        n = min(len(store), pseudo.max_unlabeled or len(store))
        streamed.append(Streamed("unlabeled", store, n, pseudo.threshold, pseudo.unlabeled_weight, "pseudo_labeled.txt"))
    _attach(dist, d.labels, list(d.train) + aug + list(unlabeled), out, streamed, trainer.show_progress)
    train = list(d.train)
    if aug:
        train += _teacher_labeled(dist, teacher, len(d.train), aug, 0.0, kd.teacher_batch_size, out / "augmented.txt")
    if unlabeled:
        train += _teacher_labeled(dist, teacher, len(d.train) + len(aug), unlabeled,
                                  pseudo.threshold if pseudo else 0.0, kd.teacher_batch_size, out / "pseudo_labeled.txt")
    weights = [1.0] * (len(d.train) + len(aug)) + [pseudo.unlabeled_weight if pseudo else 1.0] * len(unlabeled)
    for src in streamed:
        write_store_labels(src.store, src.n, src.threshold, out / src.labels_file)
    if not data.vocab_from_unlabeled:
        vocab_sents: Any = list(d.train)
    elif streamed:
        vocab_sents = Reiterable(lambda: chain(train, *((Sentence(t) for t in islice(src.store.iter_tokens(), src.n))
                                                         for src in streamed)))
    else:
        vocab_sents = train
    return train_student(out, train, d.dev, d.test, d.labels, tagger, trainer, data, weights=weights,
                         vocab_sentences=vocab_sents, distiller=dist, run=run, teacher_scores=scores,
                         extra=_store_features(streamed, out, d.labels) if streamed else None)


def _store_features(streamed: Sequence[Streamed], out: Path, labels) -> Callable:
    """``model -> rows of every streamed store`` (the features need the student's vocabularies)."""
    def make(model):
        return ConcatEncoded([StoreFeatures(s.store, model.word_vocab, model.char_vocab, labels,
                                            model.config.max_word_length, out / "features" / s.name, s.threshold,
                                            s.weight, s.n) for s in streamed])
    return make


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
        d = load_data_dir(data_dir, encoding=run.encoding)
        return _kd_run("tagger_kd", data_dir, out, d, tagger, trainer, data, kd, augment, [], None, run)


def unlabeled_path(pseudo: PseudoConfig, d: TaggingData, data_dir) -> Path:
    """``--unlabeled_filename`` as given, else inside DATA_DIR; default DATA_DIR/unlabeled.txt."""
    name = pseudo.unlabeled_filename
    if not name:
        if d.unlabeled_path is None:
            raise ConfigError(f"--unlabeled_filename is required ({data_dir} has no unlabeled.txt)")
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
    KD), all of it every epoch. Unlabeled sentences under ``pseudo.threshold`` keep KD only."""
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger_kd_pseudo", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer,
                "data": data, "kd": kd, "augment": augment, "pseudo": pseudo}
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding)
        store = TransferStore(pseudo.transfer_store) if pseudo.transfer_store else None
        unl: List[Sentence] = []
        text = None
        if store is None:
            upath = unlabeled_path(pseudo, d, data_dir)
            if kd.logits_only:  # the text goes through a store (flat memory)
                text = upath
            else:  # the teacher's hidden states (or no cache) need the sentences in memory
                unl = read_unlabeled(upath, pseudo.max_unlabeled, pseudo.input_format, run.encoding)
                logger.info("%d unlabeled sentences (%d words) from %s", len(unl), sum(len(s) for s in unl), upath)
        return _kd_run("tagger_kd_pseudo", data_dir, out, d, tagger, trainer, data, kd, augment, unl, pseudo, run,
                       store, text)
