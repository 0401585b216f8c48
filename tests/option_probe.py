"""Run a training command through the CLI up to the point where training would start, and hand
back what the Trainer was given (model, loss function, batches, optimiser, scheduler), so a test
can check that a flag reached the object that uses it, not only config.json.

``Trainer.train`` is replaced by a function that raises :class:`Captured` carrying the Trainer:
the command does all of its preparation (data, teacher, cache, stores, student) for real and
stops before the first optimiser step.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
from click.testing import CliRunner

from nlp_distill.config import TransformerConfig
from nlp_distill.data.conll import read_conll, write_conll
from nlp_distill.training.trainer import Trainer
from tests.conftest import TINY

# small, fast students: softmax, random 8-d words, no augmentation unless a test asks for it
STUDENT_ARGS = ["--hidden", "8", "--word_embedding_dims", "8", "--char_emb_dim", "4", "--char_hidden", "6",
                "--embedding_file", "none", "--no_crf", "--batch_size", "8", "--epochs", "2", "--device", "cpu",
                "--augment", "0", "--no_show_progress"]


class Captured(Exception):
    """Raised instead of training: ``trainer`` is the Trainer the command built."""

    def __init__(self, trainer: Trainer, resume: bool) -> None:
        super().__init__("captured")
        self.trainer, self.resume = trainer, resume


def _stop(self: Trainer, resume: bool = False):
    raise Captured(self, resume)


def capture(monkeypatch, cli, args: Sequence[Any]) -> Captured:
    """Invoke ``cli args``; return what reached the Trainer (fails with the output otherwise)."""
    monkeypatch.setattr(Trainer, "train", _stop)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
    assert isinstance(r.exception, Captured), (r.output, repr(r.exception))
    return r.exception


def small_data_dir(folder: Path, n_train: int = 16, n_dev: int = 6) -> Path:
    """The tiny fixture cut to ``n_train`` distinct / ``n_dev`` sentences (fast teacher passes)."""
    folder.mkdir(parents=True, exist_ok=True)
    distinct = list({tuple(s.tokens): s for s in reversed(read_conll(TINY / "train.txt"))}.values())[::-1]
    write_conll(folder / "train.txt", distinct[:n_train])
    write_conll(folder / "dev.txt", read_conll(TINY / "dev.txt")[:n_dev])
    write_conll(folder / "test.txt", read_conll(TINY / "test.txt")[:n_dev])
    shutil.copy(TINY / "unlabeled.txt", folder / "unlabeled.txt")
    return folder


def save_teacher(folder: Path, encoder_dir: Path, labels, seed: int = 0, holdout_fold: Sequence[int] = (),
                 label_order: Sequence[str] = ()) -> Path:
    """A random-weight tiny BERT teacher (decisive head: logits far from uniform) saved to ``folder``."""
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.models.transformer import TransformerTokenClassifier

    torch.manual_seed(seed)
    lv = LabelVocab(list(label_order)) if label_order else labels
    t = TransformerTokenClassifier.from_pretrained(str(encoder_dir), labels=lv, config=TransformerConfig(
        max_seq_length=32, precision="fp32", holdout_fold=list(holdout_fold)))
    with torch.no_grad():
        t.model.classifier.weight.normal_(0, 1.0)
    t.save_pretrained(folder)
    return folder


def first_batches(tr: Trainer, n: int = 2, epoch: int = 0) -> List[Any]:
    """The first ``n`` collated batches of ``epoch`` as the Trainer would see them."""
    items = list(tr.train_batches(epoch))[:n]
    return [tr.collate(i) if tr.collate is not None else i for i in items]


def loss_on(tr: Trainer, batch, train_mode: bool = False) -> Dict[str, float]:
    """The loss function's summed loss, item count and parts on ``batch`` (eval mode by default:
    no dropout, so two runs compare exactly)."""
    tr.model.train(train_mode)
    torch.manual_seed(0)
    with torch.no_grad():
        out = tr.loss_fn(batch)
    res = {"loss": float(out[0]), "n": float(out[1])}
    if len(out) > 2:
        res.update({f"part_{k}": float(v) for k, v in out[2].items()})
    return res
