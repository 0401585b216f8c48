"""Transfer-set augmentation for tagging (Dai & Adel, COLING 2020, plus tweet-style noise).

New sentences are made from the *training* sentences only. Each operator is a pure function
``(tokens, tags, rng, pools, p, scheme) -> (tokens, tags)`` that keeps tokens and tags aligned
and tags valid in the scheme. The tags an operator writes are only a guide: for distillation the
teacher relabels every augmented sentence, so label noise from augmentation is not inherited.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Sequence, Set, Tuple

from nlp_distill.config import AugmentConfig
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import OUTSIDE, _spans

logger = logging.getLogger(__name__)

Tokens = List[str]
Tags = List[str]

# chance that an operator fires per token (token, case, typo) or per segment / mention (others)
DEFAULT_PROBS: Dict[str, float] = {"token": 0.3, "mention": 0.5, "shuffle": 0.3, "case": 0.1, "typo": 0.05,
                                   "hashtag": 0.3}


@dataclass
class AugmentPools:
    """What operators draw from, built from training sentences only.

    Attributes:
        tokens_by_tag: tag -> training tokens with that tag (repeats kept: frequency-weighted).
        mentions_by_type: entity type -> token tuples of training mentions of that type.
    """

    tokens_by_tag: Dict[str, List[str]]
    mentions_by_type: Dict[str, List[Tuple[str, ...]]]

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sentence]) -> "AugmentPools":
        by_tag: Dict[str, List[str]] = defaultdict(list)
        mentions: Dict[str, List[Tuple[str, ...]]] = defaultdict(list)
        for s in sentences:
            if s.tags is None:
                continue
            for tok, tag in zip(s.tokens, s.tags):
                by_tag[tag].append(tok)
            for a, b, t in _spans(s.tags):
                mentions[t].append(tuple(s.tokens[a:b]))
        return cls(dict(by_tag), dict(mentions))


def span_tags(etype: str, n: int, scheme: str) -> Tags:
    """Tags of one ``n``-word mention of ``etype`` in ``scheme``."""
    if scheme == "IO":
        return [f"I-{etype}"] * n
    if scheme == "BIOES" and n == 1:
        return [f"S-{etype}"]
    tags = [f"B-{etype}"] + [f"I-{etype}"] * (n - 1)
    if scheme == "BIOES":
        tags[-1] = f"E-{etype}"
    return tags


def token_replace(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
                  scheme: str) -> Tuple[Tokens, Tags]:
    """Label-wise token replacement: a token becomes another training token with the same tag."""
    out = [rng.choice(pools.tokens_by_tag[g]) if rng.random() < p and pools.tokens_by_tag.get(g) else w
           for w, g in zip(tokens, tags)]
    return out, list(tags)


def mention_replace(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
                    scheme: str) -> Tuple[Tokens, Tags]:
    """A mention becomes another training mention of the same type (lengths may change)."""
    out_t: Tokens = []
    out_g: Tags = []
    pos = 0
    for a, b, etype in _spans(tags):
        out_t += tokens[pos:a]
        out_g += tags[pos:a]
        new = tuple(tokens[a:b])
        if rng.random() < p and pools.mentions_by_type.get(etype):
            new = rng.choice(pools.mentions_by_type[etype])
        out_t += list(new)
        out_g += span_tags(etype, len(new), scheme)
        pos = b
    return out_t + tokens[pos:], out_g + tags[pos:]


def _segments(tags: Tags) -> List[Tuple[int, int]]:
    """Runs of words that share a label type: each mention, and each maximal run of O."""
    segs: List[Tuple[int, int]] = []
    spans = _spans(tags)
    pos = 0
    for a, b, _ in spans:
        if a > pos:
            segs.append((pos, a))
        segs.append((a, b))
        pos = b
    if pos < len(tags):
        segs.append((pos, len(tags)))
    return segs


def shuffle_segments(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
                     scheme: str) -> Tuple[Tokens, Tags]:
    """Shuffle the words inside a same-label segment (tags stay by position, so stay valid)."""
    out = list(tokens)
    for a, b in _segments(tags):
        if b - a > 1 and rng.random() < p:
            seg = out[a:b]
            rng.shuffle(seg)
            out[a:b] = seg
    return out, list(tags)


def case_flip(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
              scheme: str) -> Tuple[Tokens, Tags]:
    """Casing noise of user text: a word becomes lower, UPPER or Title case."""
    flips = (str.lower, str.upper, str.title)
    return [rng.choice(flips)(w) if rng.random() < p else w for w in tokens], list(tags)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:  # drop a character
        return word[:i] + word[i + 1 :]
    if kind == 2:  # duplicate a character
        return word[: i + 1] + word[i] + word[i + 1 :]
    return word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i + 1 :]  # replace one


def typo(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
         scheme: str) -> Tuple[Tokens, Tags]:
    """Character typos (swap, drop, duplicate, replace) in alphabetic words of >= 3 letters."""
    return [_typo(w, rng) if len(w) >= 3 and w.isalpha() and rng.random() < p else w for w in tokens], list(tags)


def hashtag(tokens: Tokens, tags: Tags, rng: random.Random, pools: AugmentPools, p: float,
            scheme: str) -> Tuple[Tokens, Tags]:
    """Tweet markup: the first word of a mention gets a ``#`` or ``@`` prefix."""
    out = list(tokens)
    for a, _, _ in _spans(tags):
        if rng.random() < p and out[a][:1] not in ("#", "@"):
            out[a] = rng.choice("#@") + out[a]
    return out, list(tags)


