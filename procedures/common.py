"""Run-folder helpers shared by the procedures."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional, Sequence, Tuple

from nlp_distill.config import RunOptions  # noqa: F401  (procedures and tests import it from here)
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.teachers import teacher_labels
from nlp_distill.errors import ConfigError
from nlp_distill.integrations import tracking
from nlp_distill.io import read_json, write_json
from nlp_distill.model_card import write_model_card
from nlp_distill.training.result import TrainResult
from nlp_distill.utils import distributed as ddp
from nlp_distill.utils.device import environment, pick_device  # noqa: F401  (procedures import them from here)
from nlp_distill.utils.progress import set_progress
from procedures.logs import setup_logging  # noqa: F401  (procedures import it from here)

logger = logging.getLogger("procedures")


def now_iso() -> str:
    """The local time as ISO-8601 with its UTC offset, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def invoked_command(task: Optional[str]) -> List[str]:
    """The command line of this run as a user would type it (``nlp-train TASK --flag ...``)."""
    args = sys.argv[1:]
    if task in args:
        return ["nlp-train", *args[args.index(task):]]
    return ["nlp-train", str(task), "..."]  # called from Python (or a test runner): flags unknown


def start_distributed(run: "RunOptions") -> Dict[str, int]:
    """Join the torchrun process group when there is one (no-op otherwise); other ranks than 0
    log warnings only. Returns ``{"rank", "world_size"}``."""
    if ddp.init_from_env(pick_device(run.device).type) and not ddp.is_main():
        logging.getLogger().setLevel(logging.WARNING)
    rank, size = ddp.world()
    return {"rank": rank, "world_size": size}


STATUS_FILE = "status.json"
# what a run writes into its folder (teacher_cache/ is keyed by content and may be reused)
RUN_ARTIFACTS = ("config.json", "metrics.json", "model", "checkpoint", "train_log.jsonl", STATUS_FILE,
                 "augmented.txt", "pseudo_labeled.txt", "trials", "trials.jsonl", "best_config.json", "tensorboard",
                 "transfer_store", "features", "wandb")
# settings a resumed run may change
RESUMABLE_CHANGES = {("trainer", "epochs"), ("trainer", "show_progress"), ("trainer", "report_to"),
                     ("trainer", "mlflow_uri")}


def config_dict(sections: Dict[str, Any]) -> Dict[str, Any]:
    """``config.json`` of a run: each config section as its dict, records (task, data_dir) as they are."""
    return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in sections.items()}


def config_differences(old: Dict[str, Any], new: Dict[str, Any], ignore: Collection[Tuple[str, str]] = ()) -> List[str]:
    """``section.key: old -> new`` for every setting that differs between two ``config.json``
    dicts (a top-level record as ``key: old -> new``), less the (section, key) pairs in ``ignore``."""
    out = []
    for sec in sorted(set(old) | set(new)):
        a, b = old.get(sec), new.get(sec)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{sec}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k) and (sec, k) not in ignore]
        elif a != b:
            out.append(f"{sec}: {a!r} -> {b!r}")
    return out


def settings_at_default(sections: Dict[str, Any]) -> set:
    """(section, field) of every config-section field whose value is its class's default."""
    out = set()
    for sec, v in sections.items():
        if dataclasses.is_dataclass(v):
            default = type(v)()
            out |= {(sec, f.name) for f in dataclasses.fields(v) if getattr(v, f.name) == getattr(default, f.name)}
    return out


def _check_folder(out: Path, config: Dict[str, Any], run: RunOptions,
                  at_default: Collection[Tuple[str, str]] = ()) -> bool:
    """Refuse to mix runs. Returns True when the folder's earlier artifacts must be cleared.

    ``at_default``: (section, key) settings of this run at their default; one the earlier run's
    ``config.json`` lacks (a setting added since, whose default is the earlier behaviour) is no
    difference for ``--resume``."""
    present = [a for a in RUN_ARTIFACTS if (out / a).exists()]
    if not present:
        return False
    status = read_json(out / STATUS_FILE).get("status", "?") if (out / STATUS_FILE).is_file() else "unknown"
    if run.resume:
        if (out / "checkpoint").is_dir():
            saved = read_json(out / "config.json") if (out / "config.json").is_file() else {}
            added = {(sec, k) for sec, k in at_default if k not in (saved.get(sec) or {})}
            diff = config_differences(saved, config, set(RESUMABLE_CHANGES) | added)
            if diff:
                raise ConfigError(f"--resume: {out} was run with other settings ({'; '.join(diff)}); only "
                                  "--epochs may change (use --config OUTPUT_DIR/config.json)")
            return False
        if status == "finished":
            raise ConfigError(f"--resume: the run in {out} has finished (no checkpoint left); pass --overwrite to rerun it")
        logger.info("--resume: no checkpoint in %s (killed before its first epoch ended): starting afresh", out)
        return True
    if status == "failed" and not (out / "checkpoint").exists() and not (out / "model").exists():
        logger.info("%s holds a run that failed before its first epoch ended: starting it afresh", out)
        return True
    if not run.overwrite:
        raise ConfigError(f"{out} holds another run (status {status}, {', '.join(present)}); pass --overwrite to "
                          "replace it, --resume to continue it, or choose another --output_dir")
    logger.warning("--overwrite: replacing the run in %s", out)
    return True


