"""``nlp-train transformer_token``: fine-tune the teacher (``train_teacher``), one seed or several."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Sequence

from nlp_distill.config import SeedsConfig, TeacherTrainerConfig, TrainerConfig, TransformerConfig
from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json, write_json
from nlp_distill.training.fit import encoder_recipe, train_teacher  # noqa: F401  (encoder_recipe: the CLI's defaults hook)
from nlp_distill.utils import distributed as ddp
from procedures.common import STATUS_FILE, RunOptions, config_dict, config_differences, run_on_data

logger = logging.getLogger(__name__)


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
    return run_on_data(data_dir, output_dir, sections, run, train_teacher, model=model, trainer=trainer)


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
            metrics = run_on_data(data_dir, folder, sections, run, train_teacher, model=model, trainer=member_trainer)
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
    diff = config_differences(read_json(folder / "config.json"), config_dict(sections),
                              ignore={(sec, "show_progress") for sec in sections})
    if diff:
        raise ConfigError(f"--seeds: {folder} finished with other settings ({'; '.join(diff)}); pass --overwrite to "
                          "retrain the members, or choose another --output_dir")
    return True


def _mean(values) -> float:
    vals = list(values)
    return sum(vals) / len(vals)
