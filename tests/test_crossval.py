"""Cross-validation: folds, pooled scores, paired intervals and the resumable campaign."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlp_distill.data.conll import read_conll
from nlp_distill.errors import ConfigError
from nlp_distill.evaluation.crossval import PREDICTIONS, CrossvalSpec, Recipe, cross_validate
from nlp_distill.evaluation.folds import fold_indices, parse_folds, read_pool, write_fold
from nlp_distill.evaluation.paired import (paired_difference, paired_ratio, pooled_f1, resample_weights,
                                           sentence_counts)
from nlp_distill.metrics import tagging_metrics
from procedures.cli import nlp_train
from procedures.crossval import CommandRunner
from tests.conftest import TINY
from tests.option_probe import invoke

STUDENT = "--hidden 16 --word_embedding_dims 16 --embedding_file none --no_crf --batch_size 16 --epochs 1 --device cpu"


# ---------------------------------------------------------------- folds

def test_folds_partition_the_sentences_and_fold_9_of_10_is_the_standard_split():
    n = 95
    seen = []
    for k in range(10):
        p = fold_indices(n, 10, k)
        assert sorted(p["train"] + p["dev"] + p["test"]) == list(range(n))
        assert not set(p["test"]) & (set(p["train"]) | set(p["dev"]))
        seen += p["test"]
    assert sorted(seen) == list(range(n))  # every sentence is tested exactly once
    std = fold_indices(n, 10, 9)
    assert std["test"] == [i for i in range(n) if i % 10 == 9]
    assert std["dev"] == [i for i in range(n) if i % 10 == 8]
    assert fold_indices(n, 10, 0)["dev"] == [i for i in range(n) if i % 10 == 9]  # fold 0 picks on fold 9


def test_a_written_fold_never_holds_its_test_sentences_in_train_or_dev(tmp_path):
    from nlp_distill.data.conll import Sentence, write_conll

    data = tmp_path / "data"  # each sentence's first token names its pool position
    data.mkdir()
    sents = [Sentence([f"s{i}", "Paris"], ["O", "B-LOC"]) for i in range(31)]
    write_conll(data / "train.txt", sents[:20])
    write_conll(data / "test.txt", sents[20:])
    pool = read_pool(data)
    for k in range(4):
        folder = write_fold(pool, 4, k, tmp_path / f"fold-{k}")
        ids = {f: [int(s.tokens[0][1:]) for s in read_conll(folder / f"{f}.txt")] for f in ("train", "dev", "test")}
        assert ids["test"] == [i for i in range(31) if i % 4 == k]
        assert ids["dev"] == [i for i in range(31) if i % 4 == (k - 1) % 4]
        assert not set(ids["test"]) & set(ids["train"] + ids["dev"])
        assert sorted(ids["train"] + ids["dev"] + ids["test"]) == list(range(31))
        assert (folder / "labels.txt").read_text().split() == ["O", "B-LOC"]
    folder = write_fold(read_pool(TINY), 3, 1, tmp_path / "tiny-1")
    assert (folder / "unlabeled.txt").is_file()
    with pytest.raises(ConfigError, match="other data or another --folds"):
        write_fold(read_pool(TINY), 4, 1, folder)


def test_parse_folds():
    assert parse_folds("", 4) == [0, 1, 2, 3]
    assert parse_folds("0-2,5", 10) == [0, 1, 2, 5]
    with pytest.raises(ConfigError, match="fold 10 does not exist"):
        parse_folds("9,10", 10)
    with pytest.raises(ConfigError, match="expected fold numbers"):
        parse_folds("a", 10)


# ---------------------------------------------------------------- scores

def _random_tags(rng, n, scheme="BIO"):
    types = ["PER", "LOC", "ORG"]
    out = []
    for _ in range(n):
        tags = []
        for _ in range(rng.integers(1, 12)):
            r = rng.random()
            t = types[rng.integers(3)]
            if scheme == "plain":
                tags.append(["NN", "VB", "DT", "JJ"][rng.integers(4)])
            elif r < 0.55:
                tags.append("O")
            else:
                tags.append(("B-" if r < 0.8 else "I-") + t)  # orphan I- tags included
        out.append(tags)
    return out


@pytest.mark.parametrize("scheme", ["BIO", "plain"])
def test_pooled_counts_equal_scoring_the_concatenated_predictions(scheme):
    rng = np.random.default_rng(0)
    gold, pred = _random_tags(rng, 300, scheme), None
    pred = [[t if rng.random() < 0.7 else g2 for t, g2 in zip(g, _random_tags(rng, 1, scheme)[0] * 12)] for g in gold]
    folds = [slice(0, 100), slice(100, 220), slice(220, 300)]
    rows = np.concatenate([sentence_counts(gold[f], pred[f]) for f in folds])
    assert pooled_f1(rows) == pytest.approx(tagging_metrics(gold, pred)["f1"], abs=1e-12)
    for f in folds:  # and each fold alone
        assert pooled_f1(sentence_counts(gold[f], pred[f])) == pytest.approx(tagging_metrics(gold[f], pred[f])["f1"])


def _planted(n=2000, hit_a=0.6, hit_b=0.5, seed=0):
    """One gold entity per sentence; each system predicts it on a random share of the sentences and
    nothing else: F1 = 2h / (1 + h), so the planted difference is known."""
    rng = np.random.default_rng(seed)
    gold = [["B-PER", "I-PER", "O"] for _ in range(n)]
    a = [g if rng.random() < hit_a else ["O"] * 3 for g in gold]
    b = [g if rng.random() < hit_b else ["O"] * 3 for g in gold]
    return sentence_counts(gold, a), sentence_counts(gold, b)


def test_the_paired_interval_covers_a_planted_difference():
    a, b = _planted()
    planted = 2 * 0.6 / 1.6 - 2 * 0.5 / 1.5
    d = paired_difference(a, b, resample_weights(len(a), 1000, seed=1))
    assert d["ci95"][0] < planted < d["ci95"][1]
    assert d["ci95"][0] > 0 and d["p_a_better"] > 0.99  # 8 points on 2000 sentences are seen
    same = paired_difference(a, a, resample_weights(len(a), 200))
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0]
    r = paired_ratio(b, a, resample_weights(len(a), 1000, seed=2))
    assert r["ci95"][0] < (2 * 0.5 / 1.5) / (2 * 0.6 / 1.6) < r["ci95"][1]


def test_the_interval_of_two_equal_systems_straddles_zero():
    a, b = _planted(hit_a=0.55, hit_b=0.55, seed=3)
    d = paired_difference(a, b, resample_weights(len(a), 1000, seed=4))
    assert d["ci95"][0] < 0 < d["ci95"][1]


def test_paired_scores_refuse_different_sentences():
    a, _ = _planted(n=10)
    with pytest.raises(ValueError, match="same sentences"):
        paired_difference(a, a[:5], resample_weights(10, 10))


# ---------------------------------------------------------------- recipes

def test_recipe_parse():
    r = Recipe.parse("kd_feat=tagger_kd --teacher_features teacher --kd_temp=2")
    assert r.name == "kd_feat" and r.argv == ("tagger_kd", "--teacher_features", "teacher", "--kd_temp=2")
    assert Recipe.parse("transformer_token --lr=1e-4", name="teacher").argv[1] == "--lr=1e-4"
    with pytest.raises(ConfigError, match="give it a name"):
        Recipe.parse("tagger --epochs 3")
    with pytest.raises(ConfigError, match="no command"):
        Recipe.parse("x=")
    with pytest.raises(ConfigError, match="must differ"):
        CrossvalSpec("d", "o", (Recipe.parse("a=tagger"), Recipe.parse("a=tagger_kd")))
    with pytest.raises(ConfigError, match="names the fold teachers"):
        CrossvalSpec("d", "o", (Recipe.parse("teacher=tagger"),))


@pytest.mark.parametrize("recipe, message", [
    ("x=tagger_kdd", "not a training command"),
    ("x=tagger --epochs_typo 3", "No such option"),
    ("x=tagger --data_dir elsewhere", "set by crossval"),
    ("x=tagger_kd_search", "not a training command"),
])
def test_a_bad_recipe_fails_before_any_training(tmp_path, recipe, message):
    r = invoke(nlp_train, ["crossval", "--data_dir", TINY, "--output_dir", tmp_path / "o", "--folds", 3,
                           "--recipe", "gold=tagger " + STUDENT, "--recipe", recipe, "--in_process"])
    assert r.exit_code != 0 and message in r.output, r.output
    assert not (tmp_path / "o" / "runs").exists()


# ---------------------------------------------------------------- the campaign

class CountingRunner(CommandRunner):
    def __init__(self):
        super().__init__(nlp_train, in_process=True)
        self.trained = []

    def train(self, argv, data_dir, output_dir, seed, teacher_dir, log_file):
        self.trained.append((argv[0], Path(output_dir).parent.name, seed, teacher_dir))
        super().train(argv, data_dir, output_dir, seed, teacher_dir, log_file)


def _spec(out, encoder, **kw):
    teacher = f"transformer_token --model_name_or_path {encoder} --epochs 1 --max_seq_length 32 --lr 1e-3 --device cpu"
    return CrossvalSpec(str(TINY), str(out), (Recipe.parse("gold=tagger " + STUDENT + " --lr 0.005"),
                                                Recipe.parse("kd=tagger_kd --augment 1 " + STUDENT)),
                        teacher=Recipe.parse(teacher, name="teacher"), folds=3, run_folds=(0, 1), seeds=(1, 2),
                        bootstrap=200, **kw)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, tiny_encoder_dir):
    out = tmp_path_factory.mktemp("crossval") / "o"
    runner = CountingRunner()
    res = cross_validate(_spec(out, tiny_encoder_dir), runner)
    return out, runner, res


def test_the_campaign_trains_each_fold_teacher_once_then_every_recipe_and_seed(campaign):
    out, runner, res = campaign
    assert [t[0] for t in runner.trained] == ["transformer_token"] + ["tagger"] * 2 + ["tagger_kd"] * 2 + \
                                             ["transformer_token"] + ["tagger"] * 2 + ["tagger_kd"] * 2
    for cmd, fold, seed, teacher in runner.trained:
        assert (teacher is not None) == (cmd == "tagger_kd")
        if teacher is not None:
            assert teacher.name == fold  # each fold's students learn from that fold's teacher
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    assert (out / "results.md").read_text().startswith("Cross-validation: folds 0, 1 complete of 3")


def test_results_pool_the_folds_as_scoring_their_concatenated_predictions(campaign):
    out, _, res = campaign
    pool = read_pool(TINY)
    assert res["folds_complete"] == [0, 1] and res["seeds"] == [1, 2]
    tests = {k: [pool.sentences[i] for i in fold_indices(len(pool.sentences), 3, k)["test"]] for k in (0, 1)}
    assert res["n_sentences"] == sum(len(v) for v in tests.values())
    for name in ("gold", "kd"):
        gold, pred = [], []
        for seed in (1, 2):
            for k in (0, 1):
                gold += [s.tags for s in tests[k]]
                pred += json.loads((out / "runs" / name / f"fold-{k}" / f"seed-{seed}" / PREDICTIONS).read_text())["tags"]
        assert res["recipes"][name]["pooled_f1"] == pytest.approx(tagging_metrics(gold, pred)["f1"])
        assert set(res["recipes"][name]["per_fold"]) == {"0", "1"}
        assert set(res["recipes"][name]["per_seed"]) == {"1", "2"}
        assert "teacher_ratio" in res["recipes"][name]
    teacher_pred = []
    for k in (0, 1):
        teacher_pred += json.loads((Path(res["teacher"]["folder"]) / f"fold-{k}" / PREDICTIONS).read_text())["tags"]
    assert res["teacher"]["pooled_f1"] == pytest.approx(
        tagging_metrics([s.tags for k in (0, 1) for s in tests[k]], teacher_pred)["f1"])
    pairs = [(d["a"], d["b"]) for d in res["differences"]]
    assert pairs == [("kd", "gold"), ("teacher", "gold"), ("teacher", "kd")]
    for d in res["differences"]:
        assert d["ci95"][0] <= d["diff"] + 1e-9 or d["ci95"][1] >= d["diff"] - 1e-9
    for key in ("machine", "versions", "command", "folds", "run_folds"):
        assert key in res


def test_a_rerun_skips_finished_work_and_redoes_only_what_is_missing(campaign, tiny_encoder_dir):
    out, _, res = campaign
    import shutil

    shutil.rmtree(out / "runs" / "kd" / "fold-1" / "seed-2")  # a run lost (killed before it finished)
    (out / "runs" / "gold" / "fold-0" / "seed-1" / PREDICTIONS).unlink()  # finished, not yet scored
    runner = CountingRunner()
    again = cross_validate(_spec(out, tiny_encoder_dir), runner)
    assert [(c, f, s) for c, f, s, _ in runner.trained] == [("tagger_kd", "fold-1", 2)]
    assert again["recipes"]["gold"]["pooled_f1"] == res["recipes"]["gold"]["pooled_f1"]
    # a new recipe on the same folds finds the fold teachers
    runner = CountingRunner()
    spec = _spec(out, tiny_encoder_dir)
    spec = CrossvalSpec(**{**spec.__dict__, "recipes": spec.recipes + (Recipe.parse("kd2=tagger_kd --augment 0 " + STUDENT),),
                           "seeds": (1,), "run_folds": (0,)})
    more = cross_validate(spec, runner)
    assert [c for c, *_ in runner.trained] == ["tagger_kd"]
    assert more["folds_complete"] == [0] and "kd2" in more["recipes"]


def test_a_campaign_folder_refuses_other_folds_or_a_renamed_command(campaign, tiny_encoder_dir):
    out, _, _ = campaign
    spec = _spec(out, tiny_encoder_dir)
    with pytest.raises(ConfigError, match="another --folds"):
        cross_validate(CrossvalSpec(**{**spec.__dict__, "folds": 4}), CountingRunner())
    changed = (Recipe.parse("gold=tagger --epochs 2 " + STUDENT),) + spec.recipes[1:]
    with pytest.raises(ConfigError, match="give the new command another name"):
        cross_validate(CrossvalSpec(**{**spec.__dict__, "recipes": changed}), CountingRunner())


def test_a_distilling_recipe_without_a_teacher_command_is_refused(tmp_path, tiny_encoder_dir):
    spec = _spec(tmp_path / "o", tiny_encoder_dir)
    with pytest.raises(ConfigError, match="distil from a teacher"):
        cross_validate(CrossvalSpec(**{**spec.__dict__, "teacher": None}), CountingRunner())


def test_crossval_runs_as_a_real_subprocess(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "procedures.cli", "crossval", "--data_dir", str(TINY), "--output_dir", str(out),
           "--folds", "3", "--run_folds", "2", "--recipe", "gold=tagger " + STUDENT, "--bootstrap", "100"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["folds_complete"] == [2] and "teacher" not in res and res["recipes"]["gold"]["per_fold"].keys() == {"2"}
    assert "| gold |" in r.stdout
    assert "nlp-train crossval --data_dir" in res["command"]


def test_a_shared_teacher_cache_serves_a_second_campaign(tmp_path, tiny_encoder_dir):
    cache = tmp_path / "teachers"
    one = _spec(tmp_path / "a", tiny_encoder_dir, teacher_cache_dir=str(cache))
    one = CrossvalSpec(**{**one.__dict__, "recipes": one.recipes[1:], "run_folds": (0,), "seeds": (1,)})
    first = CountingRunner()
    cross_validate(one, first)
    second = CountingRunner()
    res = cross_validate(CrossvalSpec(**{**one.__dict__, "output_dir": str(tmp_path / "b")}), second)
    assert [c for c, *_ in first.trained] == ["transformer_token", "tagger_kd"]
    assert [c for c, *_ in second.trained] == ["tagger_kd"]  # the fold teacher came from the cache
    assert Path(res["teacher"]["folder"]).parent == cache and not (tmp_path / "b" / "teachers").exists()
