"""``nlp-train tagger_kd_search``: an optuna search of the distillation recipe on dev only.

Each trial is a ``tagger_kd`` run (test set withheld) in ``OUTPUT_DIR/trials/NNN`` sharing one
teacher cache; every trial goes to ``trials.jsonl`` and the best settings to
``best_config.json``, which ``--config`` accepts.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from nlp_distill.config import (AugmentConfig, KDConfig, StudentDataConfig, StudentTrainerConfig, TaggerConfig,
                                TrainerConfig)
from nlp_distill.data.dataset_dir import TaggingData, load_data_dir
from nlp_distill.distill.teachers import teacher_labels
from nlp_distill.errors import ConfigError
from nlp_distill.io import write_json
from nlp_distill.training.student import distil_student
from procedures.common import RunOptions, run_folder
from procedures.tagger import student_configs

logger = logging.getLogger(__name__)


# searched setting -> (config section, field); the names are the flags
SEARCHED = {"kd_dist_w": ("kd", "dist_w"), "kd_student_w": ("kd", "student_w"), "kd_temp": ("kd", "temperature"),
            "lr": ("trainer", "lr"), "dropout": ("tagger", "dropout"), "hidden": ("tagger", "hidden")}


def suggest(trial, tagger: TaggerConfig, trainer: TrainerConfig, kd: KDConfig, fixed: Sequence[str] = ()
            ) -> Dict[str, Any]:
    """The searched settings (KD/gold weights, temperature, learning rate, dropout, hidden size),
    except those in ``fixed``, which keep the value the user gave."""
    draw = {"kd_dist_w": lambda: trial.suggest_float("kd_dist_w", 0.25, 4.0, log=True),
            "kd_student_w": lambda: trial.suggest_float("kd_student_w", 0.25, 4.0, log=True),
            "kd_temp": lambda: trial.suggest_float("kd_temp", 1.0, 4.0),
            "lr": lambda: trial.suggest_float("lr", 5e-4, 5e-3, log=True),
            "dropout": lambda: trial.suggest_float("dropout", 0.2, 0.6),
            "hidden": lambda: trial.suggest_categorical("hidden", [100, 200, 300])}
    changes: Dict[str, Dict[str, Any]] = {"kd": {}, "trainer": {}, "tagger": {}}
    for name, (section, field) in SEARCHED.items():
        if name not in fixed:
            changes[section][field] = draw[name]()
    return {"kd": kd.replace(**changes["kd"]), "trainer": trainer.replace(**changes["trainer"]),
            "tagger": tagger.replace(**changes["tagger"])}


def _checked(n_trials: int, fixed: Sequence[str]):
    """optuna, once the search is known to have something to search."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigError("tagger_kd_search needs optuna: pip install optuna") from None
    if n_trials < 1:
        raise ConfigError(f"--n_trials must be >= 1, got {n_trials}")
    unknown = sorted(set(fixed) - set(SEARCHED))
    if unknown:
        raise ValueError(f"fixed: {unknown} are not searched settings ({', '.join(SEARCHED)})")
    if set(fixed) == set(SEARCHED):
        raise ConfigError("tagger_kd_search: every searched setting (--" + ", --".join(SEARCHED) + ") is fixed by "
                          "the user: nothing left to search; run tagger_kd instead")
    if fixed:
        logger.info("kept as given, not searched: %s", ", ".join(f"--{f}" for f in fixed))
    return optuna


def _trial(folder: Path, sections: Dict[str, Any], d: TaggingData, device: Optional[str], log: Path,
           record: Dict[str, Any]) -> float:
    """One ``tagger_kd`` run of the search (dev only) in ``folder``; its record appended to ``log``."""
    t0 = time.perf_counter()
    with run_folder(folder, sections, RunOptions(device=device, overwrite=True)) as tdir:
        m = distil_student(output_dir=tdir, train=d.train, dev=d.dev, labels=d.labels, kd=sections["kd"],
                           tagger=sections["tagger"], trainer=sections["trainer"], data=sections["data"],
                           augment=sections["augment"], device=device).metrics
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps({**record, "dev_f1": m["dev"]["f1"], "seconds": time.perf_counter() - t0}) + "\n")
    return m["dev"]["f1"]


def do_search(data_dir, output_dir, tagger: TaggerConfig = TaggerConfig(),
              trainer: TrainerConfig = StudentTrainerConfig(), data: StudentDataConfig = StudentDataConfig(),
              kd: KDConfig = KDConfig(), augment: AugmentConfig = AugmentConfig(), n_trials: int = 20,
              run: RunOptions = RunOptions(), fixed: Sequence[str] = ()) -> Dict[str, Any]:
    """Search ``n_trials`` recipes (TPE, seeded by ``trainer.seed``) maximising dev F1.

    ``fixed``: names of ``SEARCHED`` the user set (flags or ``--config``); they keep their value in
    every trial and only the others are searched.
    """
    optuna = _checked(n_trials, fixed)
    tagger, data = student_configs(tagger, data)
    sections = {"task": "tagger_kd_search", "data_dir": str(data_dir), "tagger": tagger, "trainer": trainer,
                "data": data, "kd": kd, "augment": augment}
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding,  # dev only: test is never given, never scored here
                          teacher_labels=teacher_labels(kd.teacher_model_path))  # the student's labels, as tagger_kd
        kd = kd.replace(cache_dir=kd.cache_dir or str(out / "teacher_cache"))
        log = out / "trials.jsonl"
        log.unlink(missing_ok=True)

        def objective(trial) -> float:
            s = suggest(trial, tagger, trainer, kd, fixed)
            trial_sections = {**sections, "task": "tagger_kd", "tagger": s["tagger"], "trainer": s["trainer"],
                              "kd": s["kd"]}
            return _trial(out / "trials" / f"{trial.number:03d}", trial_sections, d, run.device, log,
                          {"trial": trial.number, "params": trial.params})

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=trainer.seed))
        study.optimize(objective, n_trials=n_trials)
        best = suggest(optuna.trial.FixedTrial(study.best_params), tagger, trainer, kd, fixed)
        best_cfg = {"tagger": best["tagger"].to_dict(), "trainer": best["trainer"].to_dict(), "data": data.to_dict(),
                    "kd": best["kd"].replace(cache_dir="").to_dict(), "augment": augment.to_dict()}
        write_json(out / "best_config.json", best_cfg)
        result = {"best_dev_f1": study.best_value, "best_params": study.best_params, "n_trials": n_trials,
                  "best_config": str(out / "best_config.json")}
        write_json(out / "metrics.json", result)
        logger.info("search done: best dev F1 %.4f with %s -> %s", study.best_value, study.best_params,
                    out / "best_config.json")
        return result
