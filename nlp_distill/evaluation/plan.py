"""What a cross-validation campaign runs: named recipes, the spec, the runner interface and the
resolved plan (fold folders, run folders, the teacher's folder), shared by the campaign
(``evaluation.crossval``) and its scoring (``evaluation.results``)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

from nlp_distill.errors import ConfigError
from nlp_distill.evaluation.folds import Pool

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
