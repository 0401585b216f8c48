"""An on-disk, teacher-labeled transfer set: tokens, fp16 word-level teacher logits and a
confidence per sentence, written in chunks so any number of sentences fits in flat memory.

Layout of ``folder``::

    meta.json                 teacher key, labels, chunk size; "complete" once every chunk exists
    chunk_00000/              one finished chunk (renamed into place when complete)
        tokens.txt            one sentence per line, tokens separated by single spaces
        logits.f16            (words, C) float16 rows, sentence after sentence
        offsets.npy           (n + 1,) int64 word offsets of the chunk's sentences
        confidence.npy        (n,) float32 mean max-probability per sentence

A labeling run that is killed leaves only finished chunks; run again with the same teacher it
skips them and redoes only the unfinished one. The store reads like a ``TeacherLogitsCache``
(``sentence``, ``batch``, ``labels``), so training can take its logits without a teacher pass.
"""
from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from nlp_distill.distill.pseudo_label import softmax
from nlp_distill.distill.teacher_cache import padded_rows, teacher_fingerprint
from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json, write_json
from nlp_distill.utils import distributed as ddp
from nlp_distill.utils.memory import limit_heap_growth

logger = logging.getLogger(__name__)

META = "meta.json"


def _chunk_dir(folder: Path, k: int) -> Path:
    return folder / f"chunk_{k:05d}"


