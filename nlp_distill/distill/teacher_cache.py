"""Teacher word-level logits computed once, stored as a float16 memory-mapped file, reused every
epoch. Keyed by a fingerprint of the teacher (weights, labels, lengths, pooling) and of the
sentences, so a changed dataset or teacher invalidates it."""
from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.io import atomic_open, read_json, write_json
from nlp_distill.utils.progress import progress

logger = logging.getLogger(__name__)

LOGITS_FILE, OFFSETS_FILE, META_FILE, HIDDEN_FILE = "logits.f16", "offsets.npy", "meta.json", "hidden.f16"


def teacher_fingerprint(teacher) -> str:
    """SHA-1 over the teacher's parameters, labels and word-alignment settings."""
    h = hashlib.sha1()
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(repr(teacher.labels.labels).encode())
    for m in teacher.members:  # an ensemble: every member's alignment settings
        c = m.config
        h.update(repr((c.max_seq_length, c.stride, c.pooling)).encode())
    h.update(getattr(teacher, "route_key", "").encode())  # out-of-fold teachers: which member scores what
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
    if "sha1" not in meta:
        return "written by an older version without checksums"
    if file_sha1(folder / LOGITS_FILE) != meta.get("sha1"):
        return "logits checksum differs"
    H = meta.get("num_hidden", 0)
    if H:
        size = (folder / HIDDEN_FILE).stat().st_size
        if size != words * H * 2:
            return f"hidden-state file has {size} bytes, expected {words * H * 2}"
        if file_sha1(folder / HIDDEN_FILE) != meta.get("hidden_sha1"):
            return "hidden-state checksum differs"
    return ""


def padded_rows(rows_of: Callable[[int], np.ndarray], indices: Sequence[int], max_len: int, width: int,
                columns: Optional[Sequence[int]] = None) -> torch.Tensor:
    """(B, max_len, width) float32 of per-sentence row blocks ``rows_of(i)``, zeros on padding,
    optionally with the last axis permuted by ``columns``."""
    out = np.zeros((len(indices), max_len, width), dtype=np.float32)
    for b, i in enumerate(indices):
        r = rows_of(int(i))
        out[b, : len(r)] = r
    t = torch.from_numpy(out)
    return t[..., list(columns)] if columns is not None else t


