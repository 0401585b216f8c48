"""Student inputs that carry the teacher: one frozen vector per vocabulary word, computed once
from a (fine-tuned) teacher encoder and looked up by the student's word ids, so nothing of the
teacher is needed at inference (``pipeline``, compact and ONNX folders keep working).

A word's vector is the teacher's word-pooled last hidden state:

- ``word``: the word alone (``[CLS] word [SEP]``): a type-level view that every vocabulary word
  gets, including the pretrained-vector words never seen in the data (the tokenizer splits an
  unknown word into pieces, so every word gets a vector);
- ``context``: the mean over the word's occurrences in a corpus (the transfer set), pooled
  contextual embeddings (Akbik et al., 2019); words the corpus never holds take their ``word``
  vector, moved into the contextual space by the mean offset between the two views.

The states are reduced by PCA to ``dim`` and scaled to a fixed standard deviation. Word-alone
states are cached per word in a folder keyed by the teacher's fingerprint, so a second student of
the same teacher (another seed, size or vocabulary) only runs the teacher on words it lacks; a
cache written by another teacher is refused. ``context`` pools the corpus again on every run.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.data.vocab import Vocab
from nlp_distill.errors import ConfigError
from nlp_distill.io import atomic_open, read_json, write_json

logger = logging.getLogger(__name__)

MODES = ("word", "context")
META_FILE, WORDS_FILE, STATES_FILE = "meta.json", "words.json", "states.npy"
TARGET_STD = 0.5  # the scale of a freshly initialised embedding row (as vectors_from_teacher)


def _members(teacher) -> list:
    """An ensemble's members (their hidden states are concatenated), else the teacher itself."""
    return list(teacher.members)


