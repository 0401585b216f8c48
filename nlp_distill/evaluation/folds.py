"""K-fold splits of one pool of tagged sentences, written as ordinary data folders.

Sentence i (numbered from 0 in the pool's order) belongs to fold ``i % K``. Fold k's run tests on
fold k, picks its epoch on fold ``(k - 1) % K`` and trains on the other K - 2 folds, so no run ever
sees its own test sentences. With K = 10 and WNUT-16 in its file order, fold 9 is exactly the
project's standard split (dev: i % 10 == 8, test: i % 10 == 9).
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nlp_distill.data.conll import Sentence, read_conll, write_conll
from nlp_distill.data.labels import LabelVocab
from nlp_distill.errors import ConfigError
from nlp_distill.io import atomic_dir, read_json, write_json

logger = logging.getLogger(__name__)

POOL_FILES = ("train.txt", "dev.txt", "test.txt")  # pooled in this order
FOLD_FILE = "fold.json"


@dataclass(frozen=True)
class Pool:
    """The tagged sentences a cross-validation splits, and the data folder's other files.

    Attributes:
        sentences: train.txt, then dev.txt and test.txt where present, in file order.
        sources: the files read, in pool order.
        labels_file / unlabeled_file: DATA_DIR/labels.txt and unlabeled.txt, copied into every
            fold (``None`` where absent; without labels.txt each fold gets the pool's tags).
        fingerprint: sha256 of the sentences and labels.txt (hex): keys cached teachers.
    """

    sentences: tuple
    sources: tuple
    labels_file: Optional[Path]
    unlabeled_file: Optional[Path]
    fingerprint: str


def read_pool(data_dir) -> Pool:
    """The tagged sentences of ``data_dir`` (train.txt, plus dev.txt and test.txt if present).

    Raises:
        ConfigError: no train.txt, or fewer sentences than a split needs (3 per fold at least).
    """
    d = Path(data_dir)
    if not (d / "train.txt").is_file():
        raise ConfigError(f"{d}: no train.txt; cross-validation splits the tagged sentences of train.txt (and of "
                          "dev.txt and test.txt where present) into folds")
    sents: List[Sentence] = []
    sources = []
    for name in POOL_FILES:
        if (d / name).is_file():
            sents += read_conll(d / name)
            sources.append(str(d / name))
    h = hashlib.sha256()
    for s in sents:
        h.update(("\t".join(s.tokens) + "\n" + "\t".join(s.tags) + "\n\n").encode("utf-8"))
    labels = d / "labels.txt"
    if labels.is_file():
        h.update(labels.read_bytes())
    unl = d / "unlabeled.txt"
    return Pool(tuple(sents), tuple(sources), labels if labels.is_file() else None,
                unl if unl.is_file() else None, h.hexdigest())


def fold_indices(n: int, folds: int, k: int) -> Dict[str, List[int]]:
    """Sentence indices of fold ``k``'s ``train``, ``dev`` and ``test`` parts (each ascending).

    test: i % folds == k; dev: i % folds == (k - 1) % folds; train: the rest.
    """
    if folds < 3:
        raise ConfigError(f"--folds {folds}: at least 3 folds (one to test, one to pick the epoch, one to train)")
    if not 0 <= k < folds:
        raise ConfigError(f"fold {k} does not exist with --folds {folds} (folds are 0..{folds - 1})")
    dev = (k - 1) % folds
    out: Dict[str, List[int]] = {"train": [], "dev": [], "test": []}
    for i in range(n):
        out["test" if i % folds == k else "dev" if i % folds == dev else "train"].append(i)
    return out


def check_pool_size(pool: Pool, folds: int) -> None:
    if len(pool.sentences) < 3 * folds:
        raise ConfigError(f"{len(pool.sentences)} tagged sentences are too few for {folds} folds "
                          f"(at least {3 * folds}); use fewer --folds")


def write_fold(pool: Pool, folds: int, k: int, folder) -> Path:
    """Write fold ``k`` as a data folder (train/dev/test.txt, labels.txt and unlabeled.txt where
    the pool has them, ``fold.json``), atomically; an existing folder of the same pool and fold is
    kept as it is.

    Raises:
        ConfigError: ``folder`` holds a fold of another pool or fold count.
    """
    folder = Path(folder)
    key = {"fingerprint": pool.fingerprint, "folds": folds, "fold": k}
    if (folder / FOLD_FILE).is_file():
        if read_json(folder / FOLD_FILE) != key:
            raise ConfigError(f"{folder} holds a fold of other data or another --folds; choose another --output_dir")
        return folder
    parts = fold_indices(len(pool.sentences), folds, k)
    with atomic_dir(folder) as tmp:
        for part, idx in parts.items():
            write_conll(tmp / f"{part}.txt", [pool.sentences[i] for i in idx])
        if pool.labels_file is not None:
            shutil.copyfile(pool.labels_file, tmp / "labels.txt")
        else:  # every fold gets the pool's whole label set, so a type missing from one fold's train is no error
            labels = LabelVocab.from_sentences(s.tags for s in pool.sentences).labels
            (tmp / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        if pool.unlabeled_file is not None:
            shutil.copyfile(pool.unlabeled_file, tmp / "unlabeled.txt")
        write_json(tmp / FOLD_FILE, key)
    return folder


def test_sentences(pool: Pool, folds: int, k: int) -> List[Sentence]:
    """Fold ``k``'s test sentences, in pool order."""
    return [pool.sentences[i] for i in fold_indices(len(pool.sentences), folds, k)["test"]]


def parse_folds(text: str, folds: int) -> List[int]:
    """``"0,1,2"`` or ``"0-4"`` or ``""`` (all) -> sorted fold numbers, each checked."""
    if not text.strip():
        return list(range(folds))
    out = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"--run_folds {text!r}: expected fold numbers like 0,1,2 or 0-4") from None
    bad = sorted(f for f in out if not 0 <= f < folds)
    if bad:
        raise ConfigError(f"--run_folds {text!r}: fold {bad[0]} does not exist with --folds {folds} (0..{folds - 1})")
    return sorted(out)


def seq_key(values: Sequence) -> str:
    """A short stable hex key of a sequence of JSON-able values."""
    return hashlib.sha256(repr(list(values)).encode("utf-8")).hexdigest()[:12]
