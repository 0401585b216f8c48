"""The results benchmark's quick mode runs end to end on the tiny fixture, so it cannot rot."""
from __future__ import annotations

import json

from tests.conftest import TINY


def test_run_all_quick_on_tiny_fixture(tmp_path, tiny_encoder_dir):
    from benchmarks import run_all

    out = tmp_path / "bench"
    res = run_all.main(["--output_dir", str(out), "--data_dir", str(TINY), "--teacher_model", str(tiny_encoder_dir),
                        "--quick", "--threads", "1", "--student_epochs", "2", "--teacher_epochs", "1",
                        "--unlabeled_max", "20"])
    groups = res["groups"]
    expected = {"teacher", "gold", "kd_token_kl", "kd_posterior", "kd_posterior+aug1", "kd_posterior+aug1+ens",
                "kd_posterior+aug1+ens_T2", "kd_posterior+aug1+ens+hidden", "kd_posterior+aug1+ens+sotu", "teacher_low25", "low25_gold",
                "low25_kd_posterior+aug1+ens+indomain"}
    assert expected <= set(groups)
    for name, g in groups.items():
        assert 0.0 <= g["test_f1_mean"] <= 1.0, name
        s = g["speed"]
        assert s["sent_per_s_b64"] > 0 and s["latency_p95_ms"] >= s["latency_p50_ms"] > 0 and s["peak_rss_mb"] > 0
    # the low-resource split keeps tags on a quarter of train and turns the rest into unlabeled text
    low = out / "data" / "low25"
    n_train = sum(1 for l in (low / "train.txt").read_text().split("\n\n") if l.strip())
    n_unl = len((low / "unlabeled_indomain.txt").read_text().splitlines())
    assert n_train == 20 and n_unl == 60
    kd = res["kd_speed"]
    assert kd["plain_epoch_s"] > 0 and kd["kd_cached_epoch_s"] > 0 and kd["kd_teacher_every_step_epoch_s"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["groups"]) == set(groups)
    md = (out / "results.md").read_text()
    assert "| teacher |" in md and "kd_cached" in md
    # the teacher group holds both teacher seeds; ensemble rows record the ensemble's own scores
    assert groups["teacher"]["n_seeds"] == 2
    assert groups["kd_posterior+aug1+ens"]["ensemble_teacher"]["members"] == 2
    assert "Teacher ensembles" in md
