"""Transfer sets: text the student never saw with gold tags (augmented copies of the training
sentences, unlabeled text), labeled by the teacher into a resumable ``TransferStore``, and the
whole KD training set assembled from them (``assemble_transfer_set``): gold sentences, copies and
unlabeled text, held in memory or streamed from stores, bound to the distiller."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.config import AugmentConfig, PseudoConfig
from nlp_distill.data.augment import augment_corpus, augment_corpus_indexed, choose_ops, iter_augment
from nlp_distill.data.batching import ConcatEncoded
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.unlabeled import count_sentences, detect_format, expand_inputs, iter_inputs
from nlp_distill.distill.pseudo_label import label_from_logits, write_pseudo_labeled
from nlp_distill.distill.store_features import StoreFeatures
from nlp_distill.distill.teacher_cache import ConcatLogits, TeacherLogitsCache, teacher_fingerprint
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError
from nlp_distill.utils import distributed as ddp

logger = logging.getLogger(__name__)


class Reiterable:
    """An iterable that can be walked more than once (each walk calls ``make``)."""

    def __init__(self, make: Callable[[], Iterator]) -> None:
        self.make = make

    def __iter__(self) -> Iterator:
        return self.make()


def label_augmented(teacher, train: Sequence[Sentence], augment: AugmentConfig, scheme: str, folder,
                    batch_size: int = 64, show_progress: bool = True) -> TransferStore:
    """Augment -> teacher labels -> store: ``augment.copies`` copies of each ``train`` sentence
    (``augment.ops``, seeded by ``augment.seed``), made one at a time and labeled by ``teacher``
    into ``folder``. Memory stays flat in the number of copies; a rerun keeps finished chunks.

    Args:
        teacher: anything with ``labels`` and ``word_logits`` (a model or an ensemble).
        scheme: the tagging scheme the operators keep valid (``LabelVocab.scheme``).
        batch_size: sentences per teacher batch.
    """
    def make(log: bool) -> Iterator[List[str]]:
        return (s.tokens for _, s in iter_augment(train, augment.copies, augment.ops, augment.seed, scheme, log=log))

    copies = Reiterable(lambda: make(True))
    # a silent counting pass (a second for 20k copies) gives the labeling progress its total
    total = sum(1 for _ in make(False)) if show_progress else None
    return TransferStore.label(teacher, copies, folder, batch_size=batch_size, total=total,
                               show_progress=show_progress)


def label_copies_in_memory(teacher, train: Sequence[Sentence], augment: AugmentConfig, scheme: str, path,
                           soft_targets: bool = False, batch_size: Optional[int] = None
                           ) -> Tuple[List[Sentence], Optional[List[np.ndarray]]]:
    """Augment -> teacher labels, held in memory: the ``train`` sentences plus ``augment.copies``
    copies of each (``--augment_ops auto`` chosen from ``len(train)``), the copies tagged by the
    teacher's argmax and written to ``path`` as CoNLL.

    Args:
        soft_targets: also return the teacher's word logits for every returned sentence.
        batch_size: sentences (windows) per teacher batch (default: the teacher's).

    Returns:
        (sentences: ``train`` then the tagged copies, logits (n_words, C) per sentence or ``None``)
    """
    train = list(train)
    augment = choose_ops(augment, len(train))
    aug = augment_corpus(train, augment.copies, augment.ops, augment.seed, scheme) if augment.copies else []
    aug_logits = teacher.word_logits([s.tokens for s in aug], batch_size) if aug else []
    labeled = [label_from_logits(s.tokens, lg, teacher.labels) for s, lg in zip(aug, aug_logits)]
    if aug:
        write_pseudo_labeled(path, labeled)
    targets = teacher.word_logits([s.tokens for s in train], batch_size) + list(aug_logits) if soft_targets else None
    return train + [p.sentence for p in labeled], targets


def label_text(teacher, path, folder, input_format: str = "auto", encoding: str = "utf-8",
               limit: Optional[int] = None, chunk: int = 2048, batch_size: int = 64,
               show_progress: bool = True) -> TransferStore:
    """Unlabeled text -> teacher labels -> store: the first ``limit`` sentences of ``path`` (a
    file, a folder of ``*.txt`` files, a glob or a comma list: ``expand_inputs``; raw text or
    CoNLL without tags, ``input_format`` ``auto`` detects each file's) labeled by ``teacher`` into
    ``folder`` in chunks of ``chunk`` sentences; a rerun keeps finished chunks.

    Raises:
        ConfigError: no such file.
    """
    paths = expand_inputs(path if path else "")
    total = None
    if show_progress:
        counts = [count_sentences(p, detect_format(p, encoding) if input_format == "auto" else input_format, encoding,
                                  limit) for p in paths]
        total = None if None in counts else min(sum(counts), limit) if limit is not None else sum(counts)
    sents = islice((s.tokens for s in iter_inputs(paths, input_format, encoding)), limit)
    store = TransferStore.label(teacher, sents, folder, chunk, batch_size, total=total, show_progress=show_progress)
    logger.info("%d unlabeled sentences from %s, labeled into %s", len(store), path, store.folder)
    return store


def write_store_labels(store: TransferStore, n: int, threshold: float, path, decode: str = "valid") -> Tuple[int, int]:
    """The teacher's argmax tags of the store's first ``n`` sentences as CoNLL (streamed; a
    sentence under ``threshold`` confidence is written untagged), on the main process only.

    Returns:
        (sentences, sentences at or above the threshold); (0, 0) on other torchrun ranks.
    """
    if not ddp.is_main():
        return 0, 0
    teacher_labels = LabelVocab(store.labels)
    items = (label_from_logits(toks, np.asarray(store.sentence(i)), teacher_labels, threshold, decode)
             for i, toks in enumerate(islice(store.iter_tokens(), n)))
    total, acc = write_pseudo_labeled(path, items)
    logger.info("teacher labels: %d / %d stored sentences at confidence >= %.2f (written to %s)", acc, total,
                threshold, path)
    return total, acc


def check_store_teacher(store: TransferStore, teacher) -> None:
    """Refuse a store labeled by another teacher than ``teacher`` (its logits would teach the
    student something else), naming the remedy when only the label list differs."""
    if store.key == teacher_fingerprint(teacher):
        return
    if store.labels != teacher.labels.labels:  # same teacher, head not cut to the data's labels
        raise ConfigError(f"--transfer_store {store.folder} holds the labels {store.labels}, the teacher here "
                          f"predicts the data's {teacher.labels.labels}: label the text again with "
                          "`nlp-train label_unlabeled --data_dir DATA_DIR ...`")
    raise ConfigError(f"--transfer_store {store.folder} was labeled by another teacher than --teacher_model_path")


class Streamed(NamedTuple):
    """Teacher-labeled sentences read from a transfer store during training (not held in memory)."""

    name: str  # "augment" | "unlabeled": subfolder of OUTPUT_DIR/features
    store: TransferStore
    n: int  # the store's first n sentences are used
    threshold: float  # teacher confidence under which a sentence keeps KD only
    weight: float  # loss weight of each sentence
    labels_file: str  # the teacher's tags written here as CoNLL
    decode: str = "valid"  # how the teacher's tags are decoded (``pseudo_label.pseudo_tags``)


@dataclass
class TransferSet:
    """The student's training data of a distillation run, already bound to its distiller.

    Attributes:
        sentences: gold sentences, then teacher-tagged augmented copies, then unlabeled sentences
            (tags ``None`` under the confidence threshold: KD only), all held in memory.
        weights: loss weight of each of ``sentences``.
        vocab_sentences: the text the student's vocabularies come from (gold only, or everything
            with ``vocab_from_unlabeled``; streamed stores are read again on each walk).
        streamed: stores whose sentences follow ``sentences`` (read from disk batch by batch).
        labels: the student's labels.
        output_dir: the run folder (``features/`` of the streamed stores goes there).
    """

    sentences: List[Sentence]
    weights: List[float]
    vocab_sentences: Iterable[Sentence]
    streamed: List[Streamed]
    labels: LabelVocab
    output_dir: Path

    def features(self) -> Optional[Callable[[Any], ConcatEncoded]]:
        """``model -> rows of every streamed store`` (they need the student's vocabularies), for
        ``train_student(extra=...)``; ``None`` when nothing is streamed."""
        if not self.streamed:
            return None

        def make(model) -> ConcatEncoded:
            return ConcatEncoded([StoreFeatures(s.store, model.word_vocab, model.char_vocab, self.labels,
                                                model.config.max_word_length, self.output_dir / "features" / s.name,
                                                s.threshold, s.weight, s.n, s.decode) for s in self.streamed])
        return make


def streams_augmentation(dist: TeacherStudentDistill) -> bool:
    """Whether augmented copies go through a transfer store (labeled in chunks, read from disk:
    memory flat in the number of copies). Not for hidden-state losses or ``--no_cache`` (a store
    holds logits only) nor for out-of-fold teachers (which route each copy by its source)."""
    return dist.kd.logits_only and not dist.teacher.routed


def attach_transfer_set(dist: TeacherStudentDistill, labels: LabelVocab, own: List[Sentence], out: Path,
                        streamed: Sequence[Streamed], show_progress: bool = True) -> None:
    """Bind ``own`` sentences (teacher logits from the cache, built once under ``out`` or
    ``kd.cache_dir``) followed by the ``streamed`` stores' sentences to the distiller."""
    kd = dist.kd
    if streamed and not kd.logits_only:
        raise ConfigError("--transfer_store holds logits only: it cannot be combined with --no_cache or hidden-state losses")
    cache = None
    if kd.use_cache and (own or not streamed):  # text alone (no gold, no copies): the stores hold every logit
        t = time.perf_counter()
        with ddp.main_first():  # under torchrun, rank 0 runs the teacher; the others read its cache
            cache = TeacherLogitsCache.build(dist.teacher, [s.tokens for s in own],
                                             Path(kd.cache_dir) if kd.cache_dir else out / "teacher_cache",
                                             kd.teacher_batch_size, show_progress=show_progress, hidden=dist.uses_hidden)
        logger.info("teacher logits ready in %.1fs", time.perf_counter() - t)
    if streamed:
        first = [(cache, len(own))] if cache is not None else []
        dist.attach(labels, None, ConcatLogits([*(c for c, _ in first), *(s.store for s in streamed)],
                                               [*(n for _, n in first), *(s.n for s in streamed)]))
    else:
        dist.attach(labels, [s.tokens for s in own], cache)


def teacher_labeled(dist: TeacherStudentDistill, first: int, sentences: Sequence[Sentence], threshold: float,
                    path: Path) -> List[Sentence]:
    """Teacher argmax tags for ``sentences`` (rows ``first..`` of the distiller's data), written to
    ``path`` as CoNLL; sentences under ``threshold`` come back untagged (KD only)."""
    teacher = dist.teacher
    if dist.cache is not None:
        logits = [dist.cache.sentence(first + k) for k in range(len(sentences))]
    else:  # no cache: one teacher pass here for the labels (KD still runs the teacher every step)
        logits = teacher.word_logits([s.tokens for s in sentences], dist.kd.teacher_batch_size)
    labeled = [label_from_logits(s.tokens, lg, teacher.labels, threshold, dist.kd.pseudo_decode)
               for s, lg in zip(sentences, logits)]
    if ddp.is_main():
        n, acc = write_pseudo_labeled(path, labeled)
    else:
        n, acc = len(labeled), sum(p.accepted for p in labeled)
    logger.info("teacher labels: %d / %d sentences at confidence >= %.2f (written to %s)", acc, n, threshold, path)
    return [Sentence(p.sentence.tokens, p.sentence.tags if p.accepted else None) for p in labeled]


def _copies(dist: TeacherStudentDistill, train: Sequence[Sentence], augment: AugmentConfig, scheme: str, out: Path,
            show_progress: bool) -> Tuple[List[Streamed], List[Sentence]]:
    """The augmented copies: through ``out/augment_store`` when they can stream (a resumed run keeps
    its finished chunks), else in memory, untagged (the teacher labels them, not the operators).
    Out-of-fold teachers are told which training sentence each sentence comes from."""
    if augment.copies and streams_augmentation(dist):
        store = label_augmented(dist.teacher, train, augment, scheme, out / "augment_store", dist.kd.teacher_batch_size,
                                show_progress)
        return [Streamed("augment", store, len(store), 0.0, 1.0, "augmented.txt", dist.kd.pseudo_decode)], []
    indexed = augment_corpus_indexed(train, augment.copies, augment.ops, augment.seed, scheme) if augment.copies else []
    aug = [Sentence(s.tokens) for _, s in indexed]
    if dist.teacher.routed:  # with or without copies: each goes to its fold's teacher
        dist.teacher.set_route([s.tokens for s in train] + [s.tokens for s in aug],
                               list(range(len(train))) + [i for i, _ in indexed])
    return [], aug


def _vocab_text(gold: Sequence[Sentence], sentences: List[Sentence], streamed: Sequence[Streamed],
                vocab_from_unlabeled: bool) -> Iterable[Sentence]:
    """Gold only, or every training sentence (streamed ones read again on each walk)."""
    if not vocab_from_unlabeled:
        return list(gold)
    if streamed:
        return Reiterable(lambda: chain(sentences, *((Sentence(t) for t in islice(src.store.iter_tokens(), src.n))
                                                     for src in streamed)))
    return sentences


def assemble_transfer_set(*, distiller: TeacherStudentDistill, train: Sequence[Sentence], labels: LabelVocab,
                          output_dir, augment: AugmentConfig = AugmentConfig(copies=0),
                          unlabeled: Sequence[Sentence] = (), pseudo: Optional[PseudoConfig] = None,
                          store: Optional[TransferStore] = None, vocab_from_unlabeled: bool = True,
                          show_progress: bool = True) -> TransferSet:
    """Gold + teacher-labeled augmented copies + teacher-labeled unlabeled text as one training
    set, attached to ``distiller``. The copies go through a store when they can
    (``streams_augmentation``); ``store`` (from ``label_text``) is streamed after them.

    Writes to ``output_dir``: ``teacher_cache/`` (unless ``kd.cache_dir``), ``augment_store/``,
    ``augmented.txt`` and ``pseudo_labeled.txt`` (the teacher's tags, for reading).

    Args:
        distiller: its teacher labels everything; its ``kd`` decides cache and losses.
        train: gold sentences; labels: the student's labels.
        augment: copies per gold sentence (``ops`` already chosen: ``choose_ops``).
        unlabeled: unlabeled sentences held in memory; store: unlabeled sentences on disk.
        pseudo: confidence threshold, weight and limit of the unlabeled part (default: 0, 1, all).
        vocab_from_unlabeled: build the student's vocabularies from every sentence, not gold only.
    """
    out, pseudo = Path(output_dir), pseudo or PseudoConfig()
    streamed, aug = _copies(distiller, train, augment, labels.scheme, out, show_progress)
    if store is not None:
        n = min(len(store), pseudo.max_unlabeled or len(store))
        streamed.append(Streamed("unlabeled", store, n, pseudo.threshold, pseudo.unlabeled_weight, "pseudo_labeled.txt",
                                 distiller.kd.pseudo_decode))
    attach_transfer_set(distiller, labels, list(train) + aug + list(unlabeled), out, streamed, show_progress)
    sentences = list(train)
    if aug:
        sentences += teacher_labeled(distiller, len(train), aug, 0.0, out / "augmented.txt")
    if unlabeled:
        sentences += teacher_labeled(distiller, len(train) + len(aug), unlabeled, pseudo.threshold,
                                     out / "pseudo_labeled.txt")
    weights = [1.0] * (len(train) + len(aug)) + [pseudo.unlabeled_weight] * len(unlabeled)
    for src in streamed:
        write_store_labels(src.store, src.n, src.threshold, out / src.labels_file, src.decode)
    return TransferSet(sentences, weights, _vocab_text(train, sentences, streamed, vocab_from_unlabeled), streamed,
                       labels, out)
