"""``nlp-inference predict`` (and the per-kind commands): raw text or CoNLL in, from a file or
stdin; CoNLL or JSON lines out, to a file or stdout; every model kind through one command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from nlp_distill.data.conll import read_conll
from nlp_distill.data.tokenize import tokenize
from procedures.cli import nlp_inference
from tests.conftest import TINY
from tests.test_cli import invoke, ok

TEXTS = ["Zoë  Martín works for Red   Cross in New York .", "", "@user loves #NYC   http://x.co !!",
         "Mary Jones said Red Cross will open an office in Oslo."]
RAW = "\n".join(TEXTS) + "\n"


def _jsonl(output: str):
    return [json.loads(l) for l in output.splitlines() if l.strip()]


@pytest.mark.parametrize("kind", ["student", "crf", "compact", "teacher", "transformer_student", "onnx_crf",
                                  "onnx_teacher"])
def test_predict_reads_stdin_text_and_writes_jsonl_for_every_kind(kind, model_folders):
    from nlp_distill import pipeline

    if kind not in model_folders:
        pytest.skip("needs onnx and onnxruntime")
    r = ok(CliRunner_invoke(["predict", "--model_dir", model_folders[kind], "--data_file", "-",
                             "--output_format", "jsonl", "--batch_size", 2], RAW))
    recs = _jsonl(r.stdout)
    texts = [t for t in TEXTS if t]
    assert [x["text"] for x in recs] == texts and [x["line"] for x in recs] == [1, 3, 4]
    want = pipeline(model_folders[kind]).tag_texts(texts)
    for x, w, text in zip(recs, want, texts):
        assert x["tokens"] == tokenize(text).tokens and x["tags"] == w["tags"]
        assert x["scores"] == pytest.approx(w["scores"], abs=1e-5)  # batch_size 2 vs 64: other padding
        assert [{**e, "score": pytest.approx(e["score"], abs=1e-5)} for e in w["entities"]] == x["entities"]
        assert all(text[e["start"] : e["end"]] == e["word"] and 0 < e["score"] <= 1 for e in x["entities"])
    assert sum(len(x["entities"]) for x in recs) > 0


def CliRunner_invoke(args, stdin: str):
    """CliRunner with stdin text; stdout and stderr kept apart (the tags go to stdout alone)."""
    from click.testing import CliRunner

    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(nlp_inference, [str(a) for a in args], input=stdin, catch_exceptions=True)


def test_conll_input_is_detected_and_conll_goes_to_stdout(model_folders, tmp_path):
    r = ok(CliRunner_invoke(["predict", "--model_dir", model_folders["crf"], "--data_file", TINY / "test.txt"], ""))
    gold = read_conll(TINY / "test.txt")
    out = tmp_path / "o.conll"
    out.write_text(r.stdout, encoding="utf-8")
    pred = read_conll(out, tag_column=1)
    assert [s.tokens for s in pred] == [s.tokens for s in gold]
    from nlp_distill.models.loader import load_model

    assert [s.tags for s in pred] == load_model(model_folders["crf"]).predict([s.tokens for s in gold])
    assert "tagged" in r.stderr and "tagged" not in r.stdout
    # jsonl of CoNLL input: no text, entities without character offsets, token indices instead
    recs = _jsonl(ok(CliRunner_invoke(["predict", "--model_dir", model_folders["crf"], "--data_file", TINY / "test.txt",
                                       "--output_format", "jsonl"], "")).stdout)
    assert len(recs) == len(gold) and "text" not in recs[0]
    ents = [e for x in recs for e in x["entities"]]
    assert ents and all(e["start"] is None and e["token_end"] > e["token_start"] for e in ents)


def test_input_format_text_forces_tokenizing_a_conll_looking_file(model_folders, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("Mary\tB-PER\nJones\tI-PER\n\nhi\tO\n", encoding="utf-8")
    auto = _jsonl(ok(CliRunner_invoke(["predict", "--model_dir", model_folders["student"], "--data_file", f,
                                       "--output_format", "jsonl"], "")).stdout)
    text = _jsonl(ok(CliRunner_invoke(["predict", "--model_dir", model_folders["student"], "--data_file", f,
                                       "--output_format", "jsonl", "--input_format", "text"], "")).stdout)
    assert [x["tokens"] for x in auto] == [["Mary", "Jones"], ["hi"]]
    assert [x["tokens"] for x in text] == [["Mary", "B-PER"], ["Jones", "I-PER"], ["hi", "O"]]


def test_old_per_kind_commands_read_stdin_and_refuse_the_other_kind(model_folders, tmp_path):
    out = tmp_path / "o.conll"
    r = ok(CliRunner_invoke(["tagger", "--model_dir", model_folders["compact"], "--data_file", "-",
                             "--output_file", out], RAW))
    assert "tagged 3 sentences" in r.stdout
    assert [s.tokens for s in read_conll(out, tag_column=1)] == [tokenize(t).tokens for t in TEXTS if t]
    r = CliRunner_invoke(["tagger", "--model_dir", model_folders["teacher"], "--data_file", "-", "--output_file", out],
                         RAW)
    assert r.exit_code != 0 and "holds a TransformerTokenClassifier, not a NeuralTagger" in r.output + r.stderr
    if "onnx_teacher" in model_folders:
        r = ok(CliRunner_invoke(["transformer_token", "--model_dir", model_folders["onnx_teacher"], "--data_file", "-",
                                 "--output_format", "jsonl"], RAW))
        assert len(_jsonl(r.stdout)) == 3


def test_bad_stdin_names_stdin_and_line(model_folders, tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "o.jsonl"
    r = CliRunner().invoke(nlp_inference, ["predict", "--model_dir", str(model_folders["student"]), "--data_file", "-",
                                           "--output_file", str(out)], input="fine\nZo\xeb\n".encode("latin-1"))
    assert r.exit_code != 0 and "<stdin>:2: byte 0xeb" in r.output and not out.exists()


def test_real_subprocess_reads_a_pipe_and_prints_json(model_folders):
    exe = shutil.which("nlp-inference", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the console script is not installed in this environment")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = (f"echo 'Zoë  Martín works for Red Cross in New York' | '{exe}' predict --model_dir '{model_folders['crf']}' "
           "--data_file - --output_format jsonl")
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    (rec,) = [json.loads(l) for l in p.stdout.splitlines()]
    assert rec["text"] == "Zoë  Martín works for Red Cross in New York"
    assert all(rec["text"][e["start"] : e["end"]] == e["word"] for e in rec["entities"]) and rec["entities"]
