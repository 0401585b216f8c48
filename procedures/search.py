"""``nlp-train tagger_kd_search``: an optuna search of the distillation recipe on dev only.

Each trial is a ``tagger_kd`` run (test set withheld) in ``OUTPUT_DIR/trials/NNN`` sharing one
teacher cache; every trial goes to ``trials.jsonl`` and the best settings to
``best_config.json``, which ``--config`` accepts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Dict

from nlp_distill.config import (AugmentConfig, KDConfig, StudentDataConfig, StudentTrainerConfig, TaggerConfig,
                                TrainerConfig)
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.errors import ConfigError
from nlp_distill.io import write_json
from procedures.common import RunOptions, run_folder
from procedures.tagger import student_configs
from procedures.tagger_kd import _kd_run

logger = logging.getLogger(__name__)


def suggest(trial, tagger: TaggerConfig, trainer: TrainerConfig, kd: KDConfig) -> Dict[str, Any]:
    """The searched settings: KD/gold weights, temperature, learning rate, dropout, hidden size."""
    return {
        "kd": kd.replace(dist_w=trial.suggest_float("kd_dist_w", 0.25, 4.0, log=True),
                         student_w=trial.suggest_float("kd_student_w", 0.25, 4.0, log=True),
                         temperature=trial.suggest_float("kd_temp", 1.0, 4.0)),
        "trainer": trainer.replace(lr=trial.suggest_float("lr", 5e-4, 5e-3, log=True)),
        "tagger": tagger.replace(dropout=trial.suggest_float("dropout", 0.2, 0.6),
                                 hidden=trial.suggest_categorical("hidden", [100, 200, 300])),
    }


def do_search(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
              trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
              kd: KDConfig = KDConfig(), augment: AugmentConfig = AugmentConfig(), n_trials: int = 20,
              run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Search ``n_trials`` recipes (TPE, seeded by ``trainer.seed``) maximising dev F1."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("tagger_kd_search needs optuna: pip install 'nlp-distill[search]'") from None
    if n_trials < 1:
        raise ConfigError(f"--n_trials must be >= 1, got {n_trials}")
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger_kd_search", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer,
                "data": data, "kd": kd, "augment": augment}
    with run_folder(output_dir, sections, run) as out:
        d = dataclasses.replace(load_data_dir(data_dir, encoding=run.encoding), test=[])  # dev only: test is never scored here
        kd = kd.replace(cache_dir=kd.cache_dir or str(out / "teacher_cache"))
        log = out / "trials.jsonl"
        log.unlink(missing_ok=True)

        def objective(trial) -> float:
            s = suggest(trial, tagger, trainer, kd)
            folder = out / "trials" / f"{trial.number:03d}"
            t0 = time.perf_counter()
            trial_sections = {**sections, "task": "tagger_kd", "tagger": s["tagger"], "trainer": s["trainer"],
                              "kd": s["kd"]}
            with run_folder(folder, trial_sections, RunOptions(device=run.device, overwrite=True)) as tdir:
                m = _kd_run("tagger_kd", data_dir, tdir, d, s["tagger"], s["trainer"], data, s["kd"], augment, [],
                            None, RunOptions(device=run.device))
            rec = {"trial": trial.number, "params": trial.params, "dev_f1": m["dev"]["f1"],
                   "seconds": time.perf_counter() - t0}
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            return m["dev"]["f1"]

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=trainer.seed))
        study.optimize(objective, n_trials=n_trials)
        best = suggest(optuna.trial.FixedTrial(study.best_params), tagger, trainer, kd)
        best_cfg = {"tagger": best["tagger"].to_dict(), "trainer": best["trainer"].to_dict(), "data": data.to_dict(),
                    "kd": best["kd"].replace(cache_dir="").to_dict(), "augment": augment.to_dict()}
        write_json(out / "best_config.json", best_cfg)
        result = {"best_dev_f1": study.best_value, "best_params": study.best_params, "n_trials": n_trials,
                  "best_config": str(out / "best_config.json")}
        write_json(out / "metrics.json", result)
        logger.info("search done: best dev F1 %.4f with %s -> %s", study.best_value, study.best_params,
                    out / "best_config.json")
        return result
