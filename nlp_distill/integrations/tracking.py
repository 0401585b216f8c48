"""Run tracking the ecosystem's way: ``report_to`` (the HF Trainer's name and meaning) names the
backends a run logs to, each behind one small interface.

``report_to`` is a list (a comma list on the command line) of ``tensorboard``, ``mlflow`` and
``wandb``; ``none`` (the default) adds no backend. ``train_log.jsonl`` is written whatever it says
(``jsonl`` is accepted as another name for ``none``). Every backend gets the same things:

- params: the run's resolved config, sections flattened (``trainer.lr``, ``tagger.hidden``, ...);
- metrics: each epoch's record of ``train_log.jsonl`` (its numbers, at step = epoch); TensorBoard
  also gets per-step scalars (``step/lr``, ``step/loss`` and the loss's parts);
- artifacts at the end: ``model/README.md`` (the model card) and ``metrics.json``, when present;
- an end: status FINISHED, or FAILED when the run raised.

Where each backend writes:

- tensorboard: ``OUTPUT_DIR/tensorboard``.
- mlflow: ``--mlflow_uri``; else ``$MLFLOW_TRACKING_URI``; else a SQLite store beside the run
  folder, ``sqlite:////ABS/PARENT/mlflow.db`` (artifacts in ``PARENT/mlartifacts``), so the runs
  of one parent folder share one store (``mlflow ui --backend-store-uri sqlite:///PARENT/mlflow.db``).
  Experiment: ``$MLFLOW_EXPERIMENT_NAME`` or ``nlp-distill``; run name: the run folder's name.
- wandb: offline (``OUTPUT_DIR/wandb``, ``wandb sync`` uploads it later) unless W&B is configured
  (``WANDB_MODE`` or ``WANDB_API_KEY`` set); project ``$WANDB_PROJECT`` or ``nlp-distill``.

A run folder opens the run's trackers and makes them current (:meth:`Trackers.activate`); a
:class:`~nlp_distill.training.trainer.Trainer` built inside logs to them; one built outside opens
its own from its config. A run opened while another is current (a search's trials) is its child:
same MLflow store, tagged with the parent's run id; same W&B group. ``--resume`` continues the
folder's earlier MLflow run (found by its ``nlp_distill.output_dir`` tag) and W&B run id.

mlflow and wandb are imported only when named (extras ``.[mlflow]`` / ``.[wandb]`` of the clone).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from nlp_distill.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("tensorboard", "mlflow", "wandb")
# the values report_to accepts: the backends, none, and jsonl (today's name for "no backend")
REPORT_TO = ("none", "jsonl", *BACKENDS)
DEFAULT_PROJECT = "nlp-distill"  # MLflow experiment / W&B project when the environment names none
# what a finished run hands every backend, relative to its folder
RUN_ARTIFACTS = ("model/README.md", "metrics.json")


def backends(report_to: Sequence[str]) -> List[str]:
    """The backends named by ``report_to`` in order, once each (``none`` / ``jsonl`` name none).

    Raises:
        ConfigError: an unknown name, or ``none`` beside a backend.
    """
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [n.strip().lower() for item in names for n in str(item).split(",") if n.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown:
        raise ConfigError(f"--report_to: unknown {', '.join(map(repr, unknown))}; expected a comma list of "
                          f"{', '.join(BACKENDS)}, or none")
    chosen = [n for n in dict.fromkeys(names) if n in BACKENDS]
    if chosen and "none" in names:
        raise ConfigError(f"--report_to: 'none' cannot be combined with {', '.join(chosen)}")
    return chosen


def flatten_params(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"trainer": {"lr": 1e-3}, "task": "tagger"}`` -> ``{"trainer.lr": 1e-3, "task": "tagger"}``
    (config objects with ``to_dict`` are read as their dict)."""
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def epoch_metrics(record: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of one ``train_log.jsonl`` record, under their JSONL names (``epoch`` is the
    step; flags such as ``best`` and nested dicts are left out)."""
    return {k: float(v) for k, v in record.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _require(backend: str):
    """Import the backend's package, or one ConfigError naming the pip extra (named as the backend)."""
    module = {"tensorboard": "torch.utils.tensorboard"}.get(backend, backend)
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"--report_to {backend} needs the {backend} package: "
                          f"pip install {backend} (in the clone: pip install -e '.[{backend}]')") from None


