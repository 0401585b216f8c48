"""Label a corpus with Ray Data: an actor pool of teachers writes the Parquet shards of a transfer
store (``nlp_distill.data.shards``), the same shards the single-process and torchrun paths write.

The pipeline, for input files (a path, a glob or a comma list, read in sorted order)::

    plan (driver)     one pass over the text: where each shard's sentences start (file, byte)
    read (tasks)      ray.data.from_items(shard plan).map(read the shard's byte range -> sentences)
    label (actors)    .map_batches(TeacherActor, concurrency=workers): one teacher per actor,
                      length-sorted teacher batches inside; each shard written atomically
    finish (driver)   every shard present -> _store.json marked complete

Shard ``k`` always holds input sentences ``[k * S, (k + 1) * S)``, whichever worker labels it, so a
rerun after a failure skips the shards already written, and the store equals a single-process
one. Ray runs on this machine (``ray.init()``) unless ``RAY_ADDRESS`` names a cluster, or the caller
has already called ``ray.init``. On a cluster the input files and the output folder must be on a
filesystem every node sees, and nlp-distill installed on every node.

Ray is imported only when a function here runs (``pip install 'ray[data]'``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.config import LabelConfig
from nlp_distill.data import shards
from nlp_distill.data.unlabeled import detect_format, expand_inputs, iter_unlabeled
from nlp_distill.distill.teacher_cache import teacher_fingerprint
from nlp_distill.distill.transfer_store import TransferStore, claim_folder, finish_folder, label_block
from nlp_distill.errors import ConfigError
from nlp_distill.utils.progress import progress_enabled, stderr_is_terminal

logger = logging.getLogger(__name__)


def plan_shards(paths: Sequence[Path], input_format: str = "auto", encoding: str = "utf-8",
                shard_sentences: int = 2048, limit: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    """Where each shard's sentences lie: one streamed pass reading the sentences (the same reader
    as the single-process path), one pass mapping their first lines to byte offsets.

    Returns:
        (one row per shard: ``shard``, ``first`` sentence, ``count``, ``pieces`` (JSON list of
        [path, start byte, end byte, format]), the number of sentences)
    """
    fmts = [detect_format(p, encoding) if input_format == "auto" else input_format for p in paths]
    starts: List[Tuple[int, int]] = []  # (file, line) of each shard's first sentence
    end: Optional[Tuple[int, int]] = None  # (file, line) of the first sentence past ``limit``
    n = 0
    for fi, (p, fmt) in enumerate(zip(paths, fmts)):
        for s in iter_unlabeled(p, fmt, encoding=encoding):
            if limit is not None and n == limit:
                end = (fi, s.line)
                break
            if n % shard_sentences == 0:
                starts.append((fi, s.line))
            n += 1
        if end is not None:
            break
    wanted: Dict[int, set] = {}
    for fi, line in starts + ([end] if end else []):
        wanted.setdefault(fi, set()).add(line)
    byte: Dict[Tuple[int, int], int] = {}
    for fi, lines in wanted.items():
        pos = 0
        with open(paths[fi], "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno in lines:
                    byte[(fi, lineno)] = pos
                pos += len(raw)
    sizes = [p.stat().st_size for p in paths]
    bounds = [(fi, byte[(fi, line)]) for fi, line in starts]
    bounds.append((end[0], byte[end]) if end else (len(paths) - 1, sizes[-1]))
    plan = []
    for k in range(len(starts)):
        (fa, a), (fb, b) = bounds[k], bounds[k + 1]
        pieces = []
        for fi in range(fa, fb + 1):
            lo, hi = (a if fi == fa else 0), (b if fi == fb else sizes[fi])
            if hi > lo:
                pieces.append([str(paths[fi]), lo, hi, fmts[fi]])
        plan.append({"shard": k, "first": k * shard_sentences, "count": min(shard_sentences, n - k * shard_sentences),
                     "pieces": json.dumps(pieces)})
    return plan, n


def read_pieces(pieces: Sequence[Sequence[Any]], encoding: str = "utf-8") -> List[List[str]]:
    """The sentences of byte ranges of input files (``plan_shards``), parsed by the same reader
    as the single-process path."""
    sents: List[List[str]] = []
    for path, lo, hi, fmt in pieces:
        with open(path, "rb") as f:
            f.seek(lo)
            data = f.read(hi - lo)
        with tempfile.TemporaryDirectory() as tmp:  # the readers take a path
            part = Path(tmp) / Path(path).name
            part.write_bytes(data)
            sents.extend(s.tokens for s in iter_unlabeled(part, fmt, encoding=encoding))
    return sents


@dataclasses.dataclass(frozen=True)
class TeacherLoader:
    """Loads the teacher of a ``LabelConfig`` on a Ray worker (picklable: sent to every actor)."""

    paths: Tuple[str, ...]
    device: str = "cpu"
    data_dir: str = ""
    encoding: str = "utf-8"

    def __call__(self):
        import torch

        from nlp_distill.distill.teachers import data_labels, load_teacher

        labels = data_labels(self.data_dir, list(self.paths), self.encoding) if self.data_dir else None
        return load_teacher(list(self.paths), torch.device(self.device), labels)


def _read_shard(row: Dict[str, Any], encoding: str = "utf-8") -> Dict[str, Any]:
    """Ray Data ``map``: a shard's plan row -> its sentences, one per line of ``text``."""
    pieces = json.loads(row["pieces"])
    sents = read_pieces(pieces, encoding)
    if len(sents) != row["count"]:
        raise ConfigError(f"{[p[0] for p in pieces]}: shard {row['shard']} holds {len(sents)} sentences, the plan "
                          f"counted {row['count']}; was the input changed while it was labeled?")
    return {"shard": row["shard"], "first": row["first"], "count": row["count"],
            "text": "\n".join(" ".join(s) for s in sents)}


