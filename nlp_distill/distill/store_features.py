"""Student features of a transfer store without one Python object per sentence.

Every token is mapped once to a *type* (a distinct string). Word id, word shape and character row
are per-type tables; the sentences themselves are one flat array of type ids on disk
(memory-mapped) plus the store's word offsets, and so are the pseudo-label tag ids (computed once
from the stored logits). A batch gathers its rows from those arrays. Memory grows with the
text's vocabulary, not with its number of sentences.
"""
from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from nlp_distill.data.batching import Rows
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.vocab import Vocab, char_ids, word_shape
from nlp_distill.distill.pseudo_label import pseudo_tags
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.utils import distributed as ddp

logger = logging.getLogger(__name__)


class StoreFeatures:
    """The first ``limit`` sentences of ``store`` as student rows (``rows(i)``, ``lengths``,
    ``weights``), for ``ConcatEncoded``.

    Args:
        store: a finished transfer store.
        word_vocab, char_vocab, labels: the student's vocabularies (tags are mapped by name).
        max_word_length: characters kept per word (as ``EncodedData``).
        work_dir: where the flat type-id file is written (e.g. the run folder).
        threshold: sentences whose teacher confidence is below it get no tags (KD only).
        weight: loss weight of every store sentence.
        limit: use at most this many sentences (default: all).
    """

    def __init__(self, store: TransferStore, word_vocab: Vocab, char_vocab: Vocab, labels: LabelVocab,
                 max_word_length: int, work_dir, threshold: float = 0.0, weight: float = 1.0,
                 limit: Optional[int] = None, decode: str = "valid") -> None:
        n = len(store) if limit is None else min(limit, len(store))
        types: Dict[str, int] = {}
        rank = ddp.world()[0]  # each torchrun rank writes its own files (same content, no shared writes)
        stem = Path(work_dir) / ("store" if rank == 0 else f"store.rank{rank}")
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.lengths = np.zeros(n, np.int64)
        self.accepted = np.zeros(n, bool)  # teacher confidence >= threshold: the sentence keeps its tags
        teacher_labels = LabelVocab(store.labels)
        with open(f"{stem}_type_ids.i32", "wb") as ft, open(f"{stem}_tags.i16", "wb") as fg:
            for i, toks in enumerate(islice(store.iter_tokens(), n)):
                self.lengths[i] = len(toks)
                ft.write(np.asarray([types.setdefault(t, len(types)) for t in toks], np.int32).tobytes())
                tags, conf = pseudo_tags(np.asarray(store.sentence(i)), teacher_labels, decode)  # once, not every epoch
                fg.write(np.asarray(labels.encode(tags), np.int16).tobytes())
                self.accepted[i] = conf >= threshold
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        words = int(self.offsets[-1])
        self.type_ids = np.memmap(f"{stem}_type_ids.i32", np.int32, "r", shape=(words,)) if words else np.zeros(0, np.int32)
        self.tag_ids = np.memmap(f"{stem}_tags.i16", np.int16, "r", shape=(words,)) if words else np.zeros(0, np.int16)
        self.weights = np.full(n, weight, np.float32)
        self._tables(list(types), word_vocab, char_vocab, max_word_length)
        logger.info("transfer store %s: %d sentences, %d words, %d distinct tokens (flat features in %s)",
                    store.folder, n, words, len(types), stem.parent)

    def _tables(self, types: List[str], word_vocab: Vocab, char_vocab: Vocab, max_word_length: int) -> None:
        """Per-type word id, shape and (padded) character ids."""
        self.type_word = np.asarray(word_vocab.ids(types), np.int64)
        self.type_shape = np.asarray([word_shape(t) for t in types], np.int64)
        rows = [char_ids(t, char_vocab, max_word_length) or [1] for t in types]
        self.type_chars = np.zeros((len(types), max((len(r) for r in rows), default=1)), np.int64)
        self.type_nchars = np.asarray([len(r) for r in rows], np.int64)
        for k, r in enumerate(rows):
            self.type_chars[k, : len(r)] = r

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, i: int) -> Rows:
        """Sentence ``i``: word ids, char ids (n, K), shapes, pseudo-label tag ids (or None under
        the confidence threshold)."""
        a, b = self.offsets[i], self.offsets[i + 1]
        t = np.asarray(self.type_ids[a:b])
        k = max(int(self.type_nchars[t].max()) if len(t) else 1, 1)
        tag_ids = np.asarray(self.tag_ids[a:b], np.int64) if self.accepted[i] else None
        return self.type_word[t], self.type_chars[t, :k], self.type_shape[t], tag_ids
