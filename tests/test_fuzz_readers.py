"""Fuzz: whatever bytes a file holds, every reader parses it or raises DataFormatError with a
line number (or, for an empty result, the file name): never another exception."""
from __future__ import annotations

import random

import pytest

from nlp_distill.data.conll import read_conll
from nlp_distill.data.labels import read_labels_txt
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.errors import DataFormatError
from tests.conftest import TINY

SEED_TEXT = (TINY / "train.txt").read_bytes()[:3000]


def _mutate(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    if kind == 1:  # a real file cut anywhere
        return SEED_TEXT[: rng.randrange(len(SEED_TEXT))]
    if kind == 2:  # lines with mixed column counts
        lines = SEED_TEXT.decode().splitlines()
        return "\n".join(l + (" extra" * rng.randrange(3) if rng.random() < 0.2 else "") for l in lines).encode()
    if kind == 3:  # random Unicode, blank lines, tabs
        alphabet = "aZ09 \t\n\n-_BIO\u00e9\u4e2d\U0001f600\u200b\u2028\r"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 300))).encode("utf-8")
    data = bytearray(SEED_TEXT)  # byte flips in a real file
    for _ in range(rng.randrange(1, 10)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


READERS = {
    "conll": lambda p: read_conll(p),
    "unlabeled": lambda p: list(iter_unlabeled(p)),
    "labels": lambda p: read_labels_txt(p),
}


SEEDS = {"conll": 101, "unlabeled": 202, "labels": 303}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_never_crash(reader, tmp_path):
    rng = random.Random(SEEDS[reader])  # fixed: str hash() changes with every process
    path = tmp_path / "f.txt"
    outcomes = {"parsed": 0, "error": 0}
    for _ in range(300):
        path.write_bytes(_mutate(rng))
        try:
            READERS[reader](path)
            outcomes["parsed"] += 1
        except DataFormatError as e:
            assert str(path) in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] and (outcomes["parsed"] or reader == "labels"), outcomes  # both paths exercised
