"""Shared fixtures: the tiny template NER data, a tiny WordPiece tokenizer and a tiny random BERT
(built from a config, no download)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)  # tests are tiny; 1 thread avoids oversubscription

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny"


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Runs call setup_logging (root handlers, run.log files): drop what a test added."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    """A writable copy of the tiny data dir (train/dev/test/unlabeled)."""
    d = tmp_path / "tiny"
    shutil.copytree(TINY, d)
    return d


def _all_tiny_words():
    words = set()
    for f in TINY.glob("*.txt"):
        for line in f.read_text(encoding="utf-8").splitlines():
            words.update(line.split()[:1] if "\t" in line else line.split())
    return sorted(words)


def make_tiny_tokenizer(folder: Path):
    """A BertTokenizerFast over a small WordPiece vocab: fixture words lowercased, some split into
    pieces so multi-sub-token words occur, plus single characters."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in _all_tiny_words() for c in w.lower()} | set("abcdefghijklmnopqrstuvwxyz0123456789.,!?-'"))
    vocab += chars + ["##" + c for c in chars]
    for w in _all_tiny_words():
        lw = w.lower()
        if len(lw) > 5:  # long words become two pieces: "visi" + "##ted"
            vocab += [lw[:4], "##" + lw[4:]]
        else:
            vocab.append(lw)
    seen, uniq = set(), []
    for v in vocab:
        if v not in seen:
            seen.add(v)
            uniq.append(v)
    (folder / "vocab.txt").write_text("\n".join(uniq) + "\n", encoding="utf-8")
    # transformers 5 builds from `vocab` and ignores `vocab_file` (all words became [UNK]); 4.x the reverse
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), vocab={v: i for i, v in enumerate(uniq)},
                            do_lower_case=True)
    tok.save_pretrained(str(folder))
    return tok


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random-weight BERT encoder folder (tokenizer + config + weights), like a hub model."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = make_tiny_tokenizer(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_labels():
    from nlp_distill.data.dataset_dir import load_data_dir

    return load_data_dir(TINY).labels


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory, tiny_encoder_dir):
    """Kind -> a tiny saved model folder of every kind (``tests/model_zoo.py``)."""
    from tests.model_zoo import build_model_folders

    return build_model_folders(tmp_path_factory.mktemp("model_zoo"), tiny_encoder_dir)