OPERATORS: Dict[str, Callable[..., Tuple[Tokens, Tags]]] = {
    "token": token_replace, "mention": mention_replace, "shuffle": shuffle_segments, "case": case_flip,
    "typo": typo, "hashtag": hashtag,
}


SWAP_OPS = ("token", "mention")
NOISE_OPS = ("case", "typo", "hashtag")  # tweet noise: helps with ample gold data, hurts with little


def choose_ops(config: AugmentConfig, n_gold: int) -> AugmentConfig:
    """``config`` with concrete operators: ``--augment_ops auto`` becomes token,mention plus the
    tweet-noise operators when there are at least ``config.noise_min_sentences`` gold training
    sentences, token,mention alone below that (on WNUT-16 the noise won with 1,916 gold sentences
    and lost with 479; docs/benchmarks.md). The choice is logged; explicit operators pass through."""
    if config.ops != ["auto"]:
        return config
    noisy = n_gold >= config.noise_min_sentences
    ops = [*SWAP_OPS, *NOISE_OPS] if noisy else list(SWAP_OPS)
    if config.copies:
        logger.info("augment ops auto: %s (%d gold training sentences, %s --augment_noise_min_sentences %d)",
                    ",".join(ops), n_gold, ">=" if noisy else "<", config.noise_min_sentences)
    return config.replace(ops=ops)


def augment_sentence(sentence: Sentence, ops: Sequence[str], rng: random.Random, pools: AugmentPools,
                     scheme: str, probs: Dict[str, float] = DEFAULT_PROBS) -> Sentence:
    """Apply ``ops`` in order, each at its probability; returns a new tagged sentence."""
    tokens, tags = list(sentence.tokens), list(sentence.tags or [OUTSIDE] * len(sentence.tokens))
    for name in ops:
        tokens, tags = OPERATORS[name](tokens, tags, rng, pools, probs[name], scheme)
    return Sentence(tokens, tags)


def augment_corpus(sentences: Sequence[Sentence], copies: int, ops: Sequence[str], seed: int, scheme: str,
                   probs: Dict[str, float] = DEFAULT_PROBS, tries: int = 3) -> List[Sentence]:
    """Up to ``copies`` new sentences per tagged sentence, seeded and reproducible.

    A copy equal to a training sentence or to an earlier copy is redrawn (up to ``tries``
    times) and otherwise skipped, so the transfer set holds no duplicates.
    """
    return [s for _, s in augment_corpus_indexed(sentences, copies, ops, seed, scheme, probs, tries)]


def augment_corpus_indexed(sentences: Sequence[Sentence], copies: int, ops: Sequence[str], seed: int, scheme: str,
                           probs: Dict[str, float] = DEFAULT_PROBS, tries: int = 3) -> List[Tuple[int, Sentence]]:
    """``augment_corpus`` with each copy's source: ``(index in sentences, copy)`` pairs."""
    return list(iter_augment(sentences, copies, ops, seed, scheme, probs, tries))


def iter_augment(sentences: Sequence[Sentence], copies: int, ops: Sequence[str], seed: int, scheme: str,
                 probs: Dict[str, float] = DEFAULT_PROBS, tries: int = 3, log: bool = True
                 ) -> Iterator[Tuple[int, Sentence]]:
    """``augment_corpus_indexed`` one copy at a time (same copies, same order), for transfer sets
    too large to hold: it keeps only a 64-bit hash per sentence seen (for the duplicate check).
    ``log``: log the count of copies made at the end (off for a pass that only counts them)."""
    unknown = [o for o in ops if o not in OPERATORS]
    if unknown:
        raise ValueError(f"unknown augmentation operators {unknown}; known: {', '.join(OPERATORS)}")
    rng = random.Random(seed)
    pools = AugmentPools.from_sentences(sentences)
    seen: Set[int] = {hash(tuple(s.tokens)) for s in sentences}
    made = 0
    for i, s in enumerate(sentences):
        if s.tags is None or not s.tokens:
            continue
        for _ in range(copies):
            for _ in range(tries):
                new = augment_sentence(s, ops, rng, pools, scheme, probs)
                key = hash(tuple(new.tokens))
                if key not in seen and new.tokens:
                    seen.add(key)
                    made += 1
                    yield i, new
                    break
    if log:
        logger.info("augmentation: %d new sentences from %d (ops %s, %d copies, seed %d)", made, len(sentences),
                    ",".join(ops), copies, seed)
