"""Reader of the older chunk-folder transfer store (before Parquet shards), kept so that stores
written by earlier versions still load; ``convert_chunk_store`` (``nlp-train convert_store``)
rewrites one as Parquet shards.

Layout of ``folder``::

    meta.json                 teacher key, labels, chunk size; "complete" once every chunk exists
    chunk_00000/              one finished chunk
        tokens.txt            one sentence per line, tokens separated by single spaces
        logits.f16            (words, C) float16 rows, sentence after sentence
        offsets.npy           (n + 1,) int64 word offsets of the chunk's sentences
        confidence.npy        (n,) float32 mean max-probability per sentence
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np

from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json

META = "meta.json"


def is_chunk_store(folder) -> bool:
    """Whether ``folder`` holds a chunk store (its ``meta.json`` names chunks)."""
    p = Path(folder) / META
    return p.is_file() and "chunk" in read_json(p)


def _chunk_dir(folder: Path, k: int) -> Path:
    return folder / f"chunk_{k:05d}"


class ChunkStore:
    """A finished chunk store opened for reading (memory-mapped logits)."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        meta = read_json(self.folder / META)
        if not meta.get("complete"):
            raise ConfigError(f"{folder}: the transfer store is unfinished; run `nlp-train label_unlabeled` again to "
                              "complete it")
        self.labels: List[str] = meta["labels"]
        self.key: str = meta["key"]
        self.chunk: int = int(meta["chunk"])
        self.chunks = [_chunk_dir(self.folder, k) for k in range(meta["num_chunks"])]
        self._offsets = [np.load(c / "offsets.npy") for c in self.chunks]
        C = len(self.labels)
        self._logits = [np.memmap(c / "logits.f16", np.float16, "r", shape=(int(o[-1]), C))
                        for c, o in zip(self.chunks, self._offsets)]
        self.confidence = (np.concatenate([np.load(c / "confidence.npy") for c in self.chunks]) if self.chunks
                           else np.zeros(0, np.float32))
        sizes = [len(o) - 1 for o in self._offsets]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # first sentence of each chunk

    def __len__(self) -> int:
        return int(self._starts[-1])

    def sentence(self, i: int) -> np.ndarray:
        """(n_words, C) float16 teacher logits of sentence ``i``."""
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        o = self._offsets[k]
        j = i - int(self._starts[k])
        return self._logits[k][o[j] : o[j + 1]]

    def iter_tokens(self) -> Iterator[List[str]]:
        """Every sentence's tokens, streamed chunk by chunk."""
        for c in self.chunks:
            with open(c / "tokens.txt", encoding="utf-8") as fh:
                for line in fh:
                    yield line.split()

    def iter_chunks(self) -> Iterator[Tuple[List[List[str]], np.ndarray, np.ndarray, np.ndarray]]:
        """(tokens, logits (words, C) float16, lengths (n,), confidence (n,)) chunk by chunk."""
        for c, o, lg in zip(self.chunks, self._offsets, self._logits):
            with open(c / "tokens.txt", encoding="utf-8") as fh:
                toks = [line.split() for line in fh]
            yield toks, np.asarray(lg), np.diff(o), np.load(c / "confidence.npy")