class TeacherLogitsCache:
    """Word-level teacher logits for a fixed list of sentences.

    Attributes:
        offsets: (N + 1,) int64, words of sentence i are rows ``offsets[i]:offsets[i+1]``.
        logits: (total_words, C) float16 memmap.
        labels: the teacher's label list (column order).
        hidden: (total_words, H) float16 memmap of word-pooled last hidden states, or ``None``.
    """

    def __init__(self, folder, offsets: np.ndarray, logits: np.ndarray, labels: List[str], key: str,
                 hidden: Optional[np.ndarray] = None) -> None:
        self.folder = Path(folder)
        self.offsets = offsets
        self.logits = logits
        self.labels = labels
        self.key = key
        self.hidden = hidden

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
        return padded_rows(self.sentence, indices, max_len, self.logits.shape[1], columns)

    def hidden_batch(self, indices: Sequence[int], max_len: int) -> torch.Tensor:
        """Padded float32 teacher hidden states (B, L, H) (zeros on padding)."""
        if self.hidden is None:
            raise ValueError(f"the cache in {self.folder} holds no hidden states (build it with hidden=True)")
        rows = lambda i: self.hidden[self.offsets[i] : self.offsets[i + 1]]  # noqa: E731
        return padded_rows(rows, indices, max_len, self.hidden.shape[1])

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
            logger.warning("teacher cache in %s cannot be trusted (%s): it will be rebuilt", folder, problem)
            return None
        n = int(offsets[-1])
        logits = np.memmap(folder / LOGITS_FILE, dtype=np.float16, mode="r", shape=(n, meta["num_labels"]))
        H = meta.get("num_hidden", 0)
        hidden = np.memmap(folder / HIDDEN_FILE, dtype=np.float16, mode="r", shape=(n, H)) if H else None
        return cls(folder, offsets, logits, meta["labels"], meta["key"], hidden)

    @classmethod
    def build(cls, teacher, sentences: Sequence[Sequence[str]], folder, batch_size: int = 64, chunk: int = 2048,
              show_progress: bool = True, hidden: bool = False) -> "TeacherLogitsCache":
        """Open the cache in ``folder`` if its key matches, else run the teacher once and write it.

        The teacher runs over ``chunk`` sentences at a time and rows are appended to the file, so
        memory stays bounded whatever the number of sentences. ``meta.json`` is written last:
        an interrupted build is never mistaken for a finished one. With ``hidden`` the teacher's
        word-pooled last hidden states are stored too (fp16, ``hidden.f16``).
        """
        folder = Path(folder)
        key = hashlib.sha1((teacher_fingerprint(teacher) + sentences_fingerprint(sentences)
                            + ("+hidden" if hidden else "")).encode()).hexdigest()
        cached = cls.open(folder)
        if cached is not None and cached.key == key:
            logger.info("teacher cache hit: %s (%d sentences)", folder, len(cached))
            return cached
        if cached is not None:
            logger.info("teacher cache in %s is stale (teacher, data or contents changed): rebuilding", folder)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / META_FILE).exists():
            (folder / META_FILE).unlink()
        offsets, H = cls._write_rows(teacher, sentences, folder, batch_size, chunk, show_progress, hidden)
        C = len(teacher.labels)
        meta = {"key": key, "num_labels": C, "labels": teacher.labels.labels, "num_sentences": len(sentences),
                "num_words": int(offsets[-1]), "sha1": file_sha1(folder / LOGITS_FILE), "num_hidden": H}
        if H:
            meta["hidden_sha1"] = file_sha1(folder / HIDDEN_FILE)
        write_json(folder / META_FILE, meta)
        logger.info("teacher cache written: %s (%d sentences, %d words, %.1f MB)", folder, len(sentences),
                    offsets[-1], offsets[-1] * (C + H) * 2 / 1e6)
        return cls.open(folder)

    @staticmethod
    def _write_rows(teacher, sentences, folder: Path, batch_size: int, chunk: int, show_progress: bool,
                    hidden: bool) -> Tuple[np.ndarray, int]:
        """Append the teacher's rows chunk by chunk to temporary files, then rename them."""
        offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
        H = 0
        hidden_file = atomic_open(folder / HIDDEN_FILE, "wb") if hidden else contextlib.nullcontext()
        with atomic_open(folder / LOGITS_FILE, "wb") as f, hidden_file as fh:
            bar = progress(total=len(sentences), desc="teacher logits", unit="sent", enabled=show_progress, leave=False)
            for a in range(0, len(sentences), chunk):
                block = sentences[a : a + chunk]
                if hidden:
                    logits, states = teacher.word_outputs(block, batch_size, hidden=True)
                else:
                    logits, states = teacher.word_logits(block, batch_size), None
                for j, lg in enumerate(logits):
                    f.write(lg.astype(np.float16).tobytes())
                    if states is not None:
                        fh.write(states[j].astype(np.float16).tobytes())
                        H = states[j].shape[1]
                    offsets[a + j + 1] = offsets[a + j] + lg.shape[0]
                bar.update(len(block))
            bar.close()
        np.save(folder / OFFSETS_FILE, offsets)
        if not hidden:
            (folder / HIDDEN_FILE).unlink(missing_ok=True)
        return offsets, H


class ConcatLogits:
    """Several logit sources (``TeacherLogitsCache``, ``TransferStore``) read as one, each
    contributing its first ``lengths[k]`` sentences in order (same label list required)."""

    def __init__(self, parts: Sequence, lengths: Sequence[int]) -> None:
        labels = {tuple(p.labels) for p in parts}
        if len(labels) != 1:
            raise ValueError("logit sources disagree on the label list")
        for p, n in zip(parts, lengths):
            if n > len(p):
                raise ValueError(f"a logit source holds {len(p)} sentences, {n} requested")
        self.parts, self.labels = list(parts), list(parts[0].labels)
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.hidden = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def sentence(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        return self.parts[k].sentence(i - int(self.starts[k]))

    def batch(self, indices: Sequence[int], max_len: int, columns: Optional[Sequence[int]] = None) -> torch.Tensor:
        return padded_rows(self.sentence, indices, max_len, len(self.labels), columns)

    def hidden_batch(self, indices: Sequence[int], max_len: int) -> torch.Tensor:
        raise ValueError("hidden states are not available from a transfer store")