class _TeacherActor:
    """Ray Data actor: one teacher, loaded once; each row of a batch is a shard, labeled and
    written (atomically) to the store folder."""

    def __init__(self, load: Callable[[], Any], folder: str, key: str, labels: List[str], batch_size: int,
                 threads: int) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.teacher = load()
        if teacher_fingerprint(self.teacher) != key:
            raise ConfigError(f"the teacher loaded on a Ray worker differs from the driver's (fingerprint); every node "
                              f"must see the same --teacher_model_path files")
        self.folder, self.key, self.labels, self.batch_size = folder, key, labels, batch_size

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out: Dict[str, List[int]] = {"shard": [], "sentences": [], "words": []}
        for k, first, count, text in zip(batch["shard"], batch["first"], batch["count"], batch["text"]):
            block = [line.split() for line in str(text).split("\n")] if count else []
            flat, lengths, conf = label_block(self.teacher, block, self.batch_size)
            shards.write_shard(self.folder, int(k), int(first), block, flat, lengths, conf, self.key, self.labels)
            out["shard"].append(int(k))
            out["sentences"].append(len(block))
            out["words"].append(int(lengths.sum()))
        return {k: np.asarray(v, np.int64) for k, v in out.items()}


def _resources(ray, device: str, workers: int) -> Tuple[int, Dict[str, float], int]:
    """(actors, Ray resources per actor, torch threads per actor) for ``device``."""
    total = ray.cluster_resources()
    if device.startswith("cuda"):
        gpus = int(total.get("GPU", 0))
        if not gpus:
            raise ConfigError("--device cuda with --engine ray: the Ray cluster has no GPU (use --device cpu)")
        return workers or gpus, {"num_gpus": 1, "num_cpus": 1}, 0
    return workers or max(1, int(total.get("CPU", 1))), {"num_cpus": 1}, 1


