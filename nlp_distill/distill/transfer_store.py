"""An on-disk, teacher-labeled transfer set: tokens, fp16 word-level teacher logits and a
confidence per sentence, as a folder of Parquet shards (``nlp_distill.data.shards``: schema,
atomic shard writes, streamed reads) so any number of sentences fits in flat memory.

A labeling run that is killed leaves only whole shards; run again with the same teacher it skips
them and labels only the missing ones. The single-process, torchrun and Ray
(``nlp_distill.engines.ray_label``) paths write the same shards. The store reads like a
``TeacherLogitsCache`` (``sentence``, ``batch``, ``labels``), so training takes its logits without
a teacher pass. Stores in the older chunk-folder format still open (``ChunkStore``), and
``convert_chunk_store`` rewrites one as shards.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.data import shards
from nlp_distill.data.shards import CACHE_MB, STORE_FILE, ShardReader, is_shard_store, shard_name
from nlp_distill.distill.chunk_store import ChunkStore, is_chunk_store
from nlp_distill.distill.teacher_cache import padded_rows, teacher_fingerprint
from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json
from nlp_distill.modules.label_probs import softmax
from nlp_distill.utils import distributed as ddp
from nlp_distill.utils.memory import limit_heap_growth
from nlp_distill.utils.progress import progress

logger = logging.getLogger(__name__)


def label_block(teacher, block: Sequence[Sequence[str]], batch_size: int, windows=None
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher logits of ``block`` in the layout of a shard.

    Args:
        teacher: anything with ``labels`` and ``word_logits`` (a model or an ensemble).
        block: the sentences (token lists).
        batch_size: windows per teacher batch (the teacher sorts them by length).
        windows: ``teacher.windows(block)`` when already tokenised (e.g. in a background thread).

    Returns:
        (logits (total_words, C) float32, lengths (n,) int64, confidence (n,) float32: mean
        max-probability per sentence, 0 for an empty one)
    """
    logits = (teacher.word_logits(block, batch_size, windows=windows) if windows is not None
              else teacher.word_logits(block, batch_size))
    lengths = np.asarray([len(s) for s in block], np.int64)
    flat = np.concatenate(logits) if logits else np.zeros((0, len(teacher.labels)), np.float32)  # (words, C)
    top = softmax(flat).max(-1) if len(flat) else np.zeros(0, np.float32)  # (words,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    sums = np.add.reduceat(top, starts[lengths > 0]) if len(top) else np.zeros(0)
    conf = np.zeros(len(block), np.float32)
    conf[lengths > 0] = sums / lengths[lengths > 0]
    return flat, lengths, conf


def claim_folder(folder, key: str, labels: Sequence[str], shard_sentences: int) -> None:
    """Check that ``folder`` is new or holds a store by the same teacher and shard size; mark it
    unfinished (on the main process) until the labeling completes.

    Raises:
        ConfigError: another teacher or shard size, or a store in the older chunk format.
    """
    folder = Path(folder)
    if is_chunk_store(folder):
        raise ConfigError(f"{folder} holds a transfer store in the older chunk format: convert it with "
                          f"`nlp-train convert_store {folder} NEW_FOLDER`, or choose another --output_dir")
    if (folder / STORE_FILE).is_file():
        meta = read_json(folder / STORE_FILE)
        if (meta.get("teacher_fingerprint") != key or meta.get("shard_sentences") != shard_sentences
                or meta.get("row_group") != shards.ROW_GROUP):
            raise ConfigError(f"{folder} holds a transfer store made by another teacher or chunk size; "
                              "choose another --output_dir")
    folder.mkdir(parents=True, exist_ok=True)
    if ddp.is_main():
        shards.write_store_meta(folder, shards.store_meta(key, labels, shard_sentences))


def finish_folder(folder, key: str, labels: Sequence[str], shard_sentences: int, num_shards: int,
                  num_sentences: int) -> None:
    """Drop leftovers (killed writers' temporary files, shards of an earlier longer input), check
    that every shard exists and mark the store complete.

    Raises:
        ConfigError: a shard is missing (a writer failed without raising).
    """
    folder = Path(folder)
    shards.remove_leftovers(folder, num_shards)
    missing = [shard_name(k) for k in range(num_shards) if not (folder / shard_name(k)).is_file()]
    if missing:
        raise ConfigError(f"{folder}: shards {missing[:5]} were not written; run the labeling again to finish them")
    shards.write_store_meta(folder, shards.store_meta(key, labels, shard_sentences, complete=True,
                                                      num_shards=num_shards, num_sentences=num_sentences))


