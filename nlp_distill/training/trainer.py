"""One small generic training loop. It knows nothing about teachers: it gets a ``loss_fn``."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

from nlp_distill.config import TrainerConfig
from nlp_distill.errors import ConfigError
from nlp_distill.integrations import tracking
from nlp_distill.io import atomic_dir
from nlp_distill.utils import distributed as ddp
from nlp_distill.training.checkpoint import load_state, rng_state, save_state, seed_everything, set_rng_state
from nlp_distill.training.result import LoopResult
from nlp_distill.utils.memory import limit_heap_growth
from nlp_distill.utils.progress import progress

logger = logging.getLogger(__name__)

# loss_fn(batch) -> (summed loss over items, number of items[, {part name: summed value}]); the
# trainer divides by the item count of the whole accumulation group, so accumulation is exactly
# one large batch. Named parts (e.g. gold / kd / hidden) are logged per epoch and per step.
LossFn = Callable[[Any], Tuple]


def build_optimizer(params: Iterable, config: TrainerConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected adam | adamw | sgd")


def build_scheduler(opt: torch.optim.Optimizer, config: TrainerConfig, total_steps: int):
    warmup = int(config.warmup_ratio * total_steps)
    if config.scheduler == "constant":
        f = lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0  # noqa: E731
    elif config.scheduler == "linear":
        def f(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    else:
        raise ValueError(f"unknown scheduler {config.scheduler!r}; expected constant | linear")
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class WeightAverage:
    """Exponential moving average of parameters, updated after each optimiser step with decay
    ``min(decay, (1 + t) / (10 + t))`` at step t (so early steps, far from the end point, fade
    fast); ``swapped()`` puts the average into the model for a while (evaluation, saving)."""

    def __init__(self, params: Sequence[torch.Tensor], decay: float) -> None:
        self.params, self.decay = list(params), decay
        self.restart()

    def restart(self) -> None:
        """Start averaging from the current parameters."""
        self.steps = 0
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - d)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        for s, p in zip(self.shadow, self.params):
            s.data, p.data = p.data, s.data  # swap storages: no copy
        try:
            yield
        finally:
            for s, p in zip(self.shadow, self.params):
                s.data, p.data = p.data, s.data

    def state_dict(self) -> Dict[str, Any]:
        return {"steps": self.steps, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, st: Dict[str, Any]) -> None:
        self.steps = st["steps"]
        for s, v in zip(self.shadow, st["shadow"]):
            s.copy_(v)


class Trainer:
    """Train ``model`` with ``loss_fn``; evaluate on dev each epoch; keep the best on dev.

    Every argument is a keyword; the first eight are required::

        Trainer(model=student, config=TrainerConfig(epochs=5), loss_fn=lambda b: student.gold_loss(student(b), b),
                train_batches=lambda epoch: batches, num_batches=len(batches),
                evaluate=lambda: evaluate_split(student.predict, dev), save_model=student.save_pretrained,
                output_dir="runs/x").train()

    Args:
        model: the module whose parameters are trained (and whose state_dict is checkpointed).
        config: loop settings.
        loss_fn: ``batch -> (loss summed over items, number of items[, {part name: summed value}])``;
            the loop divides by the items of the whole accumulation group and logs the parts.
        train_batches: ``epoch -> iterable of batches`` (deterministic per epoch, for resume).
        num_batches: batches per epoch (for the schedule and progress bar).
        evaluate: ``() -> metrics dict`` on dev; must contain ``config.metric_for_best``.
        save_model: ``folder -> None`` writes the model in its save format.
        output_dir: run folder: ``model/`` (best on dev), ``checkpoint/`` (last epoch, for resume),
            ``train_log.jsonl``.
        param_groups: optional optimiser parameter groups (default: all trainable parameters).
        patience_start: epochs before this one never count towards early stopping (e.g. the
            representation stage of a staged distillation, where dev F1 means nothing yet).
        collate: optional ``item -> batch``; then ``train_batches`` yields cheap items (e.g. index
            lists) and only this rank's share is collated.

    Under torchrun (see :mod:`nlp_distill.utils.distributed`) rank r trains on batches r, r+N,
    r+2N, ... of each epoch and every optimiser step sums gradients and item counts over ranks, so
    N processes with ``grad_accum_steps`` A take the steps of one process with A*N. Rank 0 alone
    evaluates, saves and logs; the others receive its dev score (early stopping stays in step).

    After ``train()`` the model holds the best epoch's weights (the moving average with
    ``ema_decay``), as ``model/`` does; a resumed run whose best epoch came before the resume keeps
    its last weights in memory (reload ``model/``). ``checkpoint/trainer_state.pt`` (the last
    epoch's model, optimiser, scheduler and RNG) stays in ``output_dir`` for ``train(resume=True)``:
    delete it once the run is final (the CLI does unless ``--keep_checkpoint``).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        config: TrainerConfig,
        loss_fn: LossFn,
        train_batches: Callable[[int], Iterable],
        num_batches: int,
        evaluate: Callable[[], Dict[str, Any]],
        save_model: Callable[[Path], None],
        output_dir,
        param_groups: Optional[Sequence[Dict]] = None,
        patience_start: int = 0,
        collate: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.train_batches = train_batches
        self.num_batches = num_batches
        self.evaluate = evaluate
        self.save_model = save_model
        self.output_dir = Path(output_dir)
        self.patience_start = patience_start
        self.collate = collate
        params = param_groups or [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, config)
        self.rank, self.world_size = ddp.world()
        self.local_batches = math.ceil(num_batches / self.world_size)  # ranks short of one train on nothing
        self.steps_per_epoch = math.ceil(self.local_batches / config.grad_accum_steps)
        self.config = config = at_least_min_steps(config, self.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, config, self.steps_per_epoch * config.epochs)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.log_path = self.output_dir / "train_log.jsonl"
        # the run's trackers (report_to) when the caller opened them (a run folder); else train()
        # opens its own from config.report_to
        self.trackers: Optional[tracking.Trackers] = tracking.current()
        self.global_step = 0
        self.ema = WeightAverage(self.trainable, config.ema_decay) if config.ema_decay else None
        self.ckpt_path = self.output_dir / "checkpoint" / "trainer_state.pt"
        self._best_state: Optional[Dict[str, torch.Tensor]] = None  # restored into the model after train()

    def _log(self, record: Dict[str, Any]) -> None:
        if self.rank:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _step(self, n_items: float, sums: Optional[Dict[str, float]] = None) -> None:
        n_items = ddp.all_reduce_grads(self.trainable, n_items)  # no-op in one process
        scale = 1.0 / max(n_items, 1.0)
        for p in self.trainable:
            if p.grad is not None:
                p.grad.mul_(scale)
        if self.config.max_grad_norm and self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        if self.trackers is not None and self.trackers.per_step:  # the loss split into its parts, and lr
            self.trackers.log_step_metrics({"lr": self.scheduler.get_last_lr()[0],
                                            **{k: v * scale for k, v in (sums or {}).items()}}, self.global_step)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update()

    def train(self, resume: bool = False) -> LoopResult:
        """Run the loop. With ``resume``, continue from ``checkpoint/`` (model, optimiser,
        scheduler, RNG, epoch, best score) when it exists. Each epoch's record also goes to the
        run's trackers (``config.report_to``); without a run folder's, the loop opens and ends its own.

        Returns:
            the best epoch (1-based), its dev score, one record per epoch and the wall time.
        """
        own = None
        if self.trackers is None and not self.rank:
            own = self.trackers = tracking.make_trackers(self.config.report_to, self.output_dir, self.config.mlflow_uri,
                                                         resume=resume)
            own.log_params({"trainer": self.config.to_dict()})
        try:
            result = self._train(resume)
        except BaseException:
            if own is not None:
                own.finish(failed=True)
                self.trackers = None
            raise
        if own is not None:
            own.finish()
            self.trackers = None  # a later train() opens a new run
        return result

    def _train(self, resume: bool) -> LoopResult:
        cfg = self.config
        limit_heap_growth()  # varying batch shapes would otherwise grow resident memory every epoch
        self.output_dir.mkdir(parents=True, exist_ok=True)
        start_epoch, best, best_epoch, bad_epochs, history = self._resume() if resume else (0, -math.inf, -1, 0, [])
        if start_epoch == 0 and not history:
            seed_everything(cfg.seed)
            if self.log_path.exists():
                self.log_path.unlink()
        t0 = time.perf_counter()
        self.global_step = start_epoch * self.steps_per_epoch
        ddp.broadcast_module(self.model)  # identical starting weights on every rank
        if self.ema is not None and start_epoch == 0 and not history:
            self.ema.restart()  # from the broadcast weights
        for epoch in range(start_epoch, cfg.epochs):
            te = time.perf_counter()
            train = self._train_epoch(epoch)
            train_seconds = time.perf_counter() - te
            metrics, score = self._evaluate()
            improved = score > best
            if improved:
                best, best_epoch, bad_epochs = score, epoch, 0
                self._save_best()
            elif epoch >= self.patience_start and best != 0:  # a dev score still 0 (no entity tagged): not started
                bad_epochs += 1
            history.append(self._record(epoch, train, train_seconds, metrics, score, improved))
            self._checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": epoch, "best": best,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "history": history,
                "ema": self.ema.state_dict() if self.ema is not None else None,
            })
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                logger.info("early stopping: no dev improvement for %d epochs", bad_epochs)
                break
        ddp.barrier()  # rank 0's last model/ is written before any rank reads it
        if self._best_state is not None:  # the in-memory model matches model/
            self.model.load_state_dict(self._best_state)
        return LoopResult(best_epoch + 1, best, history, time.perf_counter() - t0)

    def _weights(self):
        """The weights dev judges and ``model/`` keeps: the moving average when there is one."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext()

    def _evaluate(self) -> Tuple[Dict[str, Any], float]:
        """(dev metrics (rank 0; {} elsewhere), the score every rank receives)."""
        self.model.eval()
        with self._weights():
            metrics = self.evaluate() if not self.rank else {}
        return metrics, ddp.broadcast_object(metrics[self.config.metric_for_best] if not self.rank else None)

    def _save_best(self) -> None:
        """Write ``model/`` (rank 0) and keep a CPU copy of the weights for the end of ``train()``."""
        with self._weights():
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if not self.rank:
                with atomic_dir(self.output_dir / "model") as tmp:
                    self.save_model(tmp)

    def _record(self, epoch: int, train: Dict[str, float], seconds: float, metrics: Dict[str, Any], score: float,
                improved: bool) -> Dict[str, Any]:
        """The epoch's record: written to train_log.jsonl and the run's trackers, logged, returned."""
        rec = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train.items()}, "epoch_seconds": seconds,
               "lr": self.scheduler.get_last_lr()[0],
               **{f"dev_{k}": v for k, v in metrics.items() if not isinstance(v, dict)}, "best": improved}
        self._log(rec)
        if self.trackers is not None and not self.rank:
            self.trackers.log_epoch(rec)
        logger.info("epoch %d: loss %.4f dev %s %.4f%s (%.1fs)", epoch + 1, rec["train_loss"],
                    self.config.metric_for_best, score, " *" if improved else "", seconds)
        return rec

    def _checkpoint(self, state: Dict[str, Any]) -> None:
        if not self.rank:
            save_state(self.ckpt_path, state)

    def _resume(self) -> Tuple[int, float, int, int, list]:
        """(start epoch, best score, best epoch, bad epochs, history) from ``checkpoint/``, with
        model, optimiser, scheduler and RNG restored; a fresh start when there is none."""
        if not self.ckpt_path.is_file():
            return 0, -math.inf, -1, 0, []
        cfg = self.config
        st = load_state(self.ckpt_path)
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        if self.ema is not None:
            if st.get("ema") is None:
                raise ConfigError(f"{self.ckpt_path} was written without --ema_decay; resume with the same settings")
            self.ema.load_state_dict(st["ema"])
        start_epoch = st["epoch"] + 1
        if cfg.early_stopping_patience and st["bad_epochs"] >= cfg.early_stopping_patience:
            start_epoch = cfg.epochs  # the run had early-stopped: it is finished
        logger.info("resumed from %s at epoch %d (best %s=%.4f)", self.ckpt_path, start_epoch, cfg.metric_for_best,
                    st["best"])
        return start_epoch, st["best"], st["best_epoch"], st["bad_epochs"], st["history"]

    def _train_epoch(self, epoch: int) -> Dict[str, float]:
        """One pass over the epoch's batches; returns the loss (and its named parts, when
        ``loss_fn`` returns them as a third element) per item."""
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, float] = {"loss": 0.0}
        group: Dict[str, float] = {}
        total_items = group_items = 0.0
        in_group = 0
        mine = itertools.islice(self.train_batches(epoch), self.rank, None, self.world_size)
        bar = progress(range(self.local_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       enabled=cfg.show_progress and not self.rank, log_every=0.25, leave=False, dynamic_ncols=True)
        for _ in bar:
            batch = next(mine, None)  # None: this rank's share ran out; it still joins the step
            if batch is not None:
                if self.collate is not None:
                    batch = self.collate(batch)
                out = self.loss_fn(batch)
                loss_sum, n = out[0], float(out[1])
                loss_sum.backward()
                for k, v in {"loss": float(loss_sum.detach()), **(out[2] if len(out) > 2 else {})}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    group[k] = group.get(k, 0.0) + float(v)
                total_items += n
                group_items += n
            in_group += 1
            if in_group == cfg.grad_accum_steps:
                self._step(group_items, group)
                group, group_items, in_group = {}, 0.0, 0
            bar.set_postfix(loss=f"{sums['loss'] / max(total_items, 1):.4f}")
        if in_group:  # a last, shorter group still makes one step
            self._step(group_items, group)
        sums = ddp.all_reduce_sums({**sums, "_items": total_items})  # epoch figures over all ranks
        total_items = sums.pop("_items")
        return {k: v / max(total_items, 1) for k, v in sums.items()}


def at_least_min_steps(config: TrainerConfig, steps_per_epoch: int) -> TrainerConfig:
    """``config`` with ``epochs`` and ``early_stopping_patience`` multiplied by the smallest whole
    factor that gives ``min_steps`` optimiser steps, while ``epochs`` is its class's default (an
    epoch count set by the caller is kept); unchanged when the epochs give as many steps."""
    steps = config.epochs * max(steps_per_epoch, 1)
    if not config.min_steps or steps >= config.min_steps or config.epochs != type(config)().epochs:
        return config
    factor = math.ceil(config.min_steps / steps)
    logger.info("%d epochs of %d steps are fewer than --min_steps %d: training %d epochs (early-stopping patience %d)",
                config.epochs, steps_per_epoch, config.min_steps, config.epochs * factor,
                config.early_stopping_patience * factor)
    return dataclasses.replace(config, epochs=config.epochs * factor,
                               early_stopping_patience=config.early_stopping_patience * factor)
