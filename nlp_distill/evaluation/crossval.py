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
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

from nlp_distill.errors import ConfigError
from nlp_distill.evaluation.folds import Pool, check_pool_size, read_pool, seq_key, test_sentences, write_fold
from nlp_distill.io import read_json, write_json

logger = logging.getLogger(__name__)

PREDICTIONS = "crossval_predictions.json"
TEACHER = "teacher"  # the name of the fold teachers among the scored systems
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Recipe:
    """A named training command: ``argv`` is what follows ``nlp-train``, without the data and
    output folders, the seed and the teacher (the campaign adds those)."""

    name: str
    argv: Tuple[str, ...]

    @classmethod
    def parse(cls, text: str, name: Optional[str] = None) -> "Recipe":
        """``"NAME=COMMAND --flag value ..."`` (or just the command, with ``name`` given)."""
        head, sep, rest = text.partition("=")
        if sep and _NAME.match(head.strip()) and " " not in head.strip():
            name, text = head.strip(), rest
        argv = tuple(shlex.split(text))
        if not argv:
            raise ConfigError(f"recipe {text!r}: no command (expected NAME=COMMAND [FLAGS], e.g. kd=tagger_kd --augment 2)")
        if name is None:
            raise ConfigError(f"recipe {text!r}: give it a name, as NAME=COMMAND [FLAGS] (e.g. kd=tagger_kd)")
        if not _NAME.match(name):
            raise ConfigError(f"recipe name {name!r}: use letters, digits and _ . + - only")
        return cls(name, argv)

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class CrossvalSpec:
    """What to cross-validate. ``folds``: K; ``run_folds``: which of them to run (empty: all);
    ``seeds``: each recipe runs once per seed on every fold; ``teacher``: the command that trains
    each fold's teacher (trained only when a recipe needs one); ``bootstrap``: resamples of the
    intervals; ``device``: where the finished models tag the test folds."""

    data_dir: str
    output_dir: str
    recipes: Tuple[Recipe, ...]
    teacher: Optional[Recipe] = None
    folds: int = 10
    run_folds: Tuple[int, ...] = ()
    seeds: Tuple[int, ...] = (1,)
    teacher_cache_dir: Optional[str] = None
    bootstrap: int = 1000
    device: str = "cpu"
    command_line: str = ""

    def __post_init__(self) -> None:
        names = [r.name for r in self.recipes]
        if not names:
            raise ConfigError("no recipe to cross-validate: give at least one --recipe NAME=COMMAND")
        if len(set(names)) != len(names):
            raise ConfigError(f"recipe names must differ, got {names}")
        if TEACHER in names:
            raise ConfigError(f"{TEACHER!r} names the fold teachers in the results; give the recipe another name")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds: give distinct seeds, got {list(self.seeds)}")

    def folds_to_run(self) -> List[int]:
        return list(self.run_folds) if self.run_folds else list(range(self.folds))


class Runner(Protocol):
    """Turns a recipe's command into a finished run folder."""

    def needs_teacher(self, argv: Sequence[str]) -> bool:
        """Whether the command takes a teacher the campaign must give it."""

    def train(self, argv: Sequence[str], data_dir: Path, output_dir: Path, seed: Optional[int],
              teacher_dir: Optional[Path], log_file: Path) -> None:
        """Run the command on ``data_dir`` into ``output_dir`` (continuing a run left there
        unfinished); raise when it fails."""


@dataclass
class _Job:
    system: str          # a recipe name or TEACHER
    fold: int
    seed: Optional[int]
    folder: Path
    argv: Tuple[str, ...]


@dataclass
class Campaign:
    """The resolved plan of one ``cross_validate`` call (built once, then only read)."""

    spec: CrossvalSpec
    pool: Pool
    out: Path
    teacher_root: Optional[Path]
    needs_teacher: Dict[str, bool] = field(default_factory=dict)

    def fold_dir(self, k: int) -> Path:
        return self.out / "folds" / f"fold-{k}"

    def jobs(self, k: int) -> List[_Job]:
        """Fold ``k``'s trainings in order: its teacher (if any recipe needs one), then each recipe
        with each seed."""
        out = []
        if self.teacher_root is not None:
            out.append(_Job(TEACHER, k, None, self.teacher_root / f"fold-{k}", self.spec.teacher.argv))
        for r in self.spec.recipes:
            for s in self.spec.seeds:
                out.append(_Job(r.name, k, s, self.out / "runs" / r.name / f"fold-{k}" / f"seed-{s}", r.argv))
        return out


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
    from nlp_distill.evaluation.results import write_results

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
