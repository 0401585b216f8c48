"""Distillation without gold tags: a held-out slice of the teacher-labeled text picks the
student's best epoch, and the student is scored by its *agreement* with the teacher (entity F1,
or token accuracy for plain tags, of the student's tags against the teacher's on the same text).

The held-out slice is the last ``heldout_size(n)`` sentences of the ``n`` unlabeled sentences
(5%, but at least 100 or a fifth of the text, at most 1000): deterministic, and never trained on
(the student reads the first ``n - k`` sentences of the store)."""
from __future__ import annotations

import logging
import math
from itertools import islice
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import PLAIN, LabelVocab, entity_spans
from nlp_distill.distill.pseudo_label import pseudo_tags
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.errors import ConfigError
from nlp_distill.metrics import evaluate_split

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.05  # of the unlabeled sentences, held out to pick the epoch when there is no gold dev
HELDOUT_MAX = 1000  # sentences: enough for a stable F1; more text is worth more as training data
# 5% of a small text is too few to pick an epoch (15 of 300 tweets: the agreement
# stayed 0 and early stopping kept an all-O first epoch); a fifth of it, up to 100, is more
HELDOUT_MIN = 100
AGREEMENT = "agreement F1 with the teacher"  # what the dev score is without gold dev tags


def heldout_size(n: int) -> int:
    """Sentences held out of ``n`` unlabeled ones: 5%, but at least ``min(100, n // 5)`` (and 1),
    at most 1000.

    Raises:
        ConfigError: fewer than 2 sentences (nothing would be left to train on).
    """
    if n < 2:
        raise ConfigError(f"{n} unlabeled sentence{'s' if n != 1 else ''}: distilling without gold dev.txt needs at "
                          "least 2 (one is held out to pick the best epoch); add text or a gold dev.txt")
    return min(HELDOUT_MAX, max(1, math.ceil(HELDOUT_FRACTION * n), min(HELDOUT_MIN, n // 5)))


def heldout_from_store(store: TransferStore, n: int) -> Tuple[List[Sentence], int]:
    """Hold out the last sentences of the store's first ``n``, tagged with the teacher's tags
    (its stored logits, decoded as the pseudo-labels are).

    Returns:
        (the held-out sentences, the number of sentences left to train on: the first ones)
    """
    k = heldout_size(n)
    teacher_labels = LabelVocab(store.labels)
    held = [Sentence(list(toks), pseudo_tags(np.asarray(store.sentence(i)), teacher_labels)[0])
            for i, toks in enumerate(islice(store.iter_tokens(), n)) if i >= n - k]
    return held, n - k


def heldout_from_sentences(teacher, sentences: Sequence[Sentence]) -> Tuple[List[Sentence], List[Sentence]]:
    """Hold out the last sentences of in-memory unlabeled text, tagged by ``teacher.predict``.

    Returns:
        (the held-out sentences, the sentences left to train on)
    """
    k = heldout_size(len(sentences))
    rest, held = list(sentences[: len(sentences) - k]), list(sentences[len(sentences) - k:])
    return [Sentence(s.tokens, t) for s, t in zip(held, teacher.predict([s.tokens for s in held]))], rest


def warn_without_entities(held: Sequence[Sentence], labels: LabelVocab) -> None:
    """Warn when the teacher tags no entity in the held-out text: the agreement F1 there is then 0
    whatever the student does (its token accuracy still compares the two)."""
    if labels.scheme != PLAIN and not any(entity_spans(s.tags) for s in held):
        logger.warning("the teacher tags no entity in the %d held-out sentences: %s is 0 there whatever the student "
                       "does (its token accuracy is in metrics.json): give more text, a gold dev.txt, or "
                       "--metric_for_best accuracy", len(held), AGREEMENT)


def teacher_tagged(teacher, sentences: Sequence[Sentence]) -> List[Sentence]:
    """``sentences`` with the teacher's tags in place of theirs (the reference of an agreement score)."""
    return [Sentence(s.tokens, t) for s, t in zip(sentences, teacher.predict([s.tokens for s in sentences]))]


def agreement_scores(predict: Callable[[List[List[str]]], List[List[str]]], dev: Sequence[Sentence],
                     test: Sequence[Sentence], text: str) -> Dict[str, Any]:
    """The student's scores against the teacher's tags: ``{"dev", "test", "text"}``.

    Args:
        predict: the student's ``token lists -> tag lists``.
        dev, test: teacher-tagged sentences (``test`` may be empty: ``None``).
        text: what the sentences are, for the reader of ``metrics.json``.
    """
    return {"dev": evaluate_split(predict, dev) if dev else None,
            "test": evaluate_split(predict, test) if test else None, "text": text}


def log_agreement(scores: Dict[str, Any], gold: Optional[Dict[str, Any]] = None) -> None:
    """One log line: the agreement with the teacher (and the gold scores when there are any)."""
    dev, test = scores.get("dev"), scores.get("test")
    logger.info("%s: dev %s, test %s (%s)%s", AGREEMENT, f"{dev['f1']:.4f}" if dev else "n/a",
                f"{test['f1']:.4f}" if test else "n/a", scores["text"],
                "" if not gold else f"; gold F1: dev {gold['dev']['f1']:.4f}, test "
                + (f"{gold['test']['f1']:.4f}" if gold.get("test") else "n/a"))
