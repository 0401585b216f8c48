"""Parquet transfer shards: a teacher-labeled transfer set as a folder of Parquet files.

Layout of a store folder (documented for users in docs/data.md)::

    _store.json               teacher fingerprint, labels, sentences per shard, rows per row group,
                              "complete" once every shard exists (the leading underscore keeps
                              pyarrow.dataset / pandas / HF datasets from reading it as data)
    part-00000.parquet        sentences [0, S): one row per sentence
    part-00001.parquet        sentences [S, 2S) ...
    .part-00002.parquet.*.tmp a shard being written (hidden; renamed into place when complete)

Columns of every shard (``shard_schema``)::

    sentence    int64                          position of the sentence in the labeled input
    tokens      list<string>                   the words
    logits      list<fixed_size_list<halffloat, C>>   (n_words, C) teacher word logits
    confidence  float                          mean max-probability of the sentence (0 when empty)

The schema metadata key ``nlp_distill.transfer`` holds JSON with the format version, the
teacher fingerprint, the label names (column order of ``logits``), the shard number, its first
sentence and its number of sentences, so a single shard is self-describing.

A shard is written to a hidden temporary name and renamed with ``os.replace``: a killed job
leaves whole shards only, and a rerun skips them. Reading is by row group: sentence ``i`` lives in
shard ``i // S`` and row group ``(i % S) // R`` (S, R from ``_store.json``), so random access
decodes one small row group, kept in a byte-bounded cache (memory stays flat).
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json, write_json

logger = logging.getLogger(__name__)

FORMAT = "nlp-distill-transfer-shards"
VERSION = 1
STORE_FILE = "_store.json"
META_KEY = b"nlp_distill.transfer"
ROW_GROUP = 64  # sentences per row group: one random access decodes this many sentences' logits
CACHE_MB = 128.0  # decoded row groups kept per open store


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"part-{k:05d}.parquet"


def shard_index(name: str) -> Optional[int]:
    """``k`` of a finished shard's file name ``part-k.parquet``; None for any other name."""
    if name.startswith("part-") and name.endswith(".parquet"):
        try:
            return int(name[5:-8])
        except ValueError:
            return None
    return None


def shard_schema(labels: Sequence[str], meta: Optional[Dict[str, Any]] = None) -> pa.Schema:
    """The columns of a shard for a teacher with ``labels`` (C = ``len(labels)``), with ``meta``
    as JSON under the schema metadata key ``nlp_distill.transfer``."""
    fields = [pa.field("sentence", pa.int64(), nullable=False),
              pa.field("tokens", pa.list_(pa.string()), nullable=False),
              pa.field("logits", pa.list_(pa.list_(pa.float16(), len(labels))), nullable=False),
              pa.field("confidence", pa.float32(), nullable=False)]
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta or {}, sort_keys=True).encode()})


def shard_table(first: int, tokens: Sequence[Sequence[str]], logits: np.ndarray, lengths: np.ndarray,
                confidence: np.ndarray, labels: Sequence[str], meta: Dict[str, Any]) -> pa.Table:
    """One shard's rows as an Arrow table.

    Args:
        first: input position of the first sentence.
        tokens: the sentences' words.
        logits: (total_words, C) teacher logits of all the sentences, one after the other.
        lengths: (n,) words per sentence (``lengths.sum() == len(logits)``).
        confidence: (n,) mean max-probability per sentence.
        labels: the C label names.
        meta: schema metadata (see the module docstring).
    """
    C = len(labels)
    n = len(tokens)
    flat = np.ascontiguousarray(logits, dtype=np.float16).reshape(-1, C)  # (words, C)
    lengths = np.asarray(lengths, np.int64)
    if lengths.shape != (n,) or int(lengths.sum()) != len(flat) or len(confidence) != n:
        raise ValueError(f"shard rows disagree: {n} sentences, {lengths.shape} lengths summing to "
                         f"{int(lengths.sum())}, {len(flat)} logit rows, {len(confidence)} confidences")
    words = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), pa.float16()), C)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    cols = [pa.array(np.arange(first, first + n, dtype=np.int64)),
            pa.array([list(t) for t in tokens], pa.list_(pa.string())),
            pa.ListArray.from_arrays(offsets, words),
            pa.array(np.asarray(confidence, np.float32))]
    return pa.Table.from_arrays(cols, schema=shard_schema(labels, meta))