class Tracker:
    """One backend's run: the interface every backend implements.

    ``log_step_metrics`` is optional (per optimiser step; a no-op unless the backend wants it, see
    ``per_step``); the other methods are each backend's own.
    """

    name: str = ""
    per_step: bool = False

    def log_params(self, params: Dict[str, Any]) -> None:
        """Record the run's settings (flattened: ``section.field -> value``)."""
        raise NotImplementedError

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        """Record ``metrics`` at ``step`` (the epoch, 1-based)."""
        raise NotImplementedError

    def log_step_metrics(self, metrics: Dict[str, float], step: int) -> None:
        """Record per-step scalars at optimiser step ``step`` (backends with ``per_step``)."""

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        """Attach the file ``path`` to the run (under ``folder`` of the run's files, if given)."""
        raise NotImplementedError

    def finish(self, failed: bool = False) -> None:
        """End the run: status FINISHED, or FAILED."""
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        """Where this backend writes (for logs and tests)."""
        return {"backend": self.name}


class TensorBoardTracker(Tracker):
    """Scalars in ``OUTPUT_DIR/tensorboard``: ``train/...`` and ``dev/...`` per epoch, ``step/...``
    per optimiser step; the config as a text table."""

    name = "tensorboard"
    per_step = True

    def __init__(self, output_dir: Path) -> None:
        self.folder = Path(output_dir) / "tensorboard"
        self.writer = _require("tensorboard").SummaryWriter(str(self.folder))

    def log_params(self, params: Dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in params.items())
        self.writer.add_text("config", f"| setting | value |\n|---|---|\n{rows}", 0)

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            if k.startswith(("train_", "dev_")):
                self.writer.add_scalar(k.replace("_", "/", 1), v, step)
        self.writer.flush()

    def log_step_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(f"step/{k}", v, step)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:  # TensorBoard keeps no files
        pass

    def finish(self, failed: bool = False) -> None:
        self.writer.close()

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "folder": str(self.folder)}