def word_states(teacher, words: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Each word alone through the teacher (``[CLS] word [SEP]``): its last hidden states pooled
    over its sub-tokens as the teacher pools them (mean or first).

    Words run grouped by sub-token count, so a batch holds no padding (most words are one or
    two pieces: padding them to the teacher's usual multiple of 8 would double the cost).

    Returns:
        (N, H) float32; H is the sum of an ensemble's member widths.
    """
    return np.concatenate([_member_word_states(m, words, batch_size) for m in _members(teacher)], axis=1)


@torch.no_grad()
def _member_word_states(member, words: Sequence[str], batch_size: int) -> np.ndarray:
    """``word_states`` of one ``TransformerTokenClassifier``: (N, H) float32."""
    out = np.zeros((len(words), member.model.config.hidden_size), np.float32)
    if not len(words):
        return out
    limit = member.config.max_seq_length
    ids = member.tokenizer([[w] for w in words], is_split_into_words=True, truncation=True, max_length=limit)["input_ids"]
    by_len: Dict[int, List[int]] = defaultdict(list)
    for i, seq in enumerate(ids):
        by_len[len(seq)].append(i)
    was_training = member.training
    member.eval()
    try:
        for n, rows in sorted(by_len.items()):
            for a in range(0, len(rows), batch_size):
                idx = rows[a : a + batch_size]
                x = torch.tensor([ids[i] for i in idx], device=member.device)  # (B, n), no padding
                with member.autocast():
                    h = member.model(input_ids=x, attention_mask=torch.ones_like(x),
                                     output_hidden_states=True).hidden_states[-1]  # (B, n, H)
                pieces = h[:, 1 : max(n - 1, 2)]  # the word's sub-tokens, without [CLS] / [SEP]
                pooled = pieces[:, :1] if member.config.pooling == "first" else pieces
                out[idx] = pooled.float().mean(1).cpu().numpy()
    finally:
        member.train(was_training)
    return out


def context_states(teacher, sentences: Iterable[Sequence[str]], lowercase: bool, batch_size: int = 64,
                   chunk: int = 2048) -> Tuple[List[str], np.ndarray]:
    """Mean contextual state of every word type of ``sentences`` (pooled over its occurrences).

    Returns:
        (words, (N, H) float32 states), words lowercased when ``lowercase``.
    """
    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = defaultdict(int)

    def add(block: List[Sequence[str]]) -> None:
        per_member = [m.word_outputs(block, batch_size, hidden=True)[1] for m in _members(teacher)]
        for k, sent in enumerate(block):
            states = np.concatenate([pm[k] for pm in per_member], axis=1)  # (n_words, H)
            for w, h in zip(sent, states):
                key = w.lower() if lowercase else w
                if key in sums:
                    sums[key] += h
                else:
                    sums[key] = h.astype(np.float64)
                counts[key] += 1

    block: List[Sequence[str]] = []
    for s in sentences:
        if len(s):
            block.append(list(s))
        if len(block) == chunk:
            add(block)
            block = []
    if block:
        add(block)
    words = list(sums)
    states = np.stack([sums[w] / counts[w] for w in words]).astype(np.float32) if words else np.zeros((0, 0), np.float32)
    return words, states


class FeatureCache:
    """Raw teacher states per word in a folder: ``meta.json`` (teacher fingerprint, mode),
    ``words.json`` and ``states.npy`` (N, H). Written whole and replaced atomically."""

    def __init__(self, folder, key: str, mode: str) -> None:
        self.folder, self.key, self.mode = Path(folder), key, mode
        self.words: List[str] = []
        self.states = np.zeros((0, 0), np.float32)
        meta_path = self.folder / META_FILE
        if meta_path.is_file():
            meta = read_json(meta_path)
            if meta.get("teacher") != key or meta.get("mode") != mode:
                raise ConfigError(f"{self.folder}: teacher features of another teacher or mode ({meta.get('mode')}); "
                                  "point the feature cache elsewhere or delete it")
            self.words = list(read_json(self.folder / WORDS_FILE))
            self.states = np.load(self.folder / STATES_FILE)
            if len(self.words) != len(self.states):
                raise ConfigError(f"{self.folder / STATES_FILE}: {len(self.states)} rows for {len(self.words)} words "
                                  "(damaged cache: delete the folder)")

    def lookup(self) -> Dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def add(self, words: Sequence[str], states: np.ndarray) -> None:
        """Append ``states`` (N, H) of new ``words`` and rewrite the folder."""
        if not len(words):
            return
        self.states = states if not len(self.words) else np.concatenate([self.states, states])
        self.words = self.words + list(words)
        with atomic_open(self.folder / STATES_FILE, "wb") as f:
            np.save(f, self.states)
        write_json(self.folder / WORDS_FILE, self.words, indent=None)
        write_json(self.folder / META_FILE, {"teacher": self.key, "mode": self.mode, "words": len(self.words),
                                             "hidden": int(self.states.shape[1])})


def pca_project(states: np.ndarray, dim: int, target_std: float = TARGET_STD) -> np.ndarray:
    """(N, H) -> (N, dim): centred, projected on the top ``dim`` principal directions (zero
    columns beyond H), scaled so the result's standard deviation is ``target_std``."""
    x = states.astype(np.float64) - states.mean(0, keepdims=True)
    k = min(dim, x.shape[1], x.shape[0])
    _, _, vt = np.linalg.svd(x, full_matrices=False)  # vt: (min(N, H), H)
    out = np.zeros((len(x), dim), np.float64)
    out[:, :k] = x @ vt[:k].T
    std = out[:, :k].std()
    return (out * (target_std / max(std, 1e-8))).astype(np.float32)


def teacher_feature_rows(teacher, vocab: Vocab, dim: int, mode: str = "word",
                         corpus: Optional[Iterable[Sequence[str]]] = None, cache_dir=None, batch_size: int = 256,
                         key: Optional[str] = None) -> np.ndarray:
    """The frozen feature table of a student vocabulary.

    Args:
        teacher: a ``TransformerTokenClassifier`` or an ensemble of them (states concatenated).
        vocab: the student's word vocabulary; row 0 (padding) and 1 (unknown) stay zero.
        dim: feature size after PCA.
        mode: ``word`` (each word alone) or ``context`` (pooled over ``corpus``, ``word`` for the rest).
        corpus: sentences for ``context`` (the transfer set; never dev/test).
        cache_dir: folder of raw states keyed by the teacher (reused, extended, or refused).
        key: the teacher's fingerprint (computed when not given).

    Returns:
        (len(vocab), dim) float32.
    """
    from nlp_distill.distill.teacher_cache import teacher_fingerprint

    if mode not in MODES:
        raise ConfigError(f"teacher feature mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "context" and corpus is None:
        raise ConfigError("teacher features 'context' need a corpus (the training / transfer sentences)")
    key = key or teacher_fingerprint(teacher)
    words = vocab.itos[2:]
    cache = FeatureCache(cache_dir, key, "word") if cache_dir else None
    known = cache.lookup() if cache else {}
    new = [w for w in words if w not in known]
    if new:
        logger.info("teacher features: %d words through the teacher (%d cached)", len(new), len(words) - len(new))
        fresh = word_states(teacher, new, batch_size)
        if cache is not None:
            cache.add(new, fresh)
            known = cache.lookup()
            table = cache.states
        else:
            known, table = {w: i for i, w in enumerate(new)}, fresh
    else:
        table = cache.states
    states = table[[known[w] for w in words]] if words else np.zeros((0, table.shape[1]), np.float32)
    if mode == "context":
        states = _with_context(teacher, words, states, corpus, vocab.lowercase)
    out = np.zeros((len(vocab), dim), np.float32)
    if len(words):
        out[2:] = pca_project(states, dim)
    logger.info("teacher features: %d words, %d -> %d dims (%s)", len(words), states.shape[1], dim, mode)
    return out


def _with_context(teacher, words: Sequence[str], word_level: np.ndarray, corpus, lowercase: bool) -> np.ndarray:
    """Pooled contextual states where the corpus holds the word; elsewhere the word-level state
    plus the mean (context - word) offset of the words it holds."""
    cwords, cstates = context_states(teacher, corpus, lowercase)
    index = {w: i for i, w in enumerate(cwords)}
    rows = [index.get(w) for w in words]
    seen = np.array([r is not None for r in rows])
    out = word_level.copy()
    if seen.any():
        ctx = cstates[[r for r in rows if r is not None]]
        offset = (ctx - word_level[seen]).mean(0, keepdims=True)
        out[seen] = ctx
        out[~seen] = word_level[~seen] + offset
    logger.info("teacher features: %d / %d words pooled over the corpus", int(seen.sum()), len(words))
    return out


def features_home() -> Path:
    """``$NLP_DISTILL_HOME/teacher_features`` (default ``~/.cache/nlp-distill``): one folder per teacher."""
    return Path(os.environ.get("NLP_DISTILL_HOME") or "~/.cache/nlp-distill").expanduser() / "teacher_features"


def feature_teacher(source: str, labels, teacher=None):
    """The model whose states become the student's features: the KD ``teacher`` for ``teacher``,
    else the model folder or packaged encoder (minilm, mpnet) named by ``source``."""
    from nlp_distill.distill.teachers import load_teacher
    from nlp_distill.models.packaged_encoders import ENCODERS, resolve_encoder
    from nlp_distill.models.transformer import TransformerTokenClassifier

    if source == "teacher":
        if teacher is None:
            raise ConfigError("--teacher_features teacher needs a teacher (tagger_kd); without one give a model "
                              "folder or a packaged encoder (minilm, mpnet)")
        return teacher
    if source in ENCODERS and not Path(source).is_dir():
        return TransformerTokenClassifier.from_pretrained(resolve_encoder(source), labels=labels)
    return load_teacher(source)


def load_teacher_features(model, data, teacher=None, corpus: Optional[Iterable[Sequence[str]]] = None,
                          cache_dir=None) -> None:
    """Fill a new student's frozen teacher-feature table (``model.config.teacher_feature_dim``
    columns) from ``data.teacher_features``; a student without the table is left as it is.

    Args:
        model: a ``NeuralTagger`` from ``build_student``.
        data: the ``StudentDataConfig`` (``teacher_features``, ``teacher_features_mode``).
        teacher: the KD teacher, for ``teacher_features = "teacher"``.
        corpus: sentences ``context`` features pool over (training / transfer text, never dev/test).
        cache_dir: raw-state cache folder (default: ``features_home() / <teacher fingerprint>``).
    """
    from nlp_distill.distill.teacher_cache import teacher_fingerprint

    dim = model.config.teacher_feature_dim
    if not dim:
        return
    source = feature_teacher(data.teacher_features, model.labels, teacher).to(model.device)
    key = teacher_fingerprint(source)
    table = teacher_feature_rows(source, model.word_vocab, dim, data.teacher_features_mode, corpus,
                                 cache_dir or features_home() / key[:16], key=key)
    model.embedder.load_features(table)
