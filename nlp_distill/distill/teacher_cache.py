"""Teacher word-level logits computed once, stored as a float16 memory-mapped file, reused every
epoch. Keyed by a fingerprint of the teacher (weights, labels, lengths, pooling) and of the
sentences, so a changed dataset or teacher invalidates it."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from nlp_distill.io import read_json, write_json

logger = logging.getLogger(__name__)

LOGITS_FILE, OFFSETS_FILE, META_FILE = "logits.f16", "offsets.npy", "meta.json"


def teacher_fingerprint(teacher) -> str:
    """SHA-1 over the teacher's parameters, labels and word-alignment settings."""
    h = hashlib.sha1()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(teacher.labels.labels).encode())
    for m in getattr(teacher, "members", [teacher]):  # an ensemble: every member's alignment settings
        c = m.config
        h.update(repr((c.max_seq_length, c.stride, c.pooling)).encode())
    return h.hexdigest()


def sentences_fingerprint(sentences: Iterable[Sequence[str]]) -> str:
    h = hashlib.sha1()
    for s in sentences:
        h.update("\x1f".join(s).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def file_sha1(path, block: int = 1 << 22) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(folder: Path, meta: dict, offsets: np.ndarray) -> str:
    """Empty string when the files agree with ``meta``; else what is wrong."""
    n, words, C = meta["num_sentences"], meta["num_words"], meta["num_labels"]
    if offsets.shape != (n + 1,) or int(offsets[-1]) != words or bool((np.diff(offsets) < 0).any()):
        return "offsets do not match the recorded sizes"
    size = (folder / LOGITS_FILE).stat().st_size
    if size != words * C * 2:
        return f"logits file has {size} bytes, expected {words * C * 2}"
    if file_sha1(folder / LOGITS_FILE) != meta.get("sha1"):
        return "logits checksum differs"
    return ""


class TeacherLogitsCache:
    """Word-level teacher logits for a fixed list of sentences.

    Attributes:
        offsets: (N + 1,) int64, words of sentence i are rows ``offsets[i]:offsets[i+1]``.
        logits: (total_words, C) float16 memmap.
        labels: the teacher's label list (column order).
    """

    def __init__(self, folder, offsets: np.ndarray, logits: np.ndarray, labels: List[str], key: str) -> None:
        self.folder = Path(folder)
        self.offsets = offsets
        self.logits = logits
        self.labels = labels
        self.key = key

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sentence(self, i: int) -> np.ndarray:
        """(n_words, C) float16 logits of sentence ``i``."""
        return self.logits[self.offsets[i] : self.offsets[i + 1]]

    def batch(self, indices: Sequence[int], max_len: int, columns: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Padded float32 logits (B, L, C) for sentences ``indices`` (zeros on padding).

        Args:
            columns: optional label permutation (student label j <- teacher column columns[j]).
        """
        C = self.logits.shape[1]
        out = np.zeros((len(indices), max_len, C), dtype=np.float32)
        for b, i in enumerate(indices):
            s = self.sentence(int(i))
            out[b, : len(s)] = s
        t = torch.from_numpy(out)
        return t[..., list(columns)] if columns is not None else t

    @classmethod
    def open(cls, folder) -> Optional["TeacherLogitsCache"]:
        """The cache in ``folder``, or ``None`` when there is none or it fails verification
        (missing file, sizes or checksum differ from ``meta.json``: a damaged cache is rebuilt)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            return None
        try:
            meta = read_json(folder / META_FILE)
            offsets = np.load(folder / OFFSETS_FILE)
            problem = _verify(folder, meta, offsets)
        except (OSError, ValueError, KeyError) as e:
            problem = f"unreadable ({e})"
        if problem:
            logger.warning("teacher cache in %s is damaged (%s): it will be rebuilt", folder, problem)
            return None
        logits = np.memmap(folder / LOGITS_FILE, dtype=np.float16, mode="r", shape=(int(offsets[-1]), meta["num_labels"]))
        return cls(folder, offsets, logits, meta["labels"], meta["key"])

    @classmethod
    def build(cls, teacher, sentences: Sequence[Sequence[str]], folder, batch_size: int = 64, chunk: int = 2048,
              show_progress: bool = True) -> "TeacherLogitsCache":
        """Open the cache in ``folder`` if its key matches, else run the teacher once and write it.

        The teacher runs over ``chunk`` sentences at a time and rows are appended to the file, so
        memory stays bounded whatever the number of sentences. ``meta.json`` is written last:
        an interrupted build is never mistaken for a finished one.
        """
        folder = Path(folder)
        key = hashlib.sha1((teacher_fingerprint(teacher) + sentences_fingerprint(sentences)).encode()).hexdigest()
        cached = cls.open(folder)
        if cached is not None and cached.key == key:
            logger.info("teacher cache hit: %s (%d sentences)", folder, len(cached))
            return cached
        if cached is not None:
            logger.info("teacher cache in %s is stale (teacher or data changed): rebuilding", folder)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / META_FILE).exists():
            (folder / META_FILE).unlink()
        C = len(teacher.labels)
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        tmp = folder / (LOGITS_FILE + ".tmp")
        with open(tmp, "wb") as f:
            bar = tqdm(total=len(sentences), desc="teacher logits", unit="sent", disable=not show_progress, leave=False)
            for a in range(0, len(sentences), chunk):
                block = sentences[a : a + chunk]
                for j, lg in enumerate(teacher.word_logits(block, batch_size)):
                    f.write(lg.astype(np.float16).tobytes())
                    offsets[a + j + 1] = offsets[a + j] + lg.shape[0]
                bar.update(len(block))
            bar.close()
        os.replace(tmp, folder / LOGITS_FILE)
        np.save(folder / OFFSETS_FILE, offsets)
        write_json(folder / META_FILE, {"key": key, "num_labels": C, "labels": teacher.labels.labels,
                                        "num_sentences": len(sentences), "num_words": int(offsets[-1]),
                                        "sha1": file_sha1(folder / LOGITS_FILE)})
        logger.info("teacher cache written: %s (%d sentences, %d words, %.1f MB)", folder, len(sentences),
                    offsets[-1], offsets[-1] * C * 2 / 1e6)
        return cls.open(folder)