def resolve_mlflow_uri(output_dir: Path, uri: Optional[str] = None) -> str:
    """The MLflow tracking URI of a run in ``output_dir``: ``uri``, else ``$MLFLOW_TRACKING_URI``,
    else the SQLite store ``sqlite:////ABS/PARENT/mlflow.db`` beside the run folder."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(output_dir).resolve().parent / 'mlflow.db'}"


class MLflowTracker(Tracker):
    """One MLflow run, written through ``MlflowClient`` (no global active run is touched).

    Args:
        uri: tracking URI (``sqlite:///...``, ``http://...``, ``databricks``).
        run_name: the run's name (the run folder's name).
        experiment: experiment name, created when missing (for a SQLite store, with its artifacts
            in ``mlartifacts/`` beside the database, not in the working directory).
        tags: run tags (e.g. the task, the parent run's id).
        output_dir: the run folder, kept as the tag ``nlp_distill.output_dir``.
        resume: continue the latest run of the same run folder, when the store holds one.
    """

    name = "mlflow"
    FOLDER_TAG = "nlp_distill.output_dir"
    MAX_PARAMS = 100  # per log_batch call (MLflow's limit)
    MAX_VALUE = 6000  # characters of a param value (MLflow's limit)

    def __init__(self, uri: str, run_name: str, experiment: str = DEFAULT_PROJECT,
                 tags: Optional[Dict[str, str]] = None, output_dir: Optional[Path] = None,
                 resume: bool = False) -> None:
        _require("mlflow")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if logging.getLogger("alembic").level == logging.NOTSET:  # schema set-up chatter of a new SQLite store
            logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        folder = str(Path(output_dir).resolve()) if output_dir is not None else None
        tags = {**(tags or {}), **({self.FOLDER_TAG: folder} if folder else {})}
        try:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(experiment)
            previous = self._latest_run(exp_id, folder) if resume and folder else None
            if previous is not None:  # --resume: the same run goes on
                self.run_id, self.resumed = previous, True
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
                self.resumed = False
        except MlflowException as e:
            raise ConfigError(f"--report_to mlflow: cannot start a run at {uri} ({e.message})") from None
        logger.info("mlflow: %s run %s (%s) in %s", "resumed" if self.resumed else "started", self.run_id, run_name,
                    uri)

    def _latest_run(self, exp_id: str, folder: str) -> Optional[str]:
        """The id of the latest run of the run folder ``folder``, or None."""
        if "'" in folder:  # not expressible in MLflow's filter syntax: a new run
            return None
        found = self.client.search_runs([exp_id], filter_string=f"tags.`{self.FOLDER_TAG}` = '{folder}'",
                                        order_by=["attributes.start_time DESC"], max_results=1)
        return found[0].info.run_id if found else None

    def _create_experiment(self, experiment: str) -> str:
        from mlflow.exceptions import MlflowException

        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by another process
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def log_params(self, params: Dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, (v if isinstance(v, str) else json.dumps(v))[: self.MAX_VALUE]) for k, v in params.items()]
        if self.resumed:  # MLflow params never change: a setting changed on --resume (epochs) becomes a tag
            had = self.client.get_run(self.run_id).data.params
            for p in items:
                if p.key in had and had[p.key] != p.value:
                    self.client.set_tag(self.run_id, f"resume.{p.key}", p.value)
            items = [p for p in items if p.key not in had]
        for i in range(0, len(items), self.MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i:i + self.MAX_PARAMS])

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "uri": self.uri, "run_id": self.run_id}


def wandb_mode() -> Optional[str]:
    """``offline`` unless the user configured W&B (``WANDB_MODE`` or ``WANDB_API_KEY`` set): then
    None, W&B's own choice."""
    return None if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY") else "offline"


class WandbTracker(Tracker):
    """One W&B run with its files under ``OUTPUT_DIR/wandb``; offline unless W&B is configured.

    Args:
        output_dir: the run folder.
        run_name: the run's name.
        group: W&B group (a parent run's name), or None.
        tags: run tags.
        resume: continue the run whose files are in ``OUTPUT_DIR/wandb`` (same run id), if any.
    """

    name = "wandb"

    def __init__(self, output_dir: Path, run_name: str, group: Optional[str] = None,
                 tags: Sequence[str] = (), resume: bool = False) -> None:
        wandb = _require("wandb")
        self.folder = Path(output_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mode = wandb_mode()
        previous = self.previous_id(self.folder) if resume else None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=run_name,
                              dir=str(self.folder), mode=self.mode, group=group, tags=list(tags) or None,
                              id=previous, resume="allow" if previous else None, reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.files: List[Tuple[Path, str]] = []

    @staticmethod
    def previous_id(folder: Path) -> Optional[str]:
        """The run id of W&B's latest run in ``folder/wandb`` (``offline-run-DATE-ID``), or None."""
        latest = Path(folder) / "wandb" / "latest-run"
        return os.readlink(latest).rsplit("-", 1)[-1] if latest.is_symlink() else None

    def log_params(self, params: Dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        self.files.append((Path(path), f"{folder}/{Path(path).name}" if folder else Path(path).name))

    def finish(self, failed: bool = False) -> None:
        if self.files and not failed:
            import wandb

            art = wandb.Artifact(f"run-{self.run.id}", type="run-files")
            for path, name in self.files:
                art.add_file(str(path), name=name)
            self.run.log_artifact(art)
        self.run.finish(exit_code=1 if failed else 0)

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "folder": str(self.folder / "wandb"), "mode": self.mode}


class Trackers(Tracker):
    """The trackers of one run, logged to together (empty: ``report_to none``)."""

    name = "all"

    def __init__(self, trackers: Sequence[Tracker] = (), output_dir: Optional[Path] = None) -> None:
        self.trackers = list(trackers)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.per_step = any(t.per_step for t in self.trackers)
        self.finished = False

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_params(self, params: Dict[str, Any]) -> None:
        """Log the run's config (nested sections are flattened)."""
        flat = flatten_params(params)
        for t in self.trackers:
            t.log_params(flat)

    def log_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_epoch(self, record: Dict[str, Any]) -> None:
        """Log one ``train_log.jsonl`` record: its numbers at step = its epoch."""
        self.log_metrics(epoch_metrics(record), int(record["epoch"]))

    def log_step_metrics(self, metrics: Dict[str, float], step: int) -> None:
        for t in self.trackers:
            if t.per_step:
                t.log_step_metrics(metrics, step)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        for t in self.trackers:
            t.log_artifact(path, folder)

    def log_run_artifacts(self) -> None:
        """Attach the model card and ``metrics.json`` of the run folder, those that exist."""
        if self.output_dir is None:
            return
        for rel in RUN_ARTIFACTS:
            if (self.output_dir / rel).is_file():
                self.log_artifact(self.output_dir / rel, str(Path(rel).parent) if "/" in rel else None)

    def finish(self, failed: bool = False) -> None:
        """End every backend's run once (later calls do nothing). Ending a failed run never
        raises: a backend's own error is logged, so the run's error is the one reported."""
        if self.finished:
            return
        self.finished = True
        for t in self.trackers:
            try:
                t.finish(failed)
            except Exception as e:  # noqa: BLE001 - any backend's error
                if not failed:
                    raise
                logger.warning("%s: could not mark the run failed (%s: %s)", t.name, type(e).__name__, e)

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "trackers": [t.describe() for t in self.trackers]}

    @contextlib.contextmanager
    def activate(self) -> Iterator["Trackers"]:
        """Make these the current trackers for the block (:func:`current`)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


_CURRENT: contextvars.ContextVar[Optional[Trackers]] = contextvars.ContextVar("nlp_distill_trackers", default=None)


def current() -> Optional[Trackers]:
    """The trackers of the run in progress (opened by a run folder), or None."""
    return _CURRENT.get()


def make_trackers(report_to: Sequence[str], output_dir, mlflow_uri: Optional[str] = None,
                  run_name: Optional[str] = None, tags: Optional[Dict[str, str]] = None,
                  resume: bool = False) -> Trackers:
    """Start one run per backend named in ``report_to`` for the run folder ``output_dir``.

    A run started while another is current is its child: same MLflow store (unless ``mlflow_uri``
    names one), tagged ``mlflow.parentRunId``; W&B group = the parent's run name.

    Args:
        report_to: backend names (``tensorboard``, ``mlflow``, ``wandb``; ``none``: no backend).
        output_dir: the run folder.
        mlflow_uri: MLflow tracking URI (default: see :func:`resolve_mlflow_uri`).
        run_name: the run's name (default: the folder's name).
        tags: tags of the run (e.g. ``{"task": "tagger_kd"}``).
        resume: continue the run folder's earlier MLflow / W&B run (``--resume``) rather than
            start another; TensorBoard appends to its folder either way.

    Raises:
        ConfigError: an unknown backend, or a named backend whose package is missing.
    """
    names = backends(report_to)
    out = Path(output_dir)
    run_name = run_name or out.resolve().name
    parent = current()
    parent_of = {t.name: t for t in parent.trackers} if parent else {}
    tags = dict(tags or {})
    made: List[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                made.append(TensorBoardTracker(out))
            elif name == "mlflow":
                up = parent_of.get("mlflow")
                uri = resolve_mlflow_uri(out, mlflow_uri or (up.uri if up else None))  # type: ignore[attr-defined]
                run_tags = {**tags, **({"mlflow.parentRunId": up.run_id} if up else {})}  # type: ignore[attr-defined]
                made.append(MLflowTracker(uri, run_name, os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT,
                                          run_tags, out, resume))
            elif name == "wandb":
                up = parent_of.get("wandb")
                made.append(WandbTracker(out, run_name, group=up.run.name if up else None,  # type: ignore[attr-defined]
                                         tags=[f"{k}:{v}" for k, v in tags.items()], resume=resume))
    except BaseException:
        for t in made:  # a backend that could not start fails the run: the others end with it
            t.finish(failed=True)
        raise
    return Trackers(made, out)
