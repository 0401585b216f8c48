"""--report_to: tiny student runs through the CLI, read back from the trackers themselves (MLflow's
own store through its API; W&B through a stand-in module, and once offline for real)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Tuple
from unittest import mock

import pytest

from nlp_distill.config import StudentTrainerConfig, TeacherTrainerConfig, TrainerConfig
from nlp_distill.errors import ConfigError
from nlp_distill.integrations import tracking
from procedures.cli import nlp_train
from tests.option_probe import invoke

TINY = Path(__file__).parent / "fixtures" / "tiny"
ARGS = ["--hidden", "8", "--word_embedding_dims", "8", "--char_emb_dim", "4", "--char_hidden", "6",
        "--embedding_file", "none", "--no_crf", "--batch_size", "16", "--lr", "0.005", "--device", "cpu", "--seed", "3",
        "--no_show_progress"]
TRACKER_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT")


@pytest.fixture(autouse=True)
def _no_user_tracker_settings(monkeypatch):
    for var in TRACKER_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tracking") / "tiny"
    shutil.copytree(TINY, d)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A parent folder whose runs share the default MLflow store (runs/mlflow.db)."""
    return tmp_path_factory.mktemp("runs")


def _train(data_dir: Path, out: Path, *extra: Any, epochs: int = 2):
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out, *ARGS, "--epochs", epochs, *extra])
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def _jsonl(out: Path) -> List[Dict[str, Any]]:
    return [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]


def _mlflow_runs(uri: str) -> list:
    """Every run in the store at ``uri``, through MLflow's own search (pointed there by its variable:
    ``mlflow.set_tracking_uri`` would also set it for the rest of the process)."""
    import mlflow

    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": uri}):
        return mlflow.search_runs(search_all_experiments=True, output_format="list")


def _run_named(uri: str, name: str):
    found = [r for r in _mlflow_runs(uri) if r.info.run_name == name]
    assert len(found) == 1, [r.info.run_name for r in _mlflow_runs(uri)]
    return found[0]


def _history(uri: str, run_id: str, keys) -> Dict[str, List[Tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def test_mlflow_run_holds_the_config_the_epochs_of_the_jsonl_log_and_the_model_card(data_dir, runs, tmp_path):
    pytest.importorskip("mlflow")
    out = runs / "student"
    _train(data_dir, out, "--report_to", "mlflow")
    uri = f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")  # the default store: beside the run folder, an absolute path
    run = _run_named(uri, "student")
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "tagger"

    config = json.loads((out / "config.json").read_text())  # params: the resolved config, sections flattened
    flat = tracking.flatten_params(config)
    assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}
    assert run.data.params["trainer.lr"] == "0.005" and run.data.params["tagger.hidden"] == "8"
    assert run.data.params["trainer.report_to"] == '["mlflow"]'

    log = _jsonl(out)  # metrics: every number of every epoch record of train_log.jsonl, at step = epoch
    assert [rec["epoch"] for rec in log] == [1, 2]
    want: Dict[str, List[Tuple[int, float]]] = {}
    for rec in log:
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                want.setdefault(k, []).append((rec["epoch"], float(v)))
    assert {"train_loss", "dev_f1", "lr", "epoch_seconds"} <= set(want)
    assert set(run.data.metrics) == set(want)
    assert _history(uri, run.info.run_id, want) == want

    from mlflow.tracking import MlflowClient  # artifacts: the model card and metrics.json, as written

    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "model"}
    got = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    assert (got / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    assert (got / "model" / "README.md").read_bytes() == (out / "model" / "README.md").read_bytes()
    assert not (runs / "mlruns").exists() and not Path("mlruns").exists()  # artifacts beside the store
    assert not (out / "tensorboard").exists()


def test_a_run_that_raises_ends_failed(data_dir, runs, monkeypatch):
    pytest.importorskip("mlflow")
    from nlp_distill.training.trainer import Trainer

    def boom(self, resume=False):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "train", boom)
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", runs / "broken", *ARGS,
                           "--report_to", "mlflow"])
    assert r.exit_code != 0
    run = _run_named(f"sqlite:///{runs.resolve() / 'mlflow.db'}", "broken")
    assert run.info.status == "FAILED"
    assert json.loads((runs / "broken" / "status.json").read_text())["status"] == "failed"


