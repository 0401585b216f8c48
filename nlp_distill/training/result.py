"""What a training run returns, and the final scores it writes to ``metrics.json``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from nlp_distill.data.conll import Sentence
from nlp_distill.io import folder_size
from nlp_distill.metrics import evaluate_split
from nlp_distill.utils.device import environment


@dataclass
class TrainResult:
    """The outcome of ``train_student``, ``distil_student`` or ``fit_transformer``.

    Attributes:
        model: the best-on-dev model, loaded back from ``output_dir/model`` (``None`` on torchrun
            ranks other than 0, which neither score nor write).
        metrics: the scores written to ``output_dir/metrics.json``: ``dev`` and ``test``
            (``evaluate_split`` dicts; ``test`` is ``None`` without test sentences),
            ``best_epoch`` (1-based), ``epochs_run``, ``train_seconds``, ``parameters``,
            ``size_bytes``, ``environment`` and the run's own extras (``{}`` on other ranks).
        output_dir: the folder holding ``model/``, ``metrics.json``, ``train_log.jsonl`` and
            ``checkpoint/`` (the last epoch's optimiser state, left for a resume: delete it when
            the run is final).
    """

    model: Optional[nn.Module]
    metrics: Dict[str, Any]
    output_dir: Path

    @property
    def dev_f1(self) -> Optional[float]:
        """The best model's dev F1 (``None`` on other torchrun ranks)."""
        return self.metrics["dev"]["f1"] if self.metrics else None


@dataclass
class LoopResult:
    """What ``Trainer.train`` returns.

    Attributes:
        best_epoch: 1-based epoch whose weights ``model/`` holds (0 when no epoch ran).
        best_metric: its dev ``metric_for_best``.
        history: one record per epoch run (the lines of ``train_log.jsonl``).
        train_seconds: wall time of this call.
    """

    best_epoch: int
    best_metric: float
    history: List[Dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def epoch_seconds(self) -> List[float]:
        """Training seconds of each epoch run (evaluation excluded)."""
        return [h["epoch_seconds"] for h in self.history]


def final_metrics(best: nn.Module, predict: Callable[[Sequence[Sequence[str]]], List[List[str]]],
                  loop: LoopResult, dev: Sequence[Sentence], test: Sequence[Sentence], model_dir,
                  **extra: Any) -> Dict[str, Any]:
    """The best model scored once on dev and test, beside the loop's timings, its size and the
    machine: the dict every run writes to ``metrics.json`` (``extra`` keys appended).

    Args:
        best: the best-on-dev model (``num_parameters()`` is read).
        predict: ``token lists -> tag lists`` of ``best``.
        model_dir: the saved folder whose bytes are reported.
    """
    return {"dev": evaluate_split(predict, dev), "test": evaluate_split(predict, test) if test else None,
            "best_epoch": loop.best_epoch, "epochs_run": len(loop.history), "train_seconds": loop.train_seconds,
            **extra, "parameters": best.num_parameters(), "size_bytes": folder_size(model_dir),
            "environment": environment()}
