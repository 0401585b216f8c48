"""tagger_kd_search keeps the settings the user gave (flags or --config) and searches the rest."""
from __future__ import annotations

import json

import pytest

from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.training.result import TrainResult
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.test_cli import invoke, ok

pytest.importorskip("optuna")


def _search(monkeypatch, tmp_path, *flags):
    import procedures.search as search

    seen = []

    def fake_distil_student(*, kd, tagger, trainer, **kw):
        seen.append({"kd_temp": kd.temperature, "kd_dist_w": kd.dist_w, "kd_student_w": kd.student_w, "lr": trainer.lr,
                     "dropout": tagger.dropout, "hidden": tagger.hidden})
        return TrainResult(None, {"dev": {"f1": len(seen) / 10}}, kw["output_dir"])

    monkeypatch.setattr(search, "distil_student", fake_distil_student)
    monkeypatch.setattr(search, "teacher_labels", lambda paths: load_data_dir(TINY).labels)  # no teacher is read
    r = invoke(nlp_train, ["tagger_kd_search", "--data_dir", TINY, "--output_dir", tmp_path / "s", "--n_trials", 3,
                           "--embedding_file", "none", "--teacher_model_path", tmp_path, *flags])
    return r, seen


def test_given_settings_are_kept_and_the_rest_searched(monkeypatch, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"tagger": {"hidden": 64}}))
    r, seen = _search(monkeypatch, tmp_path, "--kd_temp", 2.5, "--lr", 0.003, "--dropout", 0.1,
                      "--config", tmp_path / "c.json")
    ok(r)
    assert len(seen) == 3
    assert all(t["kd_temp"] == 2.5 and t["lr"] == 0.003 and t["dropout"] == 0.1 and t["hidden"] == 64 for t in seen)
    assert len({t["kd_dist_w"] for t in seen}) == 3 and len({t["kd_student_w"] for t in seen}) == 3  # still searched
    best = json.loads((tmp_path / "s" / "best_config.json").read_text())
    assert best["kd"]["temperature"] == 2.5 and best["trainer"]["lr"] == 0.003 and best["tagger"]["hidden"] == 64


def test_nothing_left_to_search_is_a_one_line_error(monkeypatch, tmp_path):
    r, seen = _search(monkeypatch, tmp_path, "--kd_temp", 2, "--lr", 0.003, "--dropout", 0.1, "--hidden", 50,
                      "--kd_dist_w", 1, "--kd_student_w", 1)
    assert r.exit_code != 0 and "nothing left to search" in r.output and not seen