@contextlib.contextmanager
def run_folder(output_dir, sections: Dict[str, Any], run: RunOptions) -> Iterator[Path]:
    """Claim ``output_dir`` for a run: refuse to mix it with another run, write ``config.json``
    and ``status.json`` (running -> finished | failed), drop the optimiser checkpoint at the end
    unless ``run.keep_checkpoint``."""
    out = Path(output_dir)
    trainer = sections.get("trainer")
    set_progress(getattr(trainer, "show_progress", True))  # --no_show_progress: ours and the HF libraries' bars
    start_distributed(run)
    if not ddp.is_main():  # rank 0 claims the folder and writes its files; the others wait for it
        ddp.barrier()
        yield out
        return
    with _claimed_folder(out, config_dict(sections), run, settings_at_default(sections)):
        ddp.barrier()  # the folder is ready (a failed claim ends the job: torchrun stops the other ranks)
        yield out


@contextlib.contextmanager
def _claimed_folder(out: Path, config: Dict[str, Any], run: RunOptions,
                    at_default: Collection[Tuple[str, str]] = ()) -> Iterator[Path]:
    """The single-process body of :func:`run_folder`."""
    if _check_folder(out, config, run, at_default):
        for a in RUN_ARTIFACTS:
            p = out / a
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--output_dir {out}: cannot write there ({e.strerror})") from None
    setup_logging(out)
    write_json(out / "config.json", config)
    write_json(out / STATUS_FILE, {"status": "running", "task": config.get("task"), "started": now_iso()})
    trackers = tracking.Trackers()
    try:
        trackers = _open_trackers(out, config, run.resume)
        with trackers.activate():  # the Trainer logs each epoch to them
            yield out
    except BaseException as e:
        _log_failure(e)
        trackers.finish(failed=True)
        write_json(out / STATUS_FILE, {"status": "failed", "task": config.get("task"), "failed": now_iso(),
                                      "error": f"{type(e).__name__}: {e}"})
        raise
    if (out / "model" / "config.json").is_file():
        metrics = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
        write_model_card(out / "model", config, metrics, invoked_command(config.get("task")))
    trackers.log_run_artifacts()
    trackers.finish()
    write_json(out / STATUS_FILE, {"status": "finished", "task": config.get("task"), "finished": now_iso()})
    if not run.keep_checkpoint and (out / "checkpoint").is_dir():
        shutil.rmtree(out / "checkpoint")


def _log_failure(e: BaseException) -> None:
    """Write the error that ended a run into its ``run.log`` only (the command prints it on
    stderr itself): the message of a user error (bad data, setting or folder), else the traceback."""
    user_error = isinstance(e, (ValueError, FileNotFoundError, KeyboardInterrupt))
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "run failed: %s: %s", (type(e).__name__, e),
                               None if user_error else (type(e), e, e.__traceback__))
    for h in logging.getLogger().handlers:
        if getattr(h, "_nlp_distill_run", False):
            h.handle(record)


def _open_trackers(out: Path, config: Dict[str, Any], resume: bool = False) -> tracking.Trackers:
    """The run's trackers (``trainer.report_to``; none without a trainer section), given the
    resolved config as params; with ``resume``, the folder's earlier tracker runs go on."""
    trainer = config.get("trainer") or {}
    trackers = tracking.make_trackers(trainer.get("report_to") or [], out, trainer.get("mlflow_uri"),
                                      tags={"task": str(config.get("task"))}, resume=resume)
    trackers.log_params(config)
    return trackers


def run_on_data(data_dir, output_dir, sections: Dict[str, Any], run: RunOptions, train: Callable[..., TrainResult],
                labels_of_teacher: Optional[Sequence[str]] = None, **settings: Any) -> Dict[str, Any]:
    """Claim ``output_dir`` (``run_folder``), read ``data_dir`` and call the library's ``train``
    (``train_student``, ``train_teacher``, ...) with its gold splits, the run's device and resume
    flag and ``settings``.

    Args:
        labels_of_teacher: a distillation's teacher folder(s): without ``labels.txt`` the
            student's labels are the teacher's (``teacher_labels``), the data's tags among them.

    Returns:
        the metrics ``train`` wrote to ``metrics.json`` (``{}`` on torchrun ranks other than 0).
    """
    with run_folder(output_dir, sections, run) as out:
        d = load_data_dir(data_dir, encoding=run.encoding,
                          teacher_labels=teacher_labels(labels_of_teacher) if labels_of_teacher else None)
        return train(output_dir=out, train=d.train, dev=d.dev, test=d.test, labels=d.labels, device=run.device,
                     resume=run.resume, **settings).metrics
