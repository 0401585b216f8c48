"""Fine-tune a TransformerTokenClassifier (the teacher) on a CoNLL data dir."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from nlp_distill.config import SeedsConfig, TeacherTrainerConfig, TrainerConfig, TransformerConfig
from nlp_distill.data.batching import bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.errors import ConfigError
from nlp_distill.io import folder_size, read_json, write_json
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.packaged_encoders import ENCODERS
from nlp_distill.models.transformer import TransformerTokenClassifier
from nlp_distill.utils import distributed as ddp
from nlp_distill.training.checkpoint import seed_everything
from nlp_distill.training.trainer import Trainer
from procedures.common import STATUS_FILE, RunOptions, environment, pick_device, run_folder

logger = logging.getLogger(__name__)


def encoder_recipe(configs: Dict[str, Any], given: Set[Tuple[str, str]]) -> Dict[str, Any]:
    """A packaged encoder's measured recipe (``PackagedEncoder.recipe``, e.g. mpnet's lr, batch
    size and head lr) in place of the settings the user did not give; the change is logged."""
    enc = ENCODERS.get(configs["model"].model_name_or_path)
    applied = []
    for section, field, value in enc.recipe if enc else ():
        if (section, field) not in given and getattr(configs[section], field) != value:
            configs = {**configs, section: configs[section].replace(**{field: value})}
            applied.append(f"{field} {value:g}")
    if applied:
        logger.info("%s: its measured recipe sets %s (flags override)", enc.name, ", ".join(applied))
    return configs


def do_training(data_dir, output_dir, model: TransformerConfig = TransformerConfig(),
                trainer: TrainerConfig = TeacherTrainerConfig(), run: RunOptions = RunOptions(),
                seeds: SeedsConfig = SeedsConfig()) -> Dict[str, Any]:
    """Fine-tune the teacher; best epoch on dev; test evaluated once at the end. With
    ``seeds.seeds``, one teacher per seed in ``output_dir/seed-N/`` (``train_seeds``).

    Writes to ``output_dir``: ``model/`` (HF folder + labels), ``config.json``, ``metrics.json``,
    ``train_log.jsonl``, ``checkpoint/``.

    Returns:
        the metrics dict written to ``metrics.json``.
    """
    if seeds.seeds:
        return train_seeds(data_dir, output_dir, model, trainer, seeds.seeds, run)
    sections = {"task": "transformer_token", "data_dir": str(data_dir), "model": model, "trainer": trainer}
    with run_folder(output_dir, sections, run) as out:
        return _train_teacher(out, data_dir, model, trainer, run)


def train_seeds(data_dir, output_dir, model: TransformerConfig, trainer: TrainerConfig, seeds: Sequence[int],
                run: RunOptions) -> Dict[str, Any]:
    """One teacher per seed, one after another, each a normal run folder ``output_dir/seed-N/``
    (``--teacher_model_path output_dir`` loads them all as an ensemble). A member that finished
    with the same settings is skipped (``--overwrite`` retrains it); ``--resume`` continues an
    unfinished one. Writes ``output_dir/seeds.json``: each member's dev/test F1 and their means.

    Returns:
        ``{"dev": {"f1": mean}, "test": {"f1": mean} | None, "members": [...]}``.
    """
    parent = Path(output_dir)
    if (parent / "config.json").is_file() or (parent / "model").is_dir():
        raise ConfigError(f"--seeds: {parent} holds a single run; choose another --output_dir for the seed-N/ members")
    members = []
    for i, seed in enumerate(seeds):
        folder = parent / f"seed-{seed}"
        member_trainer = trainer.replace(seed=seed)
        sections = {"task": "transformer_token", "data_dir": str(data_dir), "model": model, "trainer": member_trainer}
        if not run.overwrite and finished_with(folder, sections):
            logger.info("--seeds: %s has finished: skipped (%d of %d)", folder, i + 1, len(seeds))
            metrics = read_json(folder / "metrics.json")
        else:
            logger.info("--seeds: training seed %d into %s (%d of %d)", seed, folder, i + 1, len(seeds))
            with run_folder(folder, sections, run) as out:
                metrics = _train_teacher(out, data_dir, model, member_trainer, run)
        members.append({"seed": seed, "folder": str(folder), "dev_f1": (metrics.get("dev") or {}).get("f1"),
                        "test_f1": (metrics.get("test") or {}).get("f1")})
    if not ddp.is_main():
        return {}
    summary = {"members": members, "dev": {"f1": _mean(m["dev_f1"] for m in members)},
               "test": {"f1": _mean(m["test_f1"] for m in members)} if all(m["test_f1"] is not None for m in members)
               else None}
    write_json(parent / "seeds.json", summary)
    logger.info("--seeds: %d teachers in %s (use --teacher_model_path %s for their ensemble)", len(members), parent, parent)
    return summary


def finished_with(folder: Path, sections: Dict[str, Any]) -> bool:
    """Whether ``folder`` holds a finished run; one made with other settings is a ``ConfigError``."""
    status = read_json(folder / STATUS_FILE).get("status") if (folder / STATUS_FILE).is_file() else None
    if status != "finished" or not (folder / "metrics.json").is_file():
        return False
    saved = read_json(folder / "config.json")
    diff = [f"{sec}.{k}: {saved.get(sec, {}).get(k)!r} -> {v!r}" for sec, cfg in sections.items() if hasattr(cfg, "to_dict")
            for k, v in cfg.to_dict().items() if k != "show_progress" and saved.get(sec, {}).get(k) != v]
    diff += [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in sections.items() if isinstance(v, str) and saved.get(k) != v]
    if diff:
        raise ConfigError(f"--seeds: {folder} finished with other settings ({'; '.join(diff)}); pass --overwrite to "
                          "retrain the members, or choose another --output_dir")
    return True


def _mean(values) -> float:
    vals = list(values)
    return sum(vals) / len(vals)


def _train_teacher(out: Path, data_dir, model: TransformerConfig, trainer: TrainerConfig,
                   run: RunOptions) -> Dict[str, Any]:
    seed_everything(trainer.seed)
    data = load_data_dir(data_dir, encoding=run.encoding)
    clf = TransformerTokenClassifier.from_pretrained(model.model_name_or_path or None, data.labels, model)
    logger.info("teacher %s: %.1fM parameters, %d labels; train/dev/test = %d/%d/%d sentences",
                clf.config.model_name_or_path, clf.num_parameters() / 1e6, len(data.labels), len(data.train),
                len(data.dev), len(data.test))
    train = [s for i, s in enumerate(data.train) if model.in_training_fold(i)]
    if len(train) < len(data.train):
        logger.info("fold %d of %d held out: training on %d of %d train sentences", model.holdout_fold[1],
                    model.holdout_fold[0], len(train), len(data.train))
    return fit_transformer(out, clf, train, data, trainer, run)


def param_groups(clf: TransformerTokenClassifier, weight_decay: float, head_lr: Optional[float]) -> List[Dict]:
    """Optimiser groups: no weight decay on biases and norms; the classification head at ``head_lr``
    (``None``: the optimiser's lr). Empty groups are left out."""
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    head = {id(p) for p in clf.model.classifier.parameters()} if head_lr else set()
    groups = []
    for is_head in (False, True):
        for decay in (True, False):
            ps = [p for n, p in clf.named_parameters()
                  if p.requires_grad and (id(p) in head) == is_head and n.endswith(no_decay) != decay]
            if ps:
                groups.append({"params": ps, "weight_decay": weight_decay if decay else 0.0,
                               **({"lr": head_lr} if is_head else {})})
    return groups


def fit_transformer(out: Path, clf: TransformerTokenClassifier, train: Sequence[Sentence], data: TaggingData,
                    trainer: TrainerConfig, run: RunOptions, loss_fn: Optional[Callable] = None,
                    extra_metrics: Optional[Dict[str, Any]] = None,
                    targets: Optional[Sequence[np.ndarray]] = None) -> Dict[str, Any]:
    """Train ``clf`` on the windows of ``train`` (tagged sentences) with ``loss_fn`` (default: its
    own CE), keep the best on dev, score dev/test once with the best, write ``metrics.json``.
    Shared by the teacher (``transformer_token``) and transformer students (``transformer_kd``);
    ``targets`` (teacher logits per training sentence) reach ``loss_fn`` as ``teacher_logits``."""
    dev_ = pick_device(run.device)
    clf.to(dev_)
    train_tags = [data.labels.encode(s.tags) for s in train]
    windows = clf.windows([s.tokens for s in train])
    lengths = [len(w.input_ids) for w in windows]
    bs = clf.config.batch_size
    n_batches = (len(windows) + bs - 1) // bs

    def batches(epoch: int):
        return bucket_batches(lengths, bs, shuffle=True, seed=trainer.seed + epoch)

    def collate(idx):
        return {k: v.to(dev_) for k, v in clf.collate([windows[i] for i in idx], train_tags, targets).items()}

    groups = param_groups(clf, trainer.weight_decay, clf.config.head_lr)

    def evaluate():
        return evaluate_split(clf.predict, data.dev)

    t0 = time.perf_counter()
    result = Trainer(clf, trainer, loss_fn or clf.loss, batches, n_batches, evaluate, clf.save_pretrained, out,
                     param_groups=groups, collate=collate).train(resume=run.resume)
    train_time = time.perf_counter() - t0
    if not ddp.is_main():  # rank 0 scores the best model and writes metrics.json
        return {}
    best = TransformerTokenClassifier.from_pretrained(str(out / "model")).to(dev_)
    metrics = {"dev": evaluate_split(best.predict, data.dev),
               "test": evaluate_split(best.predict, data.test) if data.test else None,
               "best_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
               "train_seconds": train_time,
               "train_sentences_per_second": len(train) * len(result["history"]) / max(
                   sum(h["epoch_seconds"] for h in result["history"]), 1e-9),
               "parameters": best.num_parameters(), "size_bytes": folder_size(out / "model"),
               "environment": environment(), **(extra_metrics or {})}
    write_json(out / "metrics.json", metrics)
    test_f1 = metrics["test"]["f1"] if metrics["test"] else float("nan")
    logger.info("done: dev F1 %.4f, test F1 %.4f (best epoch %d, %.0fs)", metrics["dev"]["f1"], test_f1,
                result["best_epoch"], train_time)
    return metrics