class TransferStore:
    """A finished store opened for reading: Parquet shards (``nlp_distill.data.shards``) or the
    older chunk folders (``ChunkStore``).

    Attributes:
        folder: the store folder.
        labels: the teacher's label names (column order of the logits).
        key: the teacher's fingerprint (``teacher_fingerprint``).
        format: ``"parquet"`` or ``"chunks"``.

    Args:
        folder: the store folder.
        cache_mb: decoded Parquet row groups kept in memory for random access.

    Raises:
        ConfigError: no store in ``folder``, or an unfinished one.
    """

    def __init__(self, folder, cache_mb: float = CACHE_MB) -> None:
        self.folder = Path(folder)
        if is_shard_store(self.folder):
            self._src = ShardReader(self.folder, cache_mb)
            self.format = "parquet"
        elif is_chunk_store(self.folder):
            self._src = ChunkStore(self.folder)
            self.format = "chunks"
            logger.info("%s: a transfer store in the older chunk format (`nlp-train convert_store` rewrites it as "
                        "Parquet shards)", self.folder)
        else:
            raise ConfigError(f"{self.folder}: no transfer store here (no {STORE_FILE}); write one with "
                              "`nlp-train label_unlabeled`")
        self.labels: List[str] = list(self._src.labels)
        self.key: str = self._src.key
        self.hidden = None  # hidden states are not stored

    def __len__(self) -> int:
        return len(self._src)

    @property
    def confidence(self) -> np.ndarray:
        """(n,) float32 mean max-probability per sentence."""
        return self._src.confidence

    def sentence(self, i: int) -> np.ndarray:
        """(n_words, C) float16 teacher logits of sentence ``i``."""
        return self._src.sentence(i)

    def batch(self, indices: Sequence[int], max_len: int, columns: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Padded float32 logits (B, L, C), zeros on padding (as ``TeacherLogitsCache.batch``)."""
        return padded_rows(self.sentence, indices, max_len, len(self.labels), columns)

    def iter_tokens(self) -> Iterator[List[str]]:
        """Every sentence's tokens, streamed shard by shard."""
        return self._src.iter_tokens()

    @classmethod
    def label(cls, teacher, sentences: Iterable[Sequence[str]], folder, chunk: int = 2048, batch_size: int = 64,
              total: Optional[int] = None, show_progress: bool = True) -> "TransferStore":
        """Label ``sentences`` with ``teacher`` into ``folder`` as shards of ``chunk`` sentences,
        keeping finished shards of an earlier run by the same teacher (a different teacher is an
        error).

        Under torchrun every rank reads the whole input and labels shards ``k`` with
        ``k % world_size == rank``; rank 0 then marks the store complete, so it reads as one, in
        input order.
        """
        folder = Path(folder)
        key, labels = teacher_fingerprint(teacher), list(teacher.labels.labels)
        rank, size = ddp.world()
        limit_heap_growth()  # shard after shard of new shapes: resident memory stays flat
        with ddp.main_first():
            claim_folder(folder, key, labels, chunk)
        it = iter(sentences)
        blocks = iter(lambda: [list(s) for s in islice(it, chunk)], [])
        k = n = kept = 0
        bar = progress(total=total, desc="labeling", unit="sent", enabled=show_progress and rank == 0, dynamic_ncols=True)
        done = lambda j: (folder / shard_name(j)).is_file()  # noqa: E731
        mine = lambda j: j % size == rank and not done(j)  # noqa: E731
        with _Prefetcher(teacher) as pre:  # the next shard is tokenised while this one runs
            block = next(blocks, None)
            pending = pre.submit(block) if block is not None and mine(0) else None
            while block is not None:
                following = next(blocks, None)
                ahead = pre.submit(following) if following is not None and mine(k + 1) else None
                if mine(k):
                    flat, lengths, conf = label_block(teacher, block, batch_size, pre.result(pending))
                    shards.write_shard(folder, k, k * chunk, block, flat, lengths, conf, key, labels)
                elif done(k):
                    kept += 1  # finished by an earlier run (or by another rank)
                n += len(block)
                k += 1
                bar.update(len(block))
                block, pending = following, ahead
        bar.close()
        ddp.barrier()  # every rank's shards are written
        if rank == 0:
            finish_folder(folder, key, labels, chunk, k, n)
            logger.info("transfer store %s: %d sentences in %d shards (%d kept from an earlier run)", folder, n, k, kept)
        ddp.barrier()  # the store is complete before any rank opens it
        return cls(folder)


def convert_chunk_store(old, new, show_progress: bool = True) -> TransferStore:
    """Rewrite a store in the older chunk format as Parquet shards (one shard per chunk, same
    teacher fingerprint and labels), a chunk at a time; a rerun keeps finished shards.

    Raises:
        ConfigError: ``old`` is not a finished chunk store.
    """
    if not is_chunk_store(old):
        raise ConfigError(f"{old}: not a transfer store in the older chunk format (no meta.json naming chunks)")
    src = ChunkStore(old)
    new = Path(new)
    claim_folder(new, src.key, src.labels, src.chunk)
    first = 0
    for k, (toks, logits, lengths, conf) in enumerate(progress(src.iter_chunks(), total=len(src.chunks), desc="converting",
                                                                unit="chunk", enabled=show_progress)):
        if len(toks) != src.chunk and k < len(src.chunks) - 1:
            raise ConfigError(f"{src.chunks[k]}: {len(toks)} sentences in a chunk of {src.chunk}; the store is damaged")
        if not (new / shard_name(k)).is_file():
            shards.write_shard(new, k, first, toks, logits, lengths, conf, src.key, src.labels)
        first += len(toks)
    finish_folder(new, src.key, src.labels, src.chunk, len(src.chunks), first)
    logger.info("converted %s (%d sentences) to Parquet shards in %s", old, first, new)
    return TransferStore(new)


class _Prefetcher:
    """Tokenises a shard in a background thread (the fast tokenizer releases the GIL) for a teacher
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