def write_shard(folder, k: int, first: int, tokens: Sequence[Sequence[str]], logits: np.ndarray,
                lengths: np.ndarray, confidence: np.ndarray, key: str, labels: Sequence[str],
                row_group: int = ROW_GROUP) -> Path:
    """Write shard ``k`` of the store in ``folder`` atomically: to a hidden temporary file, then
    ``os.replace`` onto ``part-k.parquet``. Arguments as ``shard_table``; ``key`` is the teacher
    fingerprint.

    Returns:
        the shard's path.
    """
    folder = Path(folder)
    meta = {"format": FORMAT, "version": VERSION, "teacher_fingerprint": key, "labels": list(labels),
            "shard": k, "first_sentence": first, "num_sentences": len(tokens)}
    table = shard_table(first, tokens, logits, lengths, confidence, labels, meta)
    target = folder / shard_name(k)
    tmp = folder / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # unique per writer
    try:
        pq.write_table(table, tmp, row_group_size=row_group, compression="zstd", use_dictionary=["tokens"])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_shard_meta(path) -> Dict[str, Any]:
    """The ``nlp_distill.transfer`` schema metadata of one shard file.

    Raises:
        ConfigError: the file is not a transfer shard.
    """
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{path}: not a readable Parquet file ({e}); label the text again into a new folder") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ConfigError(f"{path}: a Parquet file without the nlp_distill.transfer schema metadata, not a transfer "
                          "shard")
    return json.loads(raw)


def store_meta(key: str, labels: Sequence[str], shard_sentences: int, row_group: int = ROW_GROUP,
               complete: bool = False, num_shards: Optional[int] = None,
               num_sentences: Optional[int] = None) -> Dict[str, Any]:
    """The content of ``_store.json``."""
    meta: Dict[str, Any] = {"format": FORMAT, "version": VERSION, "teacher_fingerprint": key, "labels": list(labels),
                            "shard_sentences": shard_sentences, "row_group": row_group, "complete": complete}
    if complete:
        meta.update(num_shards=num_shards, num_sentences=num_sentences)
    return meta


def write_store_meta(folder, meta: Dict[str, Any]) -> None:
    write_json(Path(folder) / STORE_FILE, meta)


def is_shard_store(folder) -> bool:
    return (Path(folder) / STORE_FILE).is_file()


def remove_leftovers(folder, num_shards: int) -> int:
    """Delete temporary files of killed writers and shards beyond ``num_shards`` (an earlier,
    longer input). Returns how many files went."""
    gone = 0
    for p in Path(folder).iterdir():
        k = shard_index(p.name)
        if (p.name.startswith(".part-") and p.name.endswith(".tmp")) or (k is not None and k >= num_shards):
            p.unlink(missing_ok=True)
            gone += 1
    return gone