def _ray():
    """The ray module, Ray Data imported."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'ray[data]' (in the clone: pip install -e '.[ray]')") from None
    return ray


def _teacher_key(load: Callable[[], Any]) -> Tuple[str, List[str]]:
    """(fingerprint, labels) of the actors' teacher, loaded once on the driver (on its CPU) to
    claim the store with."""
    driver_load = dataclasses.replace(load, device="cpu") if isinstance(load, TeacherLoader) else load
    teacher = driver_load()
    return teacher_fingerprint(teacher), list(teacher.labels.labels)


def _label_shards(ray, todo: List[Dict[str, Any]], plan: List[Dict[str, Any]], folder: Path, encoding: str,
                  workers: int, actor_args: Tuple, per_actor: Dict[str, Any]) -> int:
    """Run the shards of ``todo`` through ``workers`` teacher actors; returns how many were written.
    A failure logs how many whole shards the store holds (a rerun labels the rest)."""
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map(_read_shard, fn_kwargs={"encoding": encoding}, num_cpus=0)
    ds = ds.map_batches(_TeacherActor, batch_size=1, concurrency=workers, fn_constructor_args=actor_args, **per_actor)
    done = 0
    try:
        for row in ds.iter_rows():
            done += 1
            logger.debug("shard %d: %d sentences, %d words", row["shard"], row["sentences"], row["words"])
    except Exception:
        kept = sum((folder / shards.shard_name(r["shard"])).is_file() for r in plan)
        logger.error("Ray labeling stopped with %d of %d shards written to %s (whole shards only); run the "
                     "same command again to label the rest", kept, len(plan), folder)
        raise
    return done


def label_with_ray(label: LabelConfig, folder, device: Optional[str] = None, encoding: str = "utf-8",
                   load: Optional[Callable[[], Any]] = None, show_progress: bool = True) -> TransferStore:
    """Label ``label.unlabeled_filename`` (a file, glob or comma list) into the shard store
    ``folder`` with Ray Data: ``label.workers`` actors (0: one per GPU with ``device`` cuda, else one
    per CPU of the cluster), each with its own teacher; ``label.chunk_sentences`` sentences per shard;
    a rerun keeps the shards already written.

    Args:
        label: the labeling settings (teacher, input, limit, shard size, batch size, workers).
        folder: the store folder (on a cluster: a filesystem every node sees).
        device: where each actor's teacher runs (default: cuda when the cluster has GPUs).
        encoding: the input's text encoding.
        load: a picklable callable returning the teacher (default: ``TeacherLoader`` of
            ``label.teacher_model_path``, its head cut to ``label.data_dir``'s labels).
        show_progress: Ray Data's progress bars and a per-shard log line.

    Raises:
        ConfigError: ray missing, no input, another teacher's store in ``folder``.
    """
    ray = _ray()
    paths = expand_inputs(label.unlabeled_filename)
    started = not ray.is_initialized()
    if started:
        ray.init(logging_level=logging.WARNING)  # RAY_ADDRESS (a cluster) when set, else Ray on this machine
    try:
        dev = device or ("cuda" if ray.cluster_resources().get("GPU") else "cpu")
        load = TeacherLoader(tuple(label.teacher_model_path), dev, label.data_dir, encoding) if load is None else load
        key, labels = _teacher_key(load)
        folder = Path(folder)
        S = label.chunk_sentences
        claim_folder(folder, key, labels, S)
        plan, n = plan_shards(paths, label.input_format, encoding, S, label.max_unlabeled)
        todo = [r for r in plan if not (folder / shards.shard_name(r["shard"])).is_file()]
        workers, per_actor, threads = _resources(ray, dev, label.workers)
        workers = max(1, min(workers, len(todo)))
        logger.info("labeling %d sentences from %d file(s) into %s with Ray: %d of %d shards to label, %d actors (%s)",
                    n, len(paths), folder, len(todo), len(plan), workers, dev)
        # Ray Data's bars redraw in place: on a terminal only (the per-shard log lines stay)
        ray.data.DataContext.get_current().enable_progress_bars = show_progress and progress_enabled() and stderr_is_terminal()
        t = time.perf_counter()
        actor_args = (load, str(folder), key, labels, label.teacher_batch_size, threads)
        done = _label_shards(ray, todo, plan, folder, encoding, workers, actor_args, per_actor) if todo else 0
        finish_folder(folder, key, labels, S, len(plan), n)
        secs = time.perf_counter() - t
        logger.info("transfer store %s: %d sentences in %d shards (%d labeled in %.1fs, %d kept from an earlier run)",
                    folder, n, len(plan), done, secs, len(plan) - len(todo))
    finally:
        if started:
            ray.shutdown()
    return TransferStore(folder)