def _write_chunk(teacher, block: List[List[str]], target: Path, batch_size: int, windows=None) -> None:
    """Label ``block`` and write it to a temporary folder renamed to ``target`` when complete."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    logits = (teacher.word_logits(block, batch_size, windows=windows) if windows is not None
              else teacher.word_logits(block, batch_size))
    offsets = np.zeros(len(block) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in block])
    flat = np.concatenate(logits) if logits else np.zeros((0, len(teacher.labels)), np.float32)  # (words, C)
    top = softmax(flat).max(-1) if len(flat) else np.zeros(0, np.float32)
    lens = np.diff(offsets)
    sums = np.add.reduceat(top, offsets[:-1][lens > 0]) if len(top) else np.zeros(0)
    conf = np.zeros(len(block), np.float32)
    conf[lens > 0] = sums / lens[lens > 0]  # mean max-probability per sentence (0 for an empty one)
    flat.astype(np.float16).tofile(tmp / "logits.f16")
    (tmp / "tokens.txt").write_text("".join(" ".join(s) + "\n" for s in block), encoding="utf-8")
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "confidence.npy", conf)
    os.replace(tmp, target)


class TransferStore:
    """A finished store opened for reading (see the module docstring for the layout)."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        meta = read_json(self.folder / META)
        if not meta.get("complete"):
            raise ConfigError(f"{folder}: the transfer store is unfinished; run `nlp-train label_unlabeled` again to "
                              "complete it")
        self.labels: List[str] = meta["labels"]
        self.key: str = meta["key"]
        self.hidden = None  # hidden states are not stored
        chunks = [_chunk_dir(self.folder, k) for k in range(meta["num_chunks"])]
        self._offsets = [np.load(c / "offsets.npy") for c in chunks]
        C = len(self.labels)
        self._logits = [np.memmap(c / "logits.f16", np.float16, "r", shape=(int(o[-1]), C))
                        for c, o in zip(chunks, self._offsets)]
        self._tokens_files = [c / "tokens.txt" for c in chunks]
        self.confidence = np.concatenate([np.load(c / "confidence.npy") for c in chunks]) if chunks else np.zeros(0)
        sizes = [len(o) - 1 for o in self._offsets]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # first sentence of each chunk

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int):
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def sentence(self, i: int) -> np.ndarray:
        """(n_words, C) float16 teacher logits of sentence ``i``."""
        k, j = self._locate(i)
        o = self._offsets[k]
        return self._logits[k][o[j] : o[j + 1]]

    def batch(self, indices: Sequence[int], max_len: int, columns: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Padded float32 logits (B, L, C), zeros on padding (as ``TeacherLogitsCache.batch``)."""
        return padded_rows(self.sentence, indices, max_len, len(self.labels), columns)

    def iter_tokens(self) -> Iterator[List[str]]:
        """Every sentence's tokens, streamed chunk by chunk."""
        for f in self._tokens_files:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    yield line.split()

    @classmethod
    def label(cls, teacher, sentences: Iterable[Sequence[str]], folder, chunk: int = 2048, batch_size: int = 64,
              total: Optional[int] = None, show_progress: bool = True) -> "TransferStore":
        """Label ``sentences`` with ``teacher`` into ``folder``, keeping finished chunks of an
        earlier run by the same teacher (a different teacher is an error).

        Under torchrun every rank reads the whole input and labels chunks ``k`` with
        ``k % world_size == rank``; rank 0 then writes the store's metadata, so the store reads as
        one, in input order.
        """
        folder = Path(folder)
        key = teacher_fingerprint(teacher)
        rank, size = ddp.world()
        limit_heap_growth()  # chunk after chunk of new shapes: resident memory stays flat
        with ddp.main_first():
            _claim(folder, key, teacher.labels.labels, chunk)
        it = iter(sentences)
        blocks = iter(lambda: [list(s) for s in islice(it, chunk)], [])
        k = n = kept = 0
        bar = tqdm(total=total, desc="labeling", unit="sent", disable=not show_progress or rank > 0, dynamic_ncols=True)
        mine = lambda j: j % size == rank and not _chunk_dir(folder, j).is_dir()  # noqa: E731
        with _Prefetcher(teacher) as pre:  # the next chunk is tokenised while this one runs
            block = next(blocks, None)
            pending = pre.submit(block) if block is not None and mine(0) else None
            while block is not None:
                following = next(blocks, None)
                ahead = pre.submit(following) if following is not None and mine(k + 1) else None
                if mine(k):
                    _write_chunk(teacher, block, _chunk_dir(folder, k), batch_size, pre.result(pending))
                elif _chunk_dir(folder, k).is_dir():
                    kept += 1  # finished by an earlier run (or by another rank)
                n += len(block)
                k += 1
                bar.update(len(block))
                block, pending = following, ahead
        bar.close()
        ddp.barrier()  # every rank's chunks are written
        if rank == 0:
            for stale in sorted(folder.glob("chunk_*")):  # chunks beyond this input (an earlier, longer input)
                if stale.name.endswith(".tmp") or int(stale.name.split("_")[1]) >= k:
                    shutil.rmtree(stale)
            write_json(folder / META, {"key": key, "labels": teacher.labels.labels, "chunk": chunk, "complete": True,
                                       "num_chunks": k, "num_sentences": n})
            logger.info("transfer store %s: %d sentences in %d chunks (%d kept from an earlier run)", folder, n, k, kept)
        ddp.barrier()  # the metadata is written before any rank opens the store
        return cls(folder)


class _Prefetcher:
    """Tokenises a chunk in a background thread (the fast tokenizer releases the GIL) for a teacher
    with ``windows`` (one transformer); for other teachers ``submit`` returns ``None``."""

    def __init__(self, teacher) -> None:
        self.teacher = teacher
        self.pool = ThreadPoolExecutor(1) if hasattr(teacher, "windows") else None

    def __enter__(self) -> "_Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def submit(self, block: List[List[str]]) -> Optional[Future]:
        return self.pool.submit(self.teacher.windows, block) if self.pool is not None else None

    @staticmethod
    def result(pending: Optional[Future]):
        return pending.result() if pending is not None else None


def _claim(folder: Path, key: str, labels: List[str], chunk: int) -> None:
    """Check that ``folder`` is new or holds a store by the same teacher and chunk size; mark it
    incomplete until the labeling finishes."""
    if (folder / META).is_file():
        meta = read_json(folder / META)
        if meta.get("key") != key or meta.get("chunk") != chunk:
            raise ConfigError(f"{folder} holds a transfer store made by another teacher or chunk size; "
                              "choose another --output_dir")
    folder.mkdir(parents=True, exist_ok=True)
    if ddp.is_main():
        write_json(folder / META, {"key": key, "labels": labels, "chunk": chunk, "complete": False})