class ShardReader:
    """A finished shard store opened for reading: random access to a sentence's logits through a
    byte-bounded cache of decoded row groups; tokens and confidences streamed.

    Args:
        folder: the store folder.
        cache_mb: decoded row groups kept in memory.

    Raises:
        ConfigError: the store is unfinished, of another format version, or a shard's metadata
            disagrees with ``_store.json`` (another teacher, labels or position).
    """

    def __init__(self, folder, cache_mb: float = CACHE_MB) -> None:
        self.folder = Path(folder)
        meta = read_json(self.folder / STORE_FILE)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ConfigError(f"{self.folder / STORE_FILE}: format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}, this version reads {FORMAT!r} version {VERSION}")
        if not meta.get("complete"):
            raise ConfigError(f"{folder}: the transfer store is unfinished; run `nlp-train label_unlabeled` again to "
                              "complete it")
        self.meta = meta
        self.labels: List[str] = list(meta["labels"])
        self.key: str = meta["teacher_fingerprint"]
        self.S, self.R = int(meta["shard_sentences"]), int(meta["row_group"])
        self.n, self.num_shards = int(meta["num_sentences"]), int(meta["num_shards"])
        if self.num_shards != -(-self.n // self.S):
            raise ConfigError(f"{self.folder / STORE_FILE}: {self.n} sentences cannot fill {self.num_shards} shards of "
                              f"{self.S}")
        self._files: Dict[int, pq.ParquetFile] = {}
        self._cache: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._cache_bytes, self._cache_cap = 0, int(cache_mb * 2**20)
        self._confidence: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.n

    def shard_path(self, k: int) -> Path:
        return self.folder / shard_name(k)

    def shard_size(self, k: int) -> int:
        return min(self.S, self.n - k * self.S)

    def _file(self, k: int) -> pq.ParquetFile:
        """Shard ``k`` opened (a few handles kept), its metadata checked against the store's."""
        pf = self._files.get(k)
        if pf is None:
            path = self.shard_path(k)
            if not path.is_file():
                raise ConfigError(f"{path}: shard missing from a store marked complete; label the text again")
            meta = read_shard_meta(path)
            want = {"teacher_fingerprint": self.key, "labels": self.labels, "shard": k, "first_sentence": k * self.S,
                    "num_sentences": self.shard_size(k)}
            bad = {f: meta.get(f) for f, v in want.items() if meta.get(f) != v}
            pf = pq.ParquetFile(path, memory_map=True)
            if pf.metadata.num_rows != self.shard_size(k):
                bad["rows"] = pf.metadata.num_rows
            if bad:
                raise ConfigError(f"{path}: shard disagrees with {STORE_FILE} on {sorted(bad)} (found {bad}); it was "
                                  "written by another labeling run: label the text again into a new folder")
            if len(self._files) >= 8:
                self._files.pop(next(iter(self._files)))
            self._files[k] = pf
        return pf

    def _row_group(self, k: int, g: int) -> Tuple[np.ndarray, np.ndarray]:
        """(offsets (rows + 1,), logits (words, C) float16) of row group ``g`` of shard ``k``."""
        hit = self._cache.get((k, g))
        if hit is not None:
            self._cache.move_to_end((k, g))
            return hit
        col = self._file(k).read_row_group(g, columns=["logits"]).column(0).combine_chunks()
        lengths = col.value_lengths().to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, len(self.labels))  # (words, C)
        item = (offsets, flat)
        self._cache[(k, g)] = item
        self._cache_bytes += flat.nbytes + offsets.nbytes
        while self._cache_bytes > self._cache_cap and len(self._cache) > 1:
            _, (o, f) = self._cache.popitem(last=False)
            self._cache_bytes -= f.nbytes + o.nbytes
        return item

    def sentence(self, i: int) -> np.ndarray:
        """(n_words, C) float16 teacher logits of sentence ``i``."""
        if not 0 <= i < self.n:
            raise IndexError(f"sentence {i} of a store of {self.n}")
        k, j = divmod(i, self.S)
        g, r = divmod(j, self.R)
        offsets, flat = self._row_group(k, g)
        return flat[offsets[r] : offsets[r + 1]]

    def iter_tokens(self) -> Iterator[List[str]]:
        """Every sentence's tokens in order, streamed shard by shard."""
        for k in range(self.num_shards):
            for batch in self._file(k).iter_batches(batch_size=1024, columns=["tokens"]):
                yield from batch.column(0).to_pylist()

    @property
    def confidence(self) -> np.ndarray:
        """(n,) float32 mean max-probability per sentence (read once, 4 bytes a sentence)."""
        if self._confidence is None:
            parts = [self._file(k).read(columns=["confidence"]).column(0).to_numpy() for k in range(self.num_shards)]
            self._confidence = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        return self._confidence
