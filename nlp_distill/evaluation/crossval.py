"""K-fold cross-validation of training recipes: does distillation help on this data, and by how much?

``cross_validate`` splits a data folder's tagged sentences into K folds (``evaluation.folds``), and
for each fold to run trains the fold's teacher once (cached by data, fold count and teacher
command, so later runs and other recipes reuse it), then every recipe with every seed, one training
at a time. Each finished run tags its fold's test sentences once; the tags are kept beside the run
(``crossval_predictions.json``), so a killed campaign rerun with the same command skips all finished
work. After every fold ``results.json`` and ``results.md`` are rewritten from the folds complete so
far: pooled F1 per recipe, per-fold F1, each student's share of its teachers' F1, and the paired
difference of every two systems with a bootstrap interval over sentences (``evaluation.paired``).

Training itself is the caller's: a ``Runner`` (the CLI gives one that runs ``nlp-train COMMAND``)
turns a recipe's command into a run folder. Layout of ``output_dir``::

    folds/fold-K/            train/dev/test/labels/unlabeled.txt of each fold (fold.json: its key)
    runs/NAME/fold-K/seed-S/ one run folder per recipe, fold and seed (+ crossval_predictions.json)
    logs/                    each run's console output
    crossval.json            the campaign: data fingerprint, folds, teacher and recipe commands
    results.json, results.md the scores of the folds complete so far
teachers (``teacher_cache_dir``, default ``output_dir/teachers``)::

    KEY/key.json, KEY/fold-K/  KEY = hash of (data fingerprint, K, teacher command)
"""
from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Dict, List

from nlp_distill.errors import ConfigError
from nlp_distill.evaluation.folds import Pool, check_pool_size, read_pool, seq_key, test_sentences, write_fold
from nlp_distill.evaluation.plan import (PREDICTIONS, TEACHER, Campaign, CrossvalSpec, Recipe, Runner,  # noqa: F401
                                         _Job)
from nlp_distill.evaluation.results import write_results
from nlp_distill.io import read_json, write_json

logger = logging.getLogger(__name__)

def plan_campaign(spec: CrossvalSpec, runner: Runner) -> Campaign:
    """Read the data, check the plan against what ``output_dir`` already holds, and record it.

    Raises:
        ConfigError: too few sentences, a recipe needing a teacher with no teacher command, or an
            output folder holding a campaign of other data, folds, or a recipe name reused for
            another command.
    """
    pool = read_pool(spec.data_dir)
    check_pool_size(pool, spec.folds)
    spec.folds_to_run()  # checked by CrossvalSpec's callers; a bad fold fails in fold_indices
    needs = {r.name: runner.needs_teacher(r.argv) for r in spec.recipes}
    teacher_root = None
    if any(needs.values()):
        if spec.teacher is None:
            raise ConfigError(f"recipes {[n for n, v in needs.items() if v]} distil from a teacher: give the command "
                              "that trains one, e.g. --teacher 'transformer_token --epochs 6'")
        key = seq_key([pool.fingerprint, spec.folds, list(spec.teacher.argv)])
        teacher_root = Path(spec.teacher_cache_dir or Path(spec.output_dir) / "teachers") / key
        write_json(teacher_root / "key.json", {"data": pool.fingerprint, "sources": list(pool.sources),
                                               "folds": spec.folds, "teacher": spec.teacher.command})
    out = Path(spec.output_dir)
    _record_campaign(out, spec, pool)
    return Campaign(spec, pool, out, teacher_root, needs)


def _record_campaign(out: Path, spec: CrossvalSpec, pool: Pool) -> None:
    """Write ``crossval.json``; refuse a folder that holds a campaign of other data or folds, or
    whose recipe of the same name ran another command (their runs would mix)."""
    path = out / "crossval.json"
    old = read_json(path) if path.is_file() else {}
    if old and (old.get("data") != pool.fingerprint or old.get("folds") != spec.folds):
        raise ConfigError(f"{out} holds a cross-validation of other data or another --folds ({old.get('folds')}); "
                          "choose another --output_dir")
    recipes = dict(old.get("recipes", {}))
    for r in spec.recipes:
        if recipes.get(r.name, r.command) != r.command:
            raise ConfigError(f"recipe {r.name!r} ran as {recipes[r.name]!r} in {out}, now {r.command!r}: give the "
                              "new command another name")
        recipes[r.name] = r.command
    teachers = sorted(set(old.get("teachers", [])) | ({spec.teacher.command} if spec.teacher else set()))
    write_json(path, {"data": pool.fingerprint, "sources": list(pool.sources), "sentences": len(pool.sentences),
                      "folds": spec.folds, "recipes": recipes, "teachers": teachers})


