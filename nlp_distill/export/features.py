"""Torch-free student featurisation: token lists -> padded numpy id arrays (what
``EncodedData.collate`` gives the torch model, as numpy)."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from nlp_distill.data.vocab import Vocab, char_ids, word_shape


def featurize(sentences: Sequence[Sequence[str]], words: Vocab, chars: Vocab, max_word_length: int) -> Dict[str, np.ndarray]:
    """Padded inputs of a batch of non-empty sentences.

    Returns:
        ``words`` (B, L) int64, ``chars`` (B, L, K) int64, ``shapes`` (B, L) int64, ``mask`` (B, L) bool.
    """
    B, L = len(sentences), max(len(s) for s in sentences)
    cids = [[char_ids(w, chars, max_word_length) or [1] for w in s] for s in sentences]
    K = max(len(c) for s in cids for c in s)
    out = {"words": np.zeros((B, L), np.int64), "chars": np.zeros((B, L, K), np.int64),
           "shapes": np.zeros((B, L), np.int64), "mask": np.zeros((B, L), bool)}
    for b, s in enumerate(sentences):
        n = len(s)
        out["words"][b, :n] = words.ids(s)
        out["shapes"][b, :n] = [word_shape(w) for w in s]
        out["mask"][b, :n] = True
        for j, c in enumerate(cids[b]):
            out["chars"][b, j, : len(c)] = c
    return out
