"""Transfer sets: text the student never saw with gold tags (augmented copies of the training
sentences, unlabeled text), labeled by the teacher into a resumable ``TransferStore``."""
from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.config import AugmentConfig
from nlp_distill.data.augment import augment_corpus, choose_ops, iter_augment
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.unlabeled import count_sentences, detect_format, iter_unlabeled
from nlp_distill.distill.pseudo_label import label_from_logits, write_pseudo_labeled
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
    copies = Reiterable(lambda: (s.tokens for _, s in iter_augment(train, augment.copies, augment.ops, augment.seed,
                                                                    scheme)))
    # a counting pass (a second for 20k copies) gives the labeling bar its total and ETA
    total = sum(1 for _ in copies) if show_progress else None
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
    """Unlabeled text -> teacher labels -> store: the first ``limit`` sentences of ``path`` (raw
    text or CoNLL without tags, ``input_format`` ``auto`` detects it) labeled by ``teacher`` into
    ``folder`` in chunks of ``chunk`` sentences; a rerun keeps finished chunks.

    Raises:
        ConfigError: no such file.
    """
    if not path or not Path(path).is_file():
        raise ConfigError(f"--unlabeled_filename {path!r}: no such file")
    fmt = detect_format(path, encoding) if input_format == "auto" else input_format
    total = count_sentences(path, fmt, encoding, limit) if show_progress else None
    sents = islice((s.tokens for s in iter_unlabeled(path, fmt, encoding=encoding)), limit)
    store = TransferStore.label(teacher, sents, folder, chunk, batch_size, total=total, show_progress=show_progress)
    logger.info("%d unlabeled sentences from %s, labeled into %s", len(store), path, store.folder)
    return store


def write_store_labels(store: TransferStore, n: int, threshold: float, path) -> Tuple[int, int]:
    """The teacher's argmax tags of the store's first ``n`` sentences as CoNLL (streamed; a
    sentence under ``threshold`` confidence is written untagged), on the main process only.

    Returns:
        (sentences, sentences at or above the threshold); (0, 0) on other torchrun ranks.
    """
    if not ddp.is_main():
        return 0, 0
    teacher_labels = LabelVocab(store.labels)
    items = (label_from_logits(toks, np.asarray(store.sentence(i)), teacher_labels, threshold)
             for i, toks in enumerate(islice(store.iter_tokens(), n)))
    total, acc = write_pseudo_labeled(path, items)
    logger.info("teacher labels: %d / %d stored sentences at confidence >= %.2f (written to %s)", acc, total,
                threshold, path)
    return total, acc