def cross_validate(spec: CrossvalSpec, runner: Runner) -> Dict:
    """Run (or resume) the campaign of ``spec`` and return its results (also written to
    ``output_dir/results.json`` and ``results.md``); see the module docstring.

    Raises:
        ConfigError: a bad plan (``plan_campaign``); whatever ``runner.train`` raises for a failed
            run (finished runs stay, a rerun continues from the failed one).
    """
    camp = plan_campaign(spec, runner)
    folds = spec.folds_to_run()
    total = sum(len(camp.jobs(k)) for k in folds)
    n, t0 = 0, time.monotonic()
    logger.info("cross-validation of %s: %d sentences, folds %s of %d, seeds %s, %d trainings",
                ", ".join(r.name for r in spec.recipes), len(camp.pool.sentences), folds, spec.folds,
                list(spec.seeds), total)
    results: Dict = {}
    for k in folds:
        write_fold(camp.pool, spec.folds, k, camp.fold_dir(k))
        for job in camp.jobs(k):
            n += 1
            _run_job(camp, job, runner, f"[{n}/{total}, {(time.monotonic() - t0) / 60:.0f} min]")
        results = write_results(camp)
    return results


def _run_job(camp: Campaign, job: _Job, runner: Runner, progress: str) -> None:
    """Train (unless finished) and tag the fold's test sentences (unless already tagged)."""
    what = f"{job.system} fold {job.fold}" + (f" seed {job.seed}" if job.seed is not None else "")
    if (job.folder / PREDICTIONS).is_file():
        logger.info("%s %s: done", progress, what)
        return
    t = time.monotonic()
    if not _finished(job.folder):
        log = camp.out / "logs" / (f"{job.system}-fold-{job.fold}" + (f"-seed-{job.seed}" if job.seed is not None else "") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        logger.info("%s %s: training (log: %s)", progress, what, log)
        teacher = camp.teacher_root / f"fold-{job.fold}" if camp.needs_teacher.get(job.system) else None
        runner.train(job.argv, camp.fold_dir(job.fold), job.folder, job.seed, teacher, log)
    seconds = time.monotonic() - t
    tags = _predict(job.folder, [s.tokens for s in test_sentences(camp.pool, camp.spec.folds, job.fold)], camp.spec.device)
    write_json(job.folder / PREDICTIONS, {"system": job.system, "fold": job.fold, "seed": job.seed,
                                          "command": shlex.join(job.argv), "train_seconds": round(seconds, 1),
                                          "tags": tags}, indent=None)
    logger.info("%s %s: trained and scored in %.1f min", progress, what, seconds / 60)


def _finished(folder: Path) -> bool:
    """A run folder whose ``status.json`` says finished, or a folder of ``seed-N/`` runs that all
    did (``transformer_token --seeds``)."""
    status = folder / "status.json"
    if status.is_file():
        return read_json(status).get("status") == "finished"
    members = sorted(folder.glob("seed-*/status.json"))
    return bool(members) and all(read_json(p).get("status") == "finished" for p in members)


def _predict(folder: Path, tokens: List[List[str]], device: str) -> List[List[str]]:
    """Tags of ``tokens`` by the model of a run folder (a folder of ``seed-N/`` teachers: their ensemble)."""
    from nlp_distill.distill.teachers import load_teacher
    from nlp_distill.models.loader import load_model, model_class_of

    if model_class_of(folder)[0] is not None:
        model = load_model(folder)
        if device != "cpu":
            model.to(device)
    else:
        model = load_teacher(str(folder), device=device)
    return [list(t) for t in model.predict(tokens)]
