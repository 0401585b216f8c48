"""The results benchmark's quick mode runs end to end on the tiny fixture, so it cannot rot."""
from __future__ import annotations

import json
import os
from typing import List

import pytest

from benchmarks.common import agreement, peak_rss_mb, rss_mb, tree_rss_mb
from nlp_distill.data.conll import read_conll
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
    # the rows hold trained models: each beats the same student with random weights, on gold tags and on
    # agreement with its teacher
    trained, teacher = groups["kd_posterior"]["dir"], groups["teacher"]["dir"]
    gold, kd, rnd = (_test_tags(groups["gold"]["dir"]), _test_tags(trained), _test_tags(trained, random_weights=True))
    truth, taught = [s.tags for s in read_conll(TINY / "test.txt")], _test_tags(teacher)
    assert agreement(gold, truth) > agreement(rnd, truth) + 0.2
    assert agreement(kd, taught) > agreement(rnd, taught) + 0.2


def _test_tags(run_dir: str, random_weights: bool = False) -> List[List[str]]:
    """A run's model's tags on the fixture's test split (optionally with its weights redrawn at random)."""
    import torch

    from nlp_distill.models.loader import load_model

    model = load_model(run_dir).eval()
    if random_weights:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.5, 0.5)
    return model.predict([s.tokens for s in read_conll(TINY / "test.txt")], batch_size=64)


def test_onnx_speed_benchmark_runs(tmp_path, tiny_encoder_dir, tiny_labels):
    pytest.importorskip("onnxruntime")
    import torch

    from benchmarks import onnx_speed
    from nlp_distill.config import TaggerConfig, TransformerConfig
    from nlp_distill.data.conll import read_conll
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.models.neural_tagger import NeuralTagger
    from nlp_distill.models.transformer import TransformerTokenClassifier

    train = read_conll(TINY / "train.txt")
    torch.manual_seed(0)
    NeuralTagger.build(TaggerConfig(hidden=8, word_emb_dim=8, use_crf=True), train,
                       LabelVocab.from_sentences(s.tags for s in train)).save_pretrained(tmp_path / "s")
    TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=tiny_labels,
                                               config=TransformerConfig(max_seq_length=32)).save_pretrained(tmp_path / "t")
    res = onnx_speed.run({"student": str(tmp_path / "s"), "teacher": str(tmp_path / "t")}, str(TINY / "test.txt"), 1)
    for r in res.values():
        assert r["torch"] > 0 and r["ort_fp32"] > 0 and r["ort_int8"] > 0
        assert r["ort_fp32_agreement"] == 1.0 and 0.0 <= r["ort_int8_agreement"] <= 1.0
    # a bf16 row where this CPU multiplies bf16 natively (AMX)
    from nlp_distill.precision import bf16_native
    assert all(("torch_bf16" in r) == bf16_native(torch.device("cpu")) for r in res.values())
    # F1 per runtime, no timing: fp32 export scores exactly what torch scores
    f1 = onnx_speed.run({"student": str(tmp_path / "s")}, str(TINY / "test.txt"), 1, str(TINY / "test.txt"), speed=False)
    r = f1["student"]
    assert "torch" not in r and r["ort_fp32_f1"] == r["torch_f1"] and 0.0 <= r["ort_int8_f1"] <= 1.0
    onnx_speed.print_table(f1)


def test_scale_benchmark_runs_on_the_tiny_fixture(tmp_path, tiny_encoder_dir):
    from benchmarks import scale
    from click.testing import CliRunner

    from nlp_distill.distill.transfer_store import TransferStore
    from procedures.cli import nlp_train

    teacher = tmp_path / "teacher"
    r = CliRunner().invoke(nlp_train, ["transformer_token", "--data_dir", str(TINY), "--output_dir", str(teacher),
                                       "--model_name_or_path", str(tiny_encoder_dir), "--num_train_epochs", "1",
                                       "--max_seq_length", "32", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rows = scale.main(["--teacher", str(teacher), "--data_dir", str(TINY), "--sizes", "30,90",
                       "--output_dir", str(tmp_path / "scale")])
    assert set(rows) == {"30", "90"}
    assert rows["90"]["store_mb"] > rows["30"]["store_mb"]  # three times the sentences, more teacher logits
    assert all(r["label_peak_rss_one_process_mb"] <= r["label_peak_rss_mb"] for r in rows.values())
    for n, row in rows.items():
        assert len(TransferStore(tmp_path / "scale" / f"store_{n}")) == int(n)  # repeated input, nothing dropped
        assert row["label_peak_rss_mb"] > 0 and row["student_peak_rss_mb"] > 0 and row["store_mb"] > 0
    lines = (tmp_path / "scale" / "input_90.txt").read_text().splitlines()
    n_src = len([l for l in (TINY / "unlabeled.txt").read_text().splitlines() if l.strip()])
    assert lines[n_src] != lines[0] and sorted(lines[n_src].split()) == sorted(lines[0].split())  # a perturbed copy
    assert json.loads((tmp_path / "scale" / "scale.json").read_text())["sizes"]["90"]["label_sent_per_s"] > 0

    from benchmarks import label_memory  # chunk by chunk memory of the same labeling, in one process

    mem = label_memory.main(["--teacher", str(teacher), "--data_file", str(TINY / "unlabeled.txt"), "--n", "50",
                             "--chunk", "16", "--json", str(tmp_path / "mem.json")])
    assert [r["chunk"] for r in mem] == [1, 2, 3, 4] and mem[-1]["sentences"] == 50
    assert all(0 < r["rss_mb"] <= r["peak_rss_mb"] for r in mem)
    assert [r["peak_rss_mb"] for r in mem] == sorted(r["peak_rss_mb"] for r in mem)  # a peak never falls


def test_predict_profile_reports_both_paths(tmp_path):
    import torch

    from benchmarks import predict_profile
    from nlp_distill.config import TaggerConfig
    from nlp_distill.data.conll import read_conll
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.models.neural_tagger import NeuralTagger

    train = read_conll(TINY / "train.txt")
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=8, word_emb_dim=8, use_crf=True), train,
                               LabelVocab.from_sentences(s.tags for s in train))
    r = predict_profile.profile(model, [s.tokens for s in read_conll(TINY / "test.txt")], repeats=1)
    assert {k for k, _ in predict_profile.COLUMNS} <= set(r) and r["sent_per_s"] > 0
    assert all(r[k] >= 0 for k, _ in predict_profile.COLUMNS)


