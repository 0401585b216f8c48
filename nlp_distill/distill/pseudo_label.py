"""Pseudo-labels: the teacher's best valid tags over unlabeled text (or its repaired argmax), with
a per-sentence confidence. A data step: it yields ordinary
sentences (plus weights) that any student trains on."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Iterator, List, Sequence, Tuple

import numpy as np

from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import PLAIN, LabelVocab, repair
from nlp_distill.io import atomic_open
from nlp_distill.modules.label_probs import softmax
from nlp_distill.modules.viterbi import best_valid_paths

logger = logging.getLogger(__name__)


@dataclass
class PseudoLabeled:
    """A pseudo-labeled sentence: tags (scheme-valid), confidence in [0, 1], whether it passed."""

    sentence: Sentence
    confidence: float
    accepted: bool


DECODES = ("valid", "argmax")


def pseudo_tags(logits: np.ndarray, labels: LabelVocab, decode: str = "valid") -> Tuple[List[str], float]:
    """Tags of ``logits`` (n_words, C) and a confidence (the mean over words of the teacher's max
    probability).

    Args:
        decode: ``valid``: the most probable sequence the scheme allows (``best_valid_paths``: no
            orphan I-X); ``argmax``: each word's most probable tag, then ``repair`` (an orphan I-X
            starts an X entity, so it keeps every entity the argmax has).
    """
    probs = softmax(logits)  # (n, C) float32
    if decode == "argmax":
        tags = labels.decode(probs.argmax(-1).tolist())
        tags = tags if labels.scheme in ("IO", PLAIN) else repair(tags, labels.scheme)
    elif decode == "valid":
        tags = labels.decode(best_valid_paths([logits], labels)[0])
    else:
        raise ValueError(f"decode {decode!r}: one of {', '.join(DECODES)}")
    return tags, (float(probs.max(-1).mean()) if len(logits) else 0.0)


def label_from_logits(tokens: Sequence[str], logits: np.ndarray, labels: LabelVocab, threshold: float = 0.0,
                      decode: str = "valid") -> PseudoLabeled:
    """The teacher's pseudo-label of one sentence (see :func:`pseudo_tags`)."""
    tags, conf = pseudo_tags(logits, labels, decode)
    return PseudoLabeled(Sentence(list(tokens), tags), conf, conf >= threshold)


def pseudo_label(teacher, sentences: Iterable[Sequence[str]], threshold: float = 0.0, batch_size: int = 64,
                 chunk: int = 2048) -> Iterator[PseudoLabeled]:
    """Stream pseudo-labels for token lists, ``chunk`` sentences through the teacher at a time."""
    it = iter(sentences)
    while True:
        block = [list(s) for s in islice(it, chunk)]
        if not block:
            return
        for toks, lg in zip(block, teacher.word_logits(block, batch_size)):
            yield label_from_logits(toks, lg, teacher.labels, threshold)


def write_pseudo_labeled(path, items: Iterable[PseudoLabeled]) -> Tuple[int, int]:
    """Stream pseudo-labels to CoNLL: ``token<TAB>tag<TAB>confidence`` (the sentence's confidence
    on each of its lines). Written to a temporary file then renamed.

    Returns:
        (sentences written, sentences at or above the threshold)
    """
    n = acc = 0
    with atomic_open(path) as f:
        for it in items:
            n += 1
            acc += it.accepted
            for tok, tag in zip(it.sentence.tokens, it.sentence.tags):
                f.write(f"{tok}\t{tag}\t{it.confidence:.4f}\n")
            f.write("\n")
    return n, acc
