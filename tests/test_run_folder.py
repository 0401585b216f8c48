"""Run folders never mix or vanish; nothing loaded from disk runs code."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from nlp_distill.errors import ConfigError
from nlp_distill.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.test_cli import TAGGER_ARGS, invoke, ok


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_planted_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint" / "trainer_state.pt"
    path.parent.mkdir()
    torch.save({"model": {}, "evil": _Payload(marker)}, path)
    with pytest.raises(ConfigError, match="refusing to load"):
        load_state(path)
    assert not marker.exists()


def test_rng_state_round_trips_through_a_safe_file(tmp_path):
    import random

    import numpy as np

    save_state(tmp_path / "s.pt", {"rng": rng_state()})
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_state(tmp_path / "s.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_cuda_rng_state_is_saved_and_restored(tmp_path, monkeypatch):
    """On a GPU, dropout draws from the CUDA generators: a resume restores them too (simulated:
    this machine may have no GPU); a checkpoint from another GPU count leaves them alone."""
    gens = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [g.clone() for g in gens])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    save_state(tmp_path / "s.pt", {"rng": rng_state()})
    state = load_state(tmp_path / "s.pt")["rng"]  # weights_only: CPU byte tensors load
    set_rng_state(state)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], gens))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    set_rng_state(state)
    assert len(restored) == 1


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "tiny"
    shutil.copytree(TINY, d)
    return d


def _tagger(data_dir, out, *extra):
    return invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS, *extra])


def test_second_run_refuses_then_overwrite_replaces(data_dir, tmp_path):
    out = tmp_path / "run"
    ok(_tagger(data_dir, out))
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "finished" and status["task"] == "tagger"
    assert not (out / "checkpoint").exists()  # a finished run drops its optimiser state
    before = (out / "model" / "model.safetensors").read_bytes()
    r = _tagger(data_dir, out, "--hidden", 8)
    assert r.exit_code != 0 and "holds another run (status finished" in r.output and "--overwrite" in r.output
    assert (out / "model" / "model.safetensors").read_bytes() == before  # nothing replaced
    ok(_tagger(data_dir, out, "--hidden", 8, "--overwrite", "--keep_checkpoint"))
    assert json.loads((out / "config.json").read_text())["tagger"]["hidden"] == 8
    assert (out / "checkpoint" / "trainer_state.pt").is_file()


def test_resume_checks_the_checkpoint_belongs_to_this_run(data_dir, tmp_path):
    out = tmp_path / "run"
    ok(_tagger(data_dir, out, "--keep_checkpoint"))
    r = _tagger(data_dir, out, "--resume", "--hidden", 8)
    assert r.exit_code != 0 and "tagger.hidden: 16 -> 8" in r.output
    # more epochs is the one allowed change: the run continues from its checkpoint
    ok(_tagger(data_dir, out, "--resume", "--epochs", 2, "--keep_checkpoint"))
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # a finished run without checkpoint has nothing to resume
    ok(_tagger(data_dir, out, "--resume", "--epochs", 2))
    r = _tagger(data_dir, out, "--resume", "--epochs", 3)
    assert r.exit_code != 0 and "has finished" in r.output


def test_resume_takes_a_run_from_before_a_setting_existed_when_it_is_at_its_default(data_dir, tmp_path):
    out = tmp_path / "run"
    ok(_tagger(data_dir, out, "--keep_checkpoint"))
    cfg = json.loads((out / "config.json").read_text())
    del cfg["trainer"]["ema_decay"]  # as written by a version without the setting
    (out / "config.json").write_text(json.dumps(cfg))
    r = _tagger(data_dir, out, "--resume", "--ema_decay", 0.5)  # not its default: a change
    assert r.exit_code != 0 and "trainer.ema_decay: None -> 0.5" in r.output
    ok(_tagger(data_dir, out, "--resume", "--epochs", 2))


def test_failed_run_is_marked_failed(data_dir, tmp_path):
    out = tmp_path / "run"
    (data_dir / "train.txt").write_text("word\tB-x\tI-y\nother\n", encoding="utf-8")
    r = _tagger(data_dir, out)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(data_dir, tmp_path):
    args = [a if a != "cpu" else "cuda" for a in TAGGER_ARGS]
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", tmp_path / "r", *args])
    assert r.exit_code != 0 and "no such CUDA device" in r.output and "Traceback" not in r.output


def test_iob1_data_with_a_crf_suggests_the_fix_and_repair_tags_trains(data_dir, tmp_path):
    from nlp_distill.data.conll import read_conll, write_conll

    sents = read_conll(data_dir / "train.txt")
    labels = sorted({t for s in sents + read_conll(data_dir / "dev.txt") for t in s.tags})
    (data_dir / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    for s in sents:  # IOB1: an entity after O starts with I-
        s.tags = [("I-" + t[2:]) if t.startswith("B-") and (i == 0 or s.tags[i - 1] == "O") else t
                  for i, t in enumerate(s.tags)]
    write_conll(data_dir / "train.txt", sents)
    r = _tagger(data_dir, tmp_path / "a", "--use_crf")
    assert r.exit_code != 0 and "--repair_tags" in r.output and "IOB1" in r.output and "Traceback" not in r.output
    ok(_tagger(data_dir, tmp_path / "b", "--use_crf", "--repair_tags"))


def _modes(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_model_folder_is_readable_by_others_and_has_a_card(tmp_path, monkeypatch):
    """Under the usual umask the saved model is 0755 / 0644 (mkdtemp alone gives 0700 / 0600), and
    ``model/README.md`` names the task, the labels, the metrics and how to load the model."""
    import os
    from datetime import datetime

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        ok(invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", out, *TAGGER_ARGS]))
    finally:
        os.umask(old)
    modes = _modes(out / "model")
    assert modes and all(m == (0o755 if (out / "model" / k).is_dir() else 0o644) for k, m in modes.items()), modes
    card = (out / "model" / "README.md").read_text()
    labels = json.loads((out / "model" / "config.json").read_text())["labels"]
    assert "nlp-train tagger" in card and "from nlp_distill import pipeline" in card
    assert len(labels) > 1 and all(f"`{x}`" in card for x in labels)
    test_f1 = json.loads((out / "metrics.json").read_text())["test"]["f1"]
    assert f"| test | f1 | {test_f1:.4f} |" in card
    status = json.loads((out / "status.json").read_text())
    assert datetime.fromisoformat(status["finished"]).tzinfo is not None


def test_run_that_failed_before_its_first_epoch_reruns_in_place(tmp_path):
    """A data error stops the run before training: fixing the data and rerunning the same command
    works without --overwrite; a finished run still refuses."""
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    good = (data / "train.txt").read_text()
    (data / "train.txt").write_text("word\tB-XYZ-BAD TAG extra\n\n" + good)
    out = tmp_path / "run"
    args = ["tagger", "--data_dir", data, "--output_dir", out, *TAGGER_ARGS]
    bad = invoke(nlp_train, args)
    assert bad.exit_code != 0 and json.loads((out / "status.json").read_text())["status"] == "failed"
    (data / "train.txt").write_text(good)
    ok(invoke(nlp_train, args))
    assert json.loads((out / "status.json").read_text())["status"] == "finished"
    again = invoke(nlp_train, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