def test_compact_f1_benchmark_runs(tmp_path):
    import torch

    from benchmarks import compact_f1
    from nlp_distill.config import TaggerConfig
    from nlp_distill.data.conll import read_conll
    from nlp_distill.data.labels import LabelVocab
    from nlp_distill.models.neural_tagger import NeuralTagger

    from tests.model_zoo import _student

    _student(tmp_path / "m", use_crf=True)  # a decisive output layer: compaction must not change its tags
    res = compact_f1.main(["--data_dir", str(TINY), "--model", f"m={tmp_path / 'm'}", "--pq_head", "0",
                           "--pq_head", "5", "--threads", "1", "--json", str(tmp_path / "c.json")])
    r = res["m"]
    assert r["mb_h0"] < r["mb_h5"] < r["mb"]  # int8 head rows cost more than codes, less than fp32
    # the compact copies tag like the original (a broken compaction would not), so score like it too
    assert all(r[f"{s}_agree_h{h}"] >= 0.98 for s in ("dev", "test") for h in (0, 5))
    assert all(abs(r[f"{s}_f1_h{h}"] - r[f"{s}_f1"]) <= 0.05 for s in ("dev", "test") for h in (0, 5))
    assert json.loads((tmp_path / "c.json").read_text())["pq_head"] == [0, 5]


def test_rss_reader_follows_an_allocation_and_its_peak_stays():
    import numpy as np

    before, peak_before = rss_mb(), peak_rss_mb()
    block = np.ones(96 * 2**20 // 8)  # 96 MB, every page written
    grown = rss_mb()
    assert 80 < grown - before < 200, (before, grown)
    assert peak_rss_mb() > max(grown, peak_before) - 1
    total, largest = tree_rss_mb(os.getpid())
    assert total >= largest == pytest.approx(rss_mb(), rel=0.05)
    del block
    assert peak_rss_mb() > grown - 1  # the high-water mark keeps the freed block (the kernel counts pages in batches)
    assert rss_mb(pid=2**22 + 1) == 0.0 and tree_rss_mb(2**22 + 1) == (0.0, 0.0)  # no such process


def test_decoding_benchmark_counts_what_argmax_gets_wrong(model_folders, tmp_path):
    """The tiny random teacher's argmax holds orphan I- tags; the valid decoding has none, and
    the JSON holds both F1s of both splits."""
    import json

    from benchmarks import decoding
    from nlp_distill.data.conll import read_conll
    from nlp_distill.models.loader import load_model
    from nlp_distill.modules.viterbi import best_valid_paths
    from tests.conftest import TINY

    res = decoding.main(["--data_dir", str(TINY), "--model", f"t={model_folders['teacher']}", "--threads", "1",
                         "--json", str(tmp_path / "d.json")])["t"]
    assert res["dev_orphan_I"] > 0 and res["dev_invalid_sentences"] > 0
    assert json.loads((tmp_path / "d.json").read_text())["models"]["t"] == res
    teacher = load_model(model_folders["teacher"])
    dev = read_conll(TINY / "dev.txt")
    valid = [teacher.labels.decode(p) for p in best_valid_paths(teacher.word_logits([s.tokens for s in dev]),
                                                                teacher.labels)]
    assert decoding.orphan_inside_tags(valid) == 0
    assert decoding.orphan_inside_tags([["O", "I-PER", "I-PER", "B-LOC", "I-PER"]]) == 2
