"""CLI (`nlp-train`, `nlp-inference`) through click's CliRunner, plus one real subprocess run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nlp_distill.data.conll import read_conll
from nlp_distill.data.dataset_dir import load_data_dir
from procedures.cli import nlp_inference, nlp_train
from tests.option_probe import invoke

TINY = Path(__file__).parent / "fixtures" / "tiny"
# softmax students with random 16-d words: fast (the defaults' CRF and 50k GloVe rows are tested in test_defaults.py)
TAGGER_ARGS = ["--hidden", "16", "--word_embedding_dims", "16", "--embedding_file", "none", "--no_crf",
               "--batch_size", "16", "--epochs", "1", "--device", "cpu", "--seed", "3"]


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli") / "tiny"
    shutil.copytree(TINY, d)
    return d


@pytest.fixture(scope="module")
def teacher_run(data_dir, tiny_encoder_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_teacher") / "run"
    r = invoke(nlp_train, ["transformer_token", "--data_dir", data_dir, "--output_dir", out,
                           "--model_name_or_path", tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32,
                           "--per_device_train_batch_size", 16, "--learning_rate", 1e-3, "--device", "cpu"])
    ok(r)
    assert "dev F1" in r.output and "test F1" in r.output
    return out


@pytest.fixture(scope="module")
def tagger_run(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli_tagger") / "run"
    ok(invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out, "--lr", 0.005, *TAGGER_ARGS]))
    return out


def _conll_lines(path):
    return [l for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]


def test_prepare_wnut16_help():
    r = ok(invoke(nlp_train, ["prepare_wnut16", "--help"]))
    assert "--output_dir" in r.output and "--sotu_sentences" in r.output


def test_transformer_token_run(teacher_run, tiny_encoder_dir):
    assert (teacher_run / "model" / "nlp_distill.json").is_file()
    cfg = json.loads((teacher_run / "config.json").read_text())
    assert cfg["model"]["model_name_or_path"] == str(tiny_encoder_dir)
    assert cfg["model"]["max_seq_length"] == 32 and cfg["model"]["batch_size"] == 16
    assert cfg["trainer"]["epochs"] == 1 and cfg["trainer"]["lr"] == pytest.approx(1e-3)
    m = json.loads((teacher_run / "metrics.json").read_text())
    assert "f1" in m["dev"] and "f1" in m["test"]


def test_tagger_run(tagger_run):
    cfg = json.loads((tagger_run / "config.json").read_text())
    assert cfg["task"] == "tagger"
    assert cfg["tagger"]["hidden"] == 16 and cfg["tagger"]["word_emb_dim"] == 16
    assert cfg["data"]["batch_size"] == 16
    assert cfg["trainer"]["epochs"] == 1 and cfg["trainer"]["seed"] == 3
    assert (tagger_run / "model" / "model.safetensors").is_file()
    m = json.loads((tagger_run / "metrics.json").read_text())
    assert 0.0 <= m["dev"]["f1"] <= 1.0 and m["epochs_run"] == 1


def test_tagger_kd_run(data_dir, teacher_run, tmp_path):
    out = tmp_path / "kd"
    r = ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS,
                              "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32, "--kd_temp", 2.0]))
    assert "dev F1" in r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "tagger_kd"
    assert cfg["kd"]["teacher_model_path"] == [str(teacher_run)]
    assert cfg["kd"]["temperature"] == 2.0 and cfg["kd"]["teacher_max_seq_len"] == 32
    assert (out / "teacher_cache" / "meta.json").is_file()
    meta = json.loads((out / "teacher_cache" / "meta.json").read_text())
    d = load_data_dir(data_dir)
    aug = read_conll(out / "augmented.txt", tag_column=1)  # the default recipe: 5 teacher-labeled copies each
    assert cfg["augment"]["copies"] == 5 and 4 * len(d.train) < len(aug) <= 5 * len(d.train)
    assert meta["num_sentences"] == len(d.train)  # the cache holds gold; the copies are in augment_store
    assert meta["num_words"] == sum(len(s) for s in d.train)
    store = json.loads((out / "augment_store" / "_store.json").read_text())
    assert store["complete"] and store["num_sentences"] == len(aug)
    assert (out / "metrics.json").is_file()


def test_tagger_kd_labeling_bar_has_a_total_and_obeys_no_show_progress(data_dir, teacher_run, tmp_path):
    args = ["--data_dir", data_dir, *TAGGER_ARGS, "--teacher_model_path", teacher_run, "--augment", 2]
    shown = ok(invoke(nlp_train, ["tagger_kd", "--output_dir", tmp_path / "a", *args])).output
    n = json.loads((tmp_path / "a" / "augment_store" / "_store.json").read_text())["num_sentences"]
    # off a terminal (CliRunner) the bar is log lines; the counting pass gave the total
    assert n > 0 and f"labeling: {n}/{n}" in shown and "(100%)" in shown and "\r" not in shown
    quiet = ok(invoke(nlp_train, ["tagger_kd", "--output_dir", tmp_path / "b", *args, "--no_show_progress"])).output
    assert "dev F1" in quiet
    assert not any(bar in quiet for bar in ("labeling:", "teacher logits:", "epoch 1/1")), quiet


def test_tagger_kd_pseudo_run(data_dir, teacher_run, tmp_path):
    unl = tmp_path / "more_text.txt"
    lines = [l for l in (TINY / "unlabeled.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    unl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "kdp"
    ok(invoke(nlp_train, ["tagger_kd_pseudo", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS,
                          "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32,
                          "--unlabeled_filename", unl, "--max_unlabeled", 7, "--pseudo_threshold", 0.3]))
    pseudo = read_conll(out / "pseudo_labeled.txt", tag_column=1)
    assert [s.tokens for s in pseudo] == [l.split() for l in lines[:7]]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pseudo"]["max_unlabeled"] == 7 and cfg["pseudo"]["threshold"] == 0.3
    assert cfg["pseudo"]["unlabeled_filename"] == str(unl)
    meta = json.loads((out / "teacher_cache" / "meta.json").read_text())
    assert meta["num_sentences"] == len(load_data_dir(data_dir).train)
    # the augmented copies and the unlabeled text went through transfer stores in the run folder
    from nlp_distill.distill.transfer_store import TransferStore
    store = TransferStore(out / "transfer_store")
    assert list(store.iter_tokens()) == [l.split() for l in lines[:7]]
    aug = read_conll(out / "augmented.txt", tag_column=1)
    assert list(TransferStore(out / "augment_store").iter_tokens()) == [s.tokens for s in aug]


def test_tagger_kd_pseudo_with_stages_keeps_unlabeled_text_in_memory(data_dir, teacher_run, tmp_path):
    """A staged schedule needs teacher hidden states, which a transfer store does not hold: the
    unlabeled text (and the copies) stay in memory instead of failing on the store."""
    out = tmp_path / "staged"
    ok(invoke(nlp_train, ["tagger_kd_pseudo", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS,
                          "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32, "--epochs", 2,
                          "--kd_stages", "1,1", "--augment", 1, "--max_unlabeled", 5]))
    assert not (out / "transfer_store").exists() and not (out / "augment_store").exists()
    assert len(read_conll(out / "pseudo_labeled.txt", tag_column=1)) == 5


@pytest.mark.parametrize("kind", ["tagger", "transformer_token"])
def test_inference_conll_and_raw_text(kind, tagger_run, teacher_run, data_dir, tmp_path):
    model_dir = tagger_run if kind == "tagger" else teacher_run
    labels = set(load_data_dir(data_dir).labels.labels)
    # CoNLL input (its tags are ignored)
    out = tmp_path / "pred.txt"
    r = ok(invoke(nlp_inference, [kind, "--model_dir", model_dir, "--data_file", data_dir / "test.txt",
                                  "--output_file", out, "--batch_size", 8]))
    gold = read_conll(data_dir / "test.txt")
    pred = read_conll(out, tag_column=1)
    assert f"tagged {len(gold)} sentences" in r.output
    assert [s.tokens for s in pred] == [s.tokens for s in gold]
    assert len(_conll_lines(out)) == sum(len(s) for s in gold)
    assert all(len(l.split("\t")) == 2 and l.split("\t")[1] in labels for l in _conll_lines(out))
    # the written tags are exactly what the library's predict gives
    from nlp_distill.models.loader import load_model

    assert [s.tags for s in pred] == load_model(model_dir).predict([s.tokens for s in gold])
    # raw text input, one sentence per line
    raw_out = tmp_path / "raw_pred.txt"
    ok(invoke(nlp_inference, [kind, "--model_dir", model_dir, "--data_file", data_dir / "unlabeled.txt",
                              "--output_file", raw_out]))
    raw = [l.split() for l in (data_dir / "unlabeled.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    pred_raw = read_conll(raw_out, tag_column=1)
    assert [s.tokens for s in pred_raw] == raw
    assert len(_conll_lines(raw_out)) == sum(len(t) for t in raw)
    assert all(t in labels for s in pred_raw for t in s.tags)


@pytest.mark.parametrize("kind", ["tagger", "transformer_token"])
def test_inference_precision_overrides_the_saved_one(kind, tagger_run, teacher_run, data_dir, tmp_path):
    from nlp_distill.models.loader import load_model

    model_dir = tagger_run if kind == "tagger" else teacher_run
    gold = read_conll(data_dir / "test.txt")
    out = tmp_path / "fp32.txt"
    ok(invoke(nlp_inference, [kind, "--model_dir", model_dir, "--data_file", data_dir / "test.txt",
                              "--output_file", out, "--precision", "fp32"]))
    model = load_model(model_dir)
    model.config.precision = "fp32"
    assert [s.tags for s in read_conll(out, tag_column=1)] == model.predict([s.tokens for s in gold])
    r = invoke(nlp_inference, [kind, "--model_dir", model_dir, "--data_file", data_dir / "test.txt",
                               "--output_file", tmp_path / "x.txt", "--precision", "bf16", "--backend", "onnx"])
    # a torch folder asked for with --backend onnx: one line saying what the folder holds and the fix
    assert r.exit_code != 0 and "not an exported model (ONNX)" in r.output and "nlp-export onnx" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_config_reproduces_and_flags_override(tagger_run, data_dir, tmp_path):
    first = json.loads((tagger_run / "config.json").read_text())
    # same settings from --config alone (no tagger flags): sections equal the original run's
    same = tmp_path / "same"
    ok(invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", same, "--device", "cpu",
                          "--config", tagger_run / "config.json"]))
    again = json.loads((same / "config.json").read_text())
    for sec in ("tagger", "trainer", "data"):
        assert again[sec] == first[sec], sec
    # explicit flags win over the file; everything else still comes from the file
    over = tmp_path / "over"
    ok(invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", over, "--device", "cpu",
                          "--config", tagger_run / "config.json", "--hidden", 8, "--epochs", 2]))
    o = json.loads((over / "config.json").read_text())
    assert o["tagger"]["hidden"] == 8 and o["trainer"]["epochs"] == 2
    assert o["tagger"]["word_emb_dim"] == 16 and o["data"]["batch_size"] == 16
    assert o["trainer"]["seed"] == 3 and o["trainer"]["lr"] == pytest.approx(0.005)
    assert {k: v for k, v in o["tagger"].items() if k != "hidden"} == \
        {k: v for k, v in first["tagger"].items() if k != "hidden"}
    assert json.loads((over / "metrics.json").read_text())["epochs_run"] == 2


def test_config_for_kd_sections(data_dir, teacher_run, tmp_path):
    a = tmp_path / "a"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", a, *TAGGER_ARGS,
                          "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32, "--kd_dist_w", 0.5]))
    b = tmp_path / "b"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", b, "--device", "cpu",
                          "--teacher_model_path", teacher_run, "--config", a / "config.json", "--kd_temp", 3.0]))
    ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
    assert cb["kd"]["dist_w"] == 0.5 and cb["kd"]["teacher_max_seq_len"] == 32
    assert cb["kd"]["temperature"] == 3.0 and ca["kd"]["temperature"] == 1.0
    assert cb["tagger"] == ca["tagger"] and cb["data"] == ca["data"]


@pytest.mark.parametrize("problem", ["missing_tag", "unknown_tag"])
def test_bad_data_file_names_file_and_line(problem, tmp_path):
    d = tmp_path / "bad"
    shutil.copytree(TINY, d)
    if problem == "missing_tag":
        target = d / "train.txt"
        lines = target.read_text(encoding="utf-8").splitlines()
        bad_line = 9  # inside the second sentence
        assert lines[bad_line - 1].strip()
        lines[bad_line - 1] = lines[bad_line - 1].split()[0]
    else:
        target = d / "dev.txt"
        lines = target.read_text(encoding="utf-8").splitlines()
        bad_line = next(i for i, l in enumerate(lines, 1) if l.strip() and l.split()[-1] == "B-PER")
        lines[bad_line - 1] = lines[bad_line - 1].split()[0] + "\tB-FOO"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = invoke(nlp_train, ["tagger", "--data_dir", d, "--output_dir", tmp_path / "out", *TAGGER_ARGS])
    assert r.exit_code != 0
    message = r.output + " " + str(r.exception)
    assert f"{target}:{bad_line}" in message, message


def test_console_script_subprocess(tmp_path):
    exe = shutil.which("nlp-train", path=os.path.dirname(sys.executable)) or shutil.which("nlp-train")
    cmd = [exe] if exe else [sys.executable, "-c", "from procedures.cli import nlp_train; nlp_train()"]
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.run(cmd + ["tagger", "--data_dir", str(TINY), "--output_dir", str(out), *TAGGER_ARGS],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "dev F1" in p.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert "f1" in m["dev"] and "f1" in m["test"]
    assert (out / "run.log").is_file() and (out / "model" / "config.json").is_file()


# ------------------------------------------------------------ options declared once, docs, errors
def test_docs_cli_md_is_generated_from_the_commands():
    from tools.cli_docs import render

    doc = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/cli.md is stale: python -m tools.cli_docs > docs/cli.md"


def test_docs_cli_md_has_a_section_for_every_console_script_and_command():
    import configparser

    import click

    from tools.cli_docs import _load, render

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[1] / "setup.cfg", encoding="utf-8")
    scripts = [line.split("=", 1) for line in cfg["options.entry_points"]["console_scripts"].split("\n") if "=" in line]
    headings = {line for line in render().splitlines() if line.startswith("## ")}
    assert len(scripts) >= 4
    for name, target in ((n.strip(), t.strip()) for n, t in scripts):
        cmd = _load(target)
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(click.Context(cmd)):
                assert f"## {name} {sub}" in headings, (name, sub)
        else:
            assert f"## {name}" in headings, name


def test_every_flag_has_help_and_short_helps_differ():
    import click

    for group in (nlp_train, nlp_inference):
        ctx = click.Context(group)
        shorts = []
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            shorts.append(cmd.get_short_help_str(limit=200))
            for p in cmd.params:
                if isinstance(p, click.Argument):  # a positional is explained in the command's help
                    assert p.human_readable_name in (cmd.help or ""), (name, p.name)
                else:
                    assert isinstance(p, click.Option) and p.help, (name, p.name)
        assert len(set(shorts)) == len(shorts), shorts


@pytest.mark.parametrize("flags, needle", [
    (["--word_dropout", "1.5"], "--word_dropout): must be < 1"),
    (["--batch_size", "0"], "--batch_size): must be >= 1"),
    (["--batch_size", "-3"], "--batch_size): must be >= 1"),
    (["--epochs", "0"], "--epochs): must be >= 1"),
    (["--dropout", "1"], "--dropout): must be < 1"),
    (["--idcnn_dilations", "1,x"], "--idcnn_dilations: expected integers"),
])
def test_out_of_range_flags_are_one_line_errors(flags, needle, data_dir, tmp_path):
    out = tmp_path / "run"
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS, *flags])
    assert r.exit_code != 0
    assert needle in r.output and "Traceback" not in r.output
    assert len([l for l in r.output.splitlines() if l.startswith("Error")]) == 1
    assert not (out / "metrics.json").exists()


def test_kd_temp_zero_and_bad_config_file_name_the_source(data_dir, teacher_run, tagger_run, tmp_path):
    r = invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", tmp_path / "a", *TAGGER_ARGS,
                           "--teacher_model_path", teacher_run, "--kd_temp", 0])
    assert r.exit_code != 0 and "--kd_temp): must be > 0" in r.output
    cfg = json.loads((tagger_run / "config.json").read_text())
    cfg["trainer"]["epochs"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", tmp_path / "b", "--config", bad])
    assert r.exit_code != 0 and str(bad) in r.output and "--epochs): must be >= 1" in r.output
    cfg["trainer"]["epochs"] = 1
    cfg["trainerr"] = {}
    bad.write_text(json.dumps(cfg))
    r = invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", tmp_path / "c", "--config", bad])
    assert r.exit_code != 0 and "unknown section 'trainerr'" in r.output


def test_student_folder_as_teacher_says_what_it_holds(data_dir, tagger_run, tmp_path):
    r = invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", tmp_path / "a", *TAGGER_ARGS,
                           "--teacher_model_path", tagger_run])
    assert r.exit_code != 0 and "holds a NeuralTagger" in r.output and "transformer_token" in r.output
    assert "Traceback" not in r.output


def test_ensemble_and_augment_flags(data_dir, teacher_run, tmp_path):
    """Two teachers (repeated flag, then a comma list), augmented copies labeled by the teacher."""
    out = tmp_path / "ens"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS, "--use_crf",
                          "--teacher_model_path", teacher_run, "--teacher_model_path", teacher_run,
                          "--teacher_max_seq_len", 32, "--augment", 2, "--augment_ops", "token,mention",
                          "--augment_seed", 5]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kd"]["teacher_model_path"] == [str(teacher_run)] * 2
    assert cfg["augment"] == {"copies": 2, "ops": ["token", "mention"], "noise_min_sentences": 1000, "seed": 5}
    m = json.loads((out / "metrics.json").read_text())
    assert m["teacher"]["members"] == 2 and 0.0 <= m["teacher"]["dev"]["f1"] <= 1.0
    aug = read_conll(out / "augmented.txt")
    n_train = len(load_data_dir(data_dir).train)
    assert n_train < len(aug) <= 2 * n_train
    train_tokens = {w for s in load_data_dir(data_dir).train for w in s.tokens}
    assert {w for s in aug for w in s.tokens} <= train_tokens  # token/mention ops draw from train only
    # the same through a comma list, read back by --config
    out2 = tmp_path / "ens2"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", out2, "--device", "cpu",
                          "--config", out / "config.json", "--teacher_model_path", f"{teacher_run},{teacher_run}"]))
    assert json.loads((out2 / "config.json").read_text())["kd"] == cfg["kd"]


def test_hidden_state_transfer_staged_run_and_resume(data_dir, teacher_run, tmp_path):
    out = tmp_path / "hid"
    args = ["tagger_kd", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS, "--teacher_model_path",
            teacher_run, "--teacher_max_seq_len", 32, "--kd_hidden_w", 0.5, "--kd_stages", "1,1", "--keep_checkpoint"]
    ok(invoke(nlp_train, args))
    assert (out / "teacher_cache" / "hidden.f16").is_file()
    # the checkpoint holds the projection too, so a resumed run continues the same training
    ok(invoke(nlp_train, [*args, "--resume", "--epochs", 3]))
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_search_two_trials_writes_a_config_that_config_accepts(data_dir, teacher_run, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "search"
    r = ok(invoke(nlp_train, ["tagger_kd_search", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS,
                              "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32, "--n_trials", 2]))
    assert "best dev F1" in r.output
    trials = [json.loads(l) for l in (out / "trials.jsonl").read_text().splitlines()]
    assert [t["trial"] for t in trials] == [0, 1] and all(0 <= t["dev_f1"] <= 1 for t in trials)
    # --hidden was given (TAGGER_ARGS): kept, not searched
    assert {"kd_dist_w", "kd_student_w", "kd_temp", "lr", "dropout"} == set(trials[0]["params"])
    for t in (out / "trials").iterdir():  # dev only: no trial scored the test set
        assert json.loads((t / "metrics.json").read_text())["test"] is None
    best = json.loads((out / "best_config.json").read_text())
    top = max(trials, key=lambda t: t["dev_f1"])["params"]
    assert best["kd"]["temperature"] == pytest.approx(top["kd_temp"]) and best["tagger"]["hidden"] == 16
    again = tmp_path / "again"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", again, "--device", "cpu",
                          "--config", out / "best_config.json"]))
    assert json.loads((again / "config.json").read_text())["kd"]["dist_w"] == pytest.approx(top["kd_dist_w"])


@pytest.mark.parametrize("kind", ["tagger", "transformer_token"])
def test_inference_with_the_wrong_model_kind_says_what_the_folder_holds(kind, tagger_run, teacher_run, data_dir,
                                                                      tmp_path):
    wrong = teacher_run if kind == "tagger" else tagger_run
    r = invoke(nlp_inference, [kind, "--model_dir", wrong, "--data_file", data_dir / "test.txt",
                               "--output_file", tmp_path / "o.conll"])
    holds = "TransformerTokenClassifier" if kind == "tagger" else "NeuralTagger"
    assert r.exit_code != 0 and f"holds a {holds}" in r.output and "nlp-train" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.conll").exists()


def test_compare_table(tagger_run, teacher_run, data_dir):
    r = ok(invoke(nlp_inference, ["compare", "--model_dir", teacher_run, "--model_dir", tagger_run,
                                  "--data_file", data_dir / "test.txt", "--batch_size", 8]))
    rows = [l for l in r.output.splitlines() if l.startswith("| ") and "TransformerTokenClassifier" in l or "NeuralTagger" in l]
    assert len(rows) == 2 and "| 1.0 |" in rows[0]  # the first model is the speed reference


def test_input_format_forces_the_reading(tagger_run, tmp_path):
    """A CoNLL-looking file read as raw text keeps every whitespace-separated item as a word."""
    f = tmp_path / "in.txt"
    f.write_text("Mary\tB-PER\nJones\tI-PER\n\nhi\tO\n", encoding="utf-8")
    auto, text = tmp_path / "auto.conll", tmp_path / "text.conll"
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tagger_run, "--data_file", f, "--output_file", auto]))
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tagger_run, "--data_file", f, "--output_file", text,
                              "--input_format", "text"]))
    assert [s.tokens for s in read_conll(auto, tag_column=1)] == [["Mary", "Jones"], ["hi"]]
    assert [s.tokens for s in read_conll(text, tag_column=1)] == [["Mary", "B-PER"], ["Jones", "I-PER"], ["hi", "O"]]


def test_report_to_tensorboard_splits_the_loss(data_dir, teacher_run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", out, *TAGGER_ARGS, "--epochs", 2,
                          "--teacher_model_path", teacher_run, "--teacher_max_seq_len", 32, "--report_to", "tensorboard"]))
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    for rec in log:  # the parts add up to the loss (both per item)
        assert rec["train_kd"] > 0 and rec["train_gold"] > 0
        assert rec["train_kd"] + rec["train_gold"] == pytest.approx(rec["train_loss"], rel=1e-4)
    ev = EventAccumulator(str(out / "tensorboard"))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    assert {"step/kd", "step/gold", "step/loss", "step/lr", "dev/f1", "train/loss", "train/kd"} <= tags
    assert [e.step for e in ev.Scalars("dev/f1")] == [1, 2]


def test_latin1_data_is_one_line_error_and_encoding_reads_it(tagger_run, tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("Zoë went to Bogotá\n".encode("latin-1"))
    out = tmp_path / "o.conll"
    r = invoke(nlp_inference, ["tagger", "--model_dir", tagger_run, "--data_file", f, "--output_file", out])
    assert r.exit_code != 0 and "latin1.txt:1: byte 0xeb at column 3 is not utf-8" in r.output
    assert "Traceback" not in r.output and not out.exists() and not list(tmp_path.glob("*.tmp"))
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tagger_run, "--data_file", f, "--output_file", out,
                              "--encoding", "latin-1"]))
    assert [s.tokens for s in read_conll(out, tag_column=1)] == [["Zoë", "went", "to", "Bogotá"]]


def test_debug_flag_shows_the_traceback(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NLP_DISTILL_DEBUG", "")  # restored (unset) after the test: --debug sets it
    args = ["tagger", "--data_dir", data_dir, "--output_dir", tmp_path / "r", *TAGGER_ARGS, "--epochs", 0]
    r = invoke(nlp_train, args)
    assert r.exit_code != 0 and r.output.startswith("Error:") and "--epochs): must be >= 1" in r.output
    r = invoke(nlp_train, ["--debug", *args])
    from nlp_distill.errors import ConfigError

    assert isinstance(r.exception, ConfigError)  # raised through, so the traceback shows


def test_preset_sets_the_student_size_and_flags_override_it(data_dir, tmp_path):
    from nlp_distill.models.neural_tagger import NeuralTagger

    out = tmp_path / "p"
    ok(invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out, "--device", "cpu", "--epochs", 1,
                          "--preset", "small", "--hidden", 40, "--embedding_file", "none"]))
    t = json.loads((out / "config.json").read_text())["tagger"]
    assert (t["preset"], t["hidden"], t["char_hidden"], t["word_emb_dim"]) == ("small", 40, 30, 64)
    assert NeuralTagger.from_pretrained(out / "model").config.char_hidden == 30
    # a --config file's values sit above the preset, flags above both
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"tagger": {"preset": "tiny", "char_hidden": 12}}))
    out2 = tmp_path / "q"
    ok(invoke(nlp_train, ["tagger", "--data_dir", data_dir, "--output_dir", out2, "--device", "cpu", "--epochs", 1,
                          "--config", cfg, "--word_embedding_dims", 20, "--embedding_file", "none"]))
    t2 = json.loads((out2 / "config.json").read_text())["tagger"]
    assert (t2["preset"], t2["hidden"], t2["char_hidden"], t2["word_emb_dim"]) == ("tiny", 64, 12, 20)


def test_out_of_fold_teachers_label_each_train_sentence_with_the_teacher_that_never_saw_it(
        data_dir, tiny_encoder_dir, teacher_run, tmp_path):
    from nlp_distill.distill.ensemble import log_softmax
    from nlp_distill.distill.teacher_cache import TeacherLogitsCache
    from nlp_distill.models.loader import load_model
    folds = []
    for k in (1, 0):
        out = tmp_path / f"fold{k}"
        r = ok(invoke(nlp_train, ["transformer_token", "--data_dir", data_dir, "--output_dir", out, "--holdout_fold",
                                  f"2,{k}", "--model_name_or_path", tiny_encoder_dir, "--num_train_epochs", 1,
                                  "--max_seq_length", 32, "--learning_rate", 1e-3, "--device", "cpu", "--seed", 4]))
        n_train = len(load_data_dir(data_dir).train)
        kept = n_train - len(range(k, n_train, 2))
        assert f"fold {k} of 2 held out: training on {kept} of {n_train}" in (out / "run.log").read_text()
        folds.append(out)
    student = tmp_path / "kd"
    r = ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", student, *TAGGER_ARGS,
                              "--teacher_model_path", f"{folds[0]},{folds[1]}", "--augment", 1]))
    assert "out-of-fold teachers (2 folds)" in (student / "run.log").read_text()
    cache = TeacherLogitsCache.open(student / "teacher_cache")
    train = load_data_dir(data_dir).train
    members = {k: load_model(str(f / "model")) for k, f in zip((1, 0), folds)}
    for i in range(4):  # train sentence i: only the teacher of fold i % 2 (it never saw it)
        want = log_softmax(members[i % 2].word_logits([train[i].tokens])[0])
        np.testing.assert_allclose(np.asarray(cache.sentence(i), np.float32), want, atol=2e-2)
    # a fold teacher beside a plain one is refused with a message naming the choice
    r = invoke(nlp_train, ["tagger_kd", "--data_dir", data_dir, "--output_dir", tmp_path / "mixed", *TAGGER_ARGS,
                           "--teacher_model_path", f"{folds[0]},{teacher_run}"])
    assert r.exit_code != 0 and "give all K fold teachers" in r.output and "Traceback" not in r.output