def test_mlflow_tracking_uri_env_is_honoured_and_the_flag_wins(data_dir, runs, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    elsewhere = f"sqlite:///{runs.resolve() / 'mlflow.db'}"  # another folder's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    out = tmp_path / "runs" / "env"
    _train(data_dir, out, "--report_to", "mlflow", epochs=1)
    run = _run_named(elsewhere, "env")
    assert run.info.status == "FINISHED" and run.data.metrics["dev_f1"] == _jsonl(out)[0]["dev_f1"]
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    # the flag wins over the environment, which wins over the default
    assert tracking.resolve_mlflow_uri(out, "sqlite:////x/flag.db") == "sqlite:////x/flag.db"
    assert tracking.resolve_mlflow_uri(out) == elsewhere
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_mlflow_uri(out) == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"


def test_a_child_run_shares_its_parents_store_and_names_it(runs):
    pytest.importorskip("mlflow")
    parent = tracking.make_trackers(["mlflow"], runs / "search")
    with parent.activate():
        child = tracking.make_trackers(["mlflow"], runs / "search" / "trials" / "000")
        child.finish()
    parent.finish()
    (p,), (c,) = parent.trackers, child.trackers
    assert c.uri == p.uri
    assert _run_named(p.uri, "000").data.tags["mlflow.parentRunId"] == p.run_id
    assert tracking.current() is None


def test_report_to_none_and_the_default_write_no_tracker_files(data_dir, tmp_path):
    out = tmp_path / "runs" / "plain"
    _train(data_dir, out, "--report_to", "none", epochs=1)
    assert len(_jsonl(out)) == 1 and (out / "run.log").is_file()  # the run's own logs are kept
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()
    assert not (tmp_path / "runs" / "mlflow.db").exists()
    # the default adds no tracker (as before report_to took a list); the earlier name of none still reads
    for cls in (TrainerConfig, StudentTrainerConfig, TeacherTrainerConfig):
        assert cls().report_to == ["none"] and not tracking.make_trackers(cls().report_to, out)
    assert TrainerConfig.from_dict({"report_to": "jsonl"}).report_to == ["jsonl"]
    assert tracking.backends(["jsonl"]) == [] and tracking.backends("tensorboard,mlflow") == ["tensorboard", "mlflow"]


@pytest.mark.parametrize("value,needle", [
    ("comet", "'comet' is not one of none, jsonl, tensorboard, mlflow, wandb"),
    ("none,mlflow", "none cannot be combined with others"),
])
def test_an_unknown_or_contradictory_report_to_is_one_line_error(data_dir, tmp_path, value, needle):
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", tmp_path / "run", *ARGS,
                           "--report_to", value])
    assert r.exit_code != 0 and "Traceback" not in r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("Error: trainer.report_to (--report_to)") and needle in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["mlflow", "wandb", "tensorboard"])
def test_a_missing_package_names_its_extra(backend, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, {"tensorboard": "torch.utils.tensorboard"}.get(backend, backend), None)
    with pytest.raises(ConfigError, match=fr"--report_to {backend} needs the {backend} package: "
                                          fr"pip install {backend} \(in the clone: pip install -e '.\[{backend}\]'\)"):
        tracking.make_trackers([backend], tmp_path / "run")


