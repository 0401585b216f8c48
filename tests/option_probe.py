"""Run a training command through the CLI up to the point where training would start, and hand
back what the Trainer was given (model, loss function, batches, optimiser, scheduler), so a test
can check that a flag reached the object that uses it, not only config.json.

``Trainer.train`` is replaced by a function that raises :class:`Captured` carrying the Trainer:
the command does all of its preparation (data, teacher, cache, stores, student) for real and
stops before the first optimiser step. With ``finish=True`` it instead saves the model and a
checkpoint folder and returns at once, so the command's own ending (metrics, model card, checkpoint
clean-up) runs. Commands that do not train (export, inference, serving) run whole through
:func:`invoke`, which hands back their output or the one-line error that stopped them.
"""
from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from click.testing import CliRunner

from nlp_distill.config import TransformerConfig
from nlp_distill.data.conll import read_conll, write_conll
from nlp_distill.training.result import LoopResult
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


class Failed:
    """A command that stopped with an error instead of reaching the Trainer (its message)."""

    def __init__(self, message: str) -> None:
        self.message = message


class Finished:
    """A command that ran to its end: its stdout, and the Trainer it built (if it trained)."""

    def __init__(self, output: str, trainer: Optional[Trainer] = None) -> None:
        self.output, self.trainer = output, trainer


def _stop(self: Trainer, resume: bool = False):
    raise Captured(self, resume)


def _finish(self: Trainer, resume: bool = False) -> LoopResult:
    """Instead of training: the model as initialised saved as the best, a checkpoint left behind."""
    _finish.trainers.append(self)
    self.save_model(self.output_dir / "model")
    self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    return LoopResult(best_epoch=1, best_metric=0.0, history=[{"epoch_seconds": 0.0}], train_seconds=0.0)


_finish.trainers = []  # type: ignore[attr-defined]


def invoke(cli, args: Sequence[Any], env: Optional[Dict[str, str]] = None):
    """Invoke ``cli args`` in-process with the root logger restored afterwards; the click Result."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True, env=env)
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)


def outcome(r) -> Any:
    """``Finished``, or ``Failed`` with the one-line error (or the exception) that stopped it."""
    if r.exception is None:
        return Finished(r.stdout)
    if isinstance(r.exception, SystemExit) and r.exit_code:
        return Failed(r.output.strip().splitlines()[-1] if r.output.strip() else str(r.exit_code))
    return Failed(f"{type(r.exception).__name__}: {r.exception}")


def attempt(monkeypatch, cli, args: Sequence[Any], finish: bool = False):
    """Invoke ``cli args`` up to the first training step: ``Captured``, or ``Failed`` with the
    one-line error; with ``finish``, the whole command around a no-op training (``Finished``)."""
    monkeypatch.setattr(Trainer, "train", _finish if finish else _stop)
    del _finish.trainers[:]
    r = invoke(cli, args)
    if isinstance(r.exception, Captured):
        return r.exception
    if finish and r.exception is None:
        return Finished(r.stdout, _finish.trainers[0] if _finish.trainers else None)
    return outcome(r)


def capture(monkeypatch, cli, args: Sequence[Any]) -> Captured:
    """Invoke ``cli args``; return what reached the Trainer (fails with the output otherwise)."""
    c = attempt(monkeypatch, cli, args)
    assert isinstance(c, Captured), getattr(c, "message", c)
    return c


def reuse_loaded_teachers(monkeypatch, loaded: Dict[Any, Any]) -> None:
    """Teacher folders are read from disk once (``loaded`` keeps them across tests): ``load_model``
    hands back a deep copy of the first load (each run may cut or re-order its teacher's head), and
    the teacher's own dev/test scores (quoted in the student's metrics) are computed once."""
    from nlp_distill.distill import teachers

    orig = teachers.load_model

    def load_model(path, *a, **kw):
        key = (str(path), a, tuple(sorted(kw.items())))
        if key not in loaded:
            loaded[key] = orig(path, *a, **kw)
        model = copy.deepcopy(loaded[key])
        model.probe_key = key
        return model

    def teacher_scores(teacher, dev, test=None):  # what the student's metrics quote, once per teacher and data
        key = getattr(teacher, "probe_key", None)
        if key is None:
            return orig_scores(teacher, dev, test)
        key = ("scores", key, teacher.config.max_seq_length, repr(dev), repr(test))
        if key not in loaded:
            loaded[key] = orig_scores(teacher, dev, test)
        return copy.deepcopy(loaded[key])

    orig_scores = teachers.teacher_scores
    monkeypatch.setattr(teachers, "load_model", load_model)
    for module in ("nlp_distill.training.student", "nlp_distill.training.fit"):
        monkeypatch.setattr(f"{module}.teacher_scores", teacher_scores)


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
