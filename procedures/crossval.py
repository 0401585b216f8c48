"""``nlp-train crossval``: the library's ``cross_validate`` with every run an ``nlp-train``
command, in a subprocess of its own (one at a time), its console output in the campaign's logs/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from nlp_distill.errors import ConfigError

# the settings the campaign gives each run itself
RESERVED = ("--data_dir", "--output_dir", "--resume", "--overwrite")


class CommandRunner:
    """Runs ``nlp-train ARGV`` for ``cross_validate``.

    Args:
        group: the click group whose commands the recipes name (``nlp-train``).
        in_process: run each command in this process (tests) instead of a subprocess.
    """

    def __init__(self, group: click.Group, in_process: bool = False) -> None:
        self.group = group
        self.in_process = in_process

    def command(self, argv: Sequence[str]) -> click.Command:
        if not argv or argv[0] not in self.group.commands or not _trains(self.group.commands[argv[0]]):
            names = sorted(n for n, c in self.group.commands.items() if _trains(c))
            raise ConfigError(f"recipe `{' '.join(argv)}`: {argv[0] if argv else '(empty)'} is not a training command "
                              f"of nlp-train (one of {', '.join(names)})")
        return self.group.commands[argv[0]]

    def needs_teacher(self, argv: Sequence[str]) -> bool:
        return _has(self.command(argv), "teacher_model_path") and "--teacher_model_path" not in argv

    def check(self, argv: Sequence[str], data_dir, output_dir) -> None:
        """Parse the recipe's flags now, so a typo fails before hours of other runs, not after."""
        cmd = self.command(argv)
        for flag in RESERVED:
            if flag in argv:
                raise ConfigError(f"recipe `{' '.join(argv)}`: {flag} is set by crossval for each run; drop it")
        args = [*argv[1:], "--data_dir", str(data_dir), "--output_dir", str(output_dir)]
        try:
            cmd.make_context(f"nlp-train {argv[0]}", args, resilient_parsing=False)
        except click.UsageError as e:
            raise ConfigError(f"recipe `{' '.join(argv)}`: {e.format_message()}") from None

    def train(self, argv: Sequence[str], data_dir: Path, output_dir: Path, seed: Optional[int],
              teacher_dir: Optional[Path], log_file: Path) -> None:
        args = [*argv, "--data_dir", str(data_dir), "--output_dir", str(output_dir)]
        if teacher_dir is not None:
            args += ["--teacher_model_path", str(teacher_dir)]
        if seed is not None:
            args += ["--seed", str(seed)]
        if output_dir.exists() and _has(self.command(argv), "resume"):
            args.append("--resume")  # a run killed earlier continues from its checkpoint (or restarts)
        rc = self._run_in_process(args, log_file) if self.in_process else self._run_subprocess(args, log_file)
        if rc != 0:
            tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(True)[-5:])
            raise ConfigError(f"`nlp-train {' '.join(args)}` failed (exit {rc}); its output is in {log_file}; "
                              f"it ended:\n{tail}rerun the same crossval command to continue from this run")

    @staticmethod
    def _run_subprocess(args: Sequence[str], log_file: Path) -> int:
        env = dict(os.environ, NLP_DISTILL_DEBUG="1")  # a failed run's log keeps its traceback
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"$ nlp-train {' '.join(args)}\n")
            log.flush()
            return subprocess.run([sys.executable, "-m", "procedures.cli", *args], stdout=log,
                                  stderr=subprocess.STDOUT, env=env).returncode

    def _run_in_process(self, args: Sequence[str], log_file: Path) -> int:
        import logging

        from click.testing import CliRunner

        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            r = CliRunner().invoke(self.group, list(args))
        finally:  # the run's handlers write to the runner's captured streams: they go with it
            for h in root.handlers[:]:
                if h not in handlers:
                    root.removeHandler(h)
                    h.close()
            root.setLevel(level)
        log_file.write_text(f"$ nlp-train {' '.join(args)}\n{r.output}{r.exception or ''}\n", encoding="utf-8")
        return r.exit_code


def _has(cmd: click.Command, name: str) -> bool:
    return any(p.name == name for p in cmd.params)


def _trains(cmd: click.Command) -> bool:
    """A command that trains one model into a run folder from a data folder (a search trains many)."""
    return _has(cmd, "data_dir") and _has(cmd, "output_dir") and _has(cmd, "seed") and not _has(cmd, "n_trials")


def do_crossval(spec, runner: CommandRunner):
    """Check every recipe's flags, then ``cross_validate``."""
    from nlp_distill.evaluation.crossval import cross_validate

    for r in ([spec.teacher] if spec.teacher else []) + list(spec.recipes):
        runner.check(r.argv, spec.data_dir, Path(spec.output_dir) / "runs" / r.name)
    return cross_validate(spec, runner)