class FakeWandb(types.ModuleType):
    """Stands in for the wandb package: records what a run was given."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.runs: List[Any] = []

    def Settings(self, **kw: Any) -> Dict[str, Any]:  # noqa: N802 - wandb's name
        return kw

    def init(self, **kw: Any):
        run = types.SimpleNamespace(init=kw, id=f"r{len(self.runs)}", name=kw.get("name"), config={}, logged=[],
                                    artifacts=[], exit_code=None)
        run.config = types.SimpleNamespace(update=lambda d, allow_val_change=False: run.__dict__.setdefault(
            "params", {}).update(d))
        run.log = lambda d, step=None: run.logged.append((step, dict(d)))
        run.log_artifact = lambda art: run.artifacts.append(art)
        run.finish = lambda exit_code=0: setattr(run, "exit_code", exit_code)
        self.runs.append(run)
        return run

    class Artifact:
        def __init__(self, name: str, type: str) -> None:  # noqa: A002 - wandb's name
            self.name, self.type, self.files = name, type, {}

        def add_file(self, path: str, name: str) -> None:
            self.files[name] = Path(path).read_bytes()


def test_wandb_run_gets_config_epochs_artifacts_offline_in_the_run_folder(data_dir, tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "wb"
    _train(data_dir, out, "--report_to", "wandb")
    (run,) = fake.runs
    assert run.init["mode"] == "offline" and run.init["dir"] == str(out) and run.init["name"] == "wb"
    assert run.init["project"] == "nlp-distill" and "task:tagger" in run.init["tags"]
    assert run.params == tracking.flatten_params(json.loads((out / "config.json").read_text()))
    assert run.logged == [(rec["epoch"], tracking.epoch_metrics(rec)) for rec in _jsonl(out)]
    (art,) = run.artifacts
    assert art.files == {"metrics.json": (out / "metrics.json").read_bytes(),
                         "model/README.md": (out / "model" / "README.md").read_bytes()}
    assert run.exit_code == 0
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # configured by the user: W&B's own mode
    assert tracking.wandb_mode() is None


def test_a_wandb_child_run_is_grouped_under_its_parent(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    parent = tracking.make_trackers(["wandb"], tmp_path / "search")
    with parent.activate():
        child = tracking.make_trackers(["wandb"], tmp_path / "search" / "trials" / "000")
        child.finish()
    parent.finish()
    top, trial = fake.runs
    assert top.init["group"] is None and top.init["name"] == "search"
    assert trial.init["group"] == "search" and trial.init["name"] == "000"


def test_wandb_offline_for_real(tmp_path):
    pytest.importorskip("wandb")
    t = tracking.make_trackers(["wandb"], tmp_path / "run")
    t.log_params({"trainer": {"lr": 0.1}})
    t.log_epoch({"epoch": 1, "train_loss": 0.5, "dev_f1": 0.25, "best": True})
    (tmp_path / "run" / "metrics.json").write_text("{}")
    t.log_run_artifacts()
    t.finish()
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))


def test_a_trainer_outside_a_run_folder_opens_and_ends_its_own_runs(runs):
    """Library use: a Trainer given report_to logs its config and epochs itself, and ends the run
    FAILED when training raises."""
    pytest.importorskip("mlflow")
    import torch
    from torch import nn

    from nlp_distill.training.trainer import Trainer

    torch.manual_seed(0)
    x = torch.randn(16, 3)
    y = x.sum(1)
    model = nn.Linear(3, 1)

    def loss_fn(batch):
        return ((model(batch[0]).squeeze(-1) - batch[1]) ** 2).sum(), len(batch[1])

    def make(out: Path, evaluate) -> Trainer:
        cfg = TrainerConfig(epochs=2, lr=0.05, show_progress=False, metric_for_best="score", report_to=["mlflow"])
        return Trainer(model=model, config=cfg, loss_fn=loss_fn, train_batches=lambda epoch: [(x, y)], num_batches=1,
                       evaluate=evaluate, save_model=lambda folder: None, output_dir=out)

    make(runs / "library", lambda: {"score": -float(((model(x).squeeze(-1) - y) ** 2).mean())}).train()
    uri = f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    run = _run_named(uri, "library")
    assert run.info.status == "FINISHED" and run.data.params["trainer.epochs"] == "2"
    log = _jsonl(runs / "library")
    assert _history(uri, run.info.run_id, ["dev_score"]) == {"dev_score": [(r["epoch"], r["dev_score"]) for r in log]}

    def broken():
        raise RuntimeError("dev set unreadable")

    with pytest.raises(RuntimeError):
        make(runs / "library_broken", broken).train()
    assert _run_named(uri, "library_broken").info.status == "FAILED"
    assert tracking.current() is None


def test_resume_continues_the_same_tracker_runs(data_dir, runs, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    out = runs / "resumed"
    _train(data_dir, out, "--report_to", "mlflow", "--keep_checkpoint", epochs=1)
    _train(data_dir, out, "--report_to", "mlflow", "--resume", epochs=2)
    uri = f"sqlite:///{runs.resolve() / 'mlflow.db'}"
    run = _run_named(uri, "resumed")  # one run, not one per start
    assert run.info.status == "FINISHED"
    log = _jsonl(out)
    assert [r["epoch"] for r in log] == [1, 2]
    want = {"train_loss": [(r["epoch"], r["train_loss"]) for r in log]}
    assert _history(uri, run.info.run_id, ["train_loss"]) == want
    # MLflow params never change: the epochs given on --resume are a tag beside the first value
    assert run.data.params["trainer.epochs"] == "1" and run.data.tags["resume.trainer.epochs"] == "2"

    fake = FakeWandb()  # W&B: the run id of OUTPUT_DIR/wandb/latest-run goes on
    monkeypatch.setitem(sys.modules, "wandb", fake)
    folder = tmp_path / "wb"
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "latest-run").symlink_to("offline-run-20260101_120000-abc123")
    tracking.make_trackers(["wandb"], folder, resume=True).finish()
    tracking.make_trackers(["wandb"], folder).finish()
    assert [(r.init["id"], r.init["resume"]) for r in fake.runs] == [("abc123", "allow"), (None, None)]
