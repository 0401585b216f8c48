"""Every model kind through every door (``pipeline``, ``nlp-inference predict`` / ``compare``,
``nlp-export``, ``nlp-serve``): plain-tag (POS) models answer per word, ``compare`` takes compact
and ONNX folders, ``precision`` picks an export's ONNX file, an export tags text in a process
where torch and transformers cannot be imported, and a damaged folder is one line naming the
file and the fix at every door."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlp_distill.config import ServeConfig, TaggerConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.tokenize import tokenize
from nlp_distill.errors import ConfigError, ModelFolderError
from nlp_distill.models.neural_tagger import NeuralTagger
from procedures.cli import nlp_export, nlp_inference
from procedures.serve import nlp_serve
from tests.conftest import FIXTURES, TINY
from tests.test_cli import invoke, ok

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

POS = FIXTURES / "pos"
TEXTS = ["Every old man never saw London .", "The dogs sent  a house to Paris!", "x"]
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def pos(tmp_path_factory):
    """A random-weight POS student (plain tags), its ONNX export (fp32 + int8)."""
    from nlp_distill.export.onnx import export_tagger

    root = tmp_path_factory.mktemp("pos")
    train = read_conll(POS / "train.txt")
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, precision="fp32",
                                            use_crf=True), train, LabelVocab.from_sentences(s.tags for s in train))
    with torch.no_grad():
        model.proj.weight.normal_(0, 1.0)
    model.save_pretrained(root / "student")
    export_tagger(root / "student", root / "onnx", quantize="int8")
    return {"student": root / "student", "onnx": root / "onnx"}


@pytest.fixture(scope="module")
def int8_export(model_folders, tmp_path_factory):
    """The zoo's CRF student exported with its int8 file."""
    from nlp_distill.export.onnx import export_tagger

    return export_tagger(model_folders["crf"], tmp_path_factory.mktemp("int8") / "onnx", quantize="int8")


def _jsonl(text: str):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _client(app):
    from fastapi.testclient import TestClient

    return TestClient(app)


# ------------------------------------------------------------------ plain tags (POS)
@pytest.mark.parametrize("kind", ["student", "onnx"])
def test_a_pos_model_answers_every_word_in_pipeline_cli_and_server(kind, pos, tmp_path):
    from nlp_distill import pipeline
    from nlp_distill.serving import app_from_config

    ner = pipeline(pos[kind])
    assert ner.output == "words" and all("-" not in label for label in ner.labels)
    got = ner(TEXTS)
    own = ner.model.predict([tokenize(t).tokens for t in TEXTS])
    for text, words, tags in zip(TEXTS, got, own):
        assert len(words) == len(tokenize(text).tokens) > 0
        assert [w["tag"] for w in words] == tags
        for w in words:
            assert set(w) == {"word", "tag", "score", "start", "end"}
            assert text[w["start"] : w["end"]] == w["word"] and 0 < w["score"] <= 1
    alone = ner(TEXTS[0])  # another batch: int8 scales are per batch, so scores agree only closely
    assert [{**w, "score": pytest.approx(w["score"], abs=0.02)} for w in got[0]] == alone and ner("") == []
    assert ner.tag_tokens([["Every", "dog"]])[0]["words"] == [
        {"word": w, "tag": t, "score": s, "start": None, "end": None}
        for w, t, s in zip(["Every", "dog"], *(ner.tag_tokens([["Every", "dog"]])[0][k] for k in ("tags", "scores")))]

    data = tmp_path / "in.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    recs = _jsonl(ok(invoke(nlp_inference, ["predict", "--model_dir", pos[kind], "--data_file", data,
                                            "--output_format", "jsonl"])).stdout)
    assert [r["words"] for r in recs] == got

    app = app_from_config(ServeConfig(model_dir=str(pos[kind])))  # what nlp-serve runs
    with _client(app) as client:
        r = client.post("/predict", json={"texts": TEXTS})
        assert r.status_code == 200 and r.json() == {"words": got}
        assert client.get("/health").json()["output"] == "words"


def test_an_ner_model_keeps_answering_entities(model_folders):
    from nlp_distill import pipeline
    from nlp_distill.serving import create_app

    ner = pipeline(model_folders["crf"])
    assert ner.output == "entities" and "words" not in ner.tag_texts(TEXTS)[0]
    with _client(create_app(ner)) as client:
        assert client.post("/predict", json={"texts": TEXTS}).json() == {"entities": ner(TEXTS)}


# ------------------------------------------------------------------ compare
def test_compare_takes_compact_and_onnx_folders(model_folders):
    from nlp_distill.models.loader import load_model
    from procedures.compare import compare_models

    kinds = ["crf", "compact", "onnx_crf", "teacher", "onnx_teacher"]
    rows = compare_models([str(model_folders[k]) for k in kinds], TINY / "test.txt", batch_size=4)
    by = dict(zip(kinds, rows))
    assert [r["class"] for r in rows] == ["NeuralTagger", "NeuralTagger", "OnnxTagger", "TransformerTokenClassifier",
                                          "OnnxTransformer"]
    assert by["onnx_crf"]["onnx_file"] == "fp32" and by["crf"]["onnx_file"] is None
    assert by["onnx_crf"]["f1"] == by["crf"]["f1"] and by["onnx_teacher"]["f1"] == by["teacher"]["f1"]
    assert by["onnx_crf"]["parameters"] == load_model(model_folders["crf"]).num_parameters()
    assert all(r["size_mb"] > 0 and r["sentences_per_second"] > 0 for r in rows)
    table = ok(invoke(nlp_inference, ["compare", "--data_file", TINY / "test.txt",
                                      *[a for k in kinds for a in ("--model_dir", model_folders[k])]])).stdout
    assert "| OnnxTagger fp32 |" in table and "| OnnxTransformer fp32 |" in table and len(table.strip().splitlines()) == 2 + len(kinds)


# ------------------------------------------------------------------ precision of an export
def test_precision_picks_the_onnx_file_everywhere(int8_export, model_folders, tmp_path):
    from nlp_distill import pipeline
    from nlp_distill.serving import app_from_config

    assert pipeline(int8_export).model.variant == "int8"  # the default is unchanged
    assert pipeline(int8_export, precision="auto").model.variant == "int8"
    fp32 = pipeline(int8_export, precision="fp32")
    assert fp32.model.variant == "fp32" and fp32.model.model_file.name == "model.onnx"
    assert pipeline(int8_export, precision="int8").model.model_file.name == "model.int8.onnx"
    torch_records = pipeline(model_folders["crf"]).tag_texts(TEXTS)
    assert [r["tags"] for r in fp32.tag_texts(TEXTS)] == [r["tags"] for r in torch_records]

    data = tmp_path / "in.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    scores = {}
    for precision in ("fp32", "int8"):
        out = ok(invoke(nlp_inference, ["predict", "--model_dir", int8_export, "--data_file", data,
                                        "--output_format", "jsonl", "--precision", precision])).stdout
        scores[precision] = [x for r in _jsonl(out) for x in r["scores"]]
    assert scores["fp32"] == pytest.approx([x for r in torch_records for x in r["scores"]], abs=1e-4)
    assert scores["int8"] != pytest.approx(scores["fp32"], abs=1e-6)  # the int8 file ran

    for precision in ("fp32", "int8"):
        app = app_from_config(ServeConfig(model_dir=str(int8_export), precision=precision))
        assert app.state.batcher.predict.model.variant == precision
    rows = __import__("procedures.compare", fromlist=["compare_models"]).compare_models(
        [str(int8_export)], TINY / "test.txt", precision="fp32")
    assert rows[0]["onnx_file"] == "fp32"


def test_precision_that_cannot_apply_is_one_clear_error(int8_export, model_folders, tmp_path):
    from nlp_distill import pipeline

    with pytest.raises(ConfigError, match=r"has no int8 model file .*nlp-export onnx --quantize int8"):
        pipeline(model_folders["onnx_crf"], precision="int8")  # exported without --quantize
    with pytest.raises(ConfigError, match="precision int8 runs an ONNX export's int8 file"):
        pipeline(model_folders["crf"], precision="int8")
    with pytest.raises(ConfigError, match="precision bf16 applies to torch models"):
        pipeline(int8_export, precision="bf16")
    data = tmp_path / "in.txt"
    data.write_text("Mary\n", encoding="utf-8")
    r = invoke(nlp_inference, ["predict", "--model_dir", model_folders["onnx_crf"], "--data_file", data,
                               "--precision", "int8"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "has no int8 model file" in r.output
    r = invoke(nlp_serve, ["--model_dir", model_folders["onnx_crf"], "--precision", "int8"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "has no int8 model file" in r.output


# ------------------------------------------------------------------ without torch and transformers
BLOCKED = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(name + " is not installed here")
sys.meta_path.insert(0, _Blocked())
for name in ("torch", "transformers"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(name + " imported")
import json, os
from nlp_distill import pipeline
ner = pipeline(sys.argv[1], precision="fp32")
texts = json.loads(sys.argv[2])
served = None
try:  # the server's app, as uvicorn's factory builds it from the environment
    from fastapi.testclient import TestClient
except ImportError:
    pass
else:
    from nlp_distill.serving import CONFIG_ENV, app_from_env
    os.environ[CONFIG_ENV] = json.dumps({"model_dir": sys.argv[1], "precision": "fp32"})
    with TestClient(app_from_env()) as client:
        served = client.post("/predict", json={"texts": texts}).json()
print(json.dumps({"records": ner.tag_texts(texts), "plain": ner(texts), "served": served,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}))
"""


@pytest.mark.parametrize("export,source", [("onnx_crf", "crf"), ("onnx_teacher", "teacher")])
def test_an_export_tags_text_where_torch_and_transformers_cannot_be_imported(export, source, model_folders):
    from nlp_distill import pipeline

    texts = TEXTS + [" ".join(s.tokens) for s in read_conll(TINY / "test.txt")[:4]]
    p = subprocess.run([sys.executable, "-c", BLOCKED, str(model_folders[export]), json.dumps(texts)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["loaded"] == []
    want = pipeline(model_folders[source]).tag_texts(texts)  # the torch model the export came from
    assert [r["tags"] for r in out["records"]] == [r["tags"] for r in want]
    for got, ref in zip(out["records"], want):
        assert got["scores"] == pytest.approx(ref["scores"], abs=1e-4)
    assert sum(map(len, out["plain"])) > 0  # entities were compared, not only empty lists
    if out["served"] is not None:
        assert out["served"] == {"entities": out["plain"]}


# ------------------------------------------------------------------ damaged folders
def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text(encoding="utf-8"))
    section = changes.pop("section", None)
    (cfg[section] if section else cfg).update(changes)
    path.write_text(json.dumps(cfg), encoding="utf-8")


DAMAGES = {  # name -> (zoo folder, how to damage a copy, the file the message names, words of the fix)
    "weights deleted": ("crf", lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing",
                        "copy the model folder again"),
    "safetensors cut in the header": ("crf", lambda d: _truncate(d / "model.safetensors", 100), "model.safetensors",
                                      "copy the model folder again"),
    "safetensors cut in the data": ("crf", lambda d: _truncate(d / "model.safetensors",
                                                               (d / "model.safetensors").stat().st_size // 2),
                                    "model.safetensors", "copy the model folder again"),
    "teacher safetensors cut": ("teacher", lambda d: _truncate(d / "model.safetensors", 100), "model.safetensors",
                                "copy the model folder again"),
    "corrupt model.onnx": ("onnx_crf", lambda d: _truncate(d / "model.onnx", 300), "model.onnx",
                           "export it again with `nlp-export onnx"),
    "config.json of a newer version": ("crf", lambda d: _edit_json(d / "config.json", library_version="99.0.0",
                                                                   section=None) or _edit_json(
        d / "config.json", section="tagger", rope_scaling=2), "config.json", "pip install -U nlp-distill"),
    "teacher record of a newer version": ("teacher", lambda d: _edit_json(d / "nlp_distill.json",
                                                                          library_version="99.0.0", model_class="X"),
                                          "nlp_distill.json", "pip install -U nlp-distill"),
    "unparsable config.json": ("crf", lambda d: (d / "config.json").write_text('{"model_class": "Neur', encoding="utf-8"),
                               "config.json", "copy the model folder again"),
    "unparsable export config.json": ("onnx_crf", lambda d: (d / "config.json").write_text("{,}", encoding="utf-8"),
                                      "config.json", "copy the model folder again"),
}


@pytest.fixture(scope="module")
def damaged(model_folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for i, (name, (kind, damage, _, _)) in enumerate(DAMAGES.items()):
        folder = root / f"d{i}"
        shutil.copytree(model_folders[kind], folder)
        damage(folder)
        out[name] = folder
    return out


def _doors(folder: Path, kind: str, tmp: Path):
    """(door name, click command, args) of every command that loads ``folder``."""
    data = tmp / "in.txt"
    data.write_text("Mary Jones flew to Oslo\n", encoding="utf-8")
    doors = [("predict", nlp_inference, ["predict", "--model_dir", folder, "--data_file", data]),
             ("compare", nlp_inference, ["compare", "--model_dir", folder, "--data_file", TINY / "test.txt"]),
             ("nlp-serve", nlp_serve, ["--model_dir", folder])]
    if not kind.startswith("onnx"):
        doors.append(("export onnx", nlp_export, ["onnx", "--model_dir", folder, "--output_dir", tmp / "onnx"]))
    if kind == "crf":
        doors.append(("export compact", nlp_export, ["compact", "--model_dir", folder, "--output_dir", tmp / "small"]))
    return doors


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_folder_is_one_line_naming_the_file_and_the_fix_at_every_door(name, damaged, tmp_path):
    from nlp_distill import pipeline

    kind, _, filename, fix = DAMAGES[name]
    folder = damaged[name]
    with pytest.raises(ModelFolderError) as e:
        pipeline(folder)
    assert str(folder / filename) in str(e.value) and fix in str(e.value)
    for door, cli, args in _doors(folder, kind, tmp_path):
        r = invoke(cli, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1, (door, r.output, r.exception)
        assert lines[0].startswith("Error: ") and str(folder / filename) in lines[0] and fix in lines[0], (door, lines)
    assert not (tmp_path / "onnx").exists() and not (tmp_path / "small").exists()


def test_a_newer_version_that_still_loads_is_not_refused(model_folders, tmp_path):
    from nlp_distill import pipeline

    folder = tmp_path / "crf"
    shutil.copytree(model_folders["crf"], folder)
    _edit_json(folder / "config.json", library_version="99.0.0")
    assert pipeline(folder)(TEXTS) == pipeline(model_folders["crf"])(TEXTS)


CLI_BLOCKED = BLOCKED.split("import json, os")[0] + """
from procedures.cli import nlp_inference
from procedures.serve import nlp_serve
door = nlp_serve if sys.argv[1] == "nlp-serve" else nlp_inference
sys.argv = sys.argv[1:]
door()
"""


@pytest.mark.parametrize("command", ["predict", "compare"])
def test_nlp_inference_runs_an_export_where_torch_cannot_be_imported(command, model_folders, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    data = text if command == "predict" else TINY / "test.txt"
    p = subprocess.run([sys.executable, "-c", CLI_BLOCKED, "nlp-inference", command, "--model_dir",
                        str(model_folders["onnx_crf"]), "--data_file", str(data)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    if command == "predict":
        with_torch = invoke(nlp_inference, ["predict", "--model_dir", model_folders["onnx_crf"], "--data_file", data])
        tagged = [l for l in p.stdout.splitlines() if "\t" in l]
        assert tagged == [l for l in with_torch.stdout.splitlines() if "\t" in l] and len(tagged) >= 15
    else:
        assert "OnnxTagger" in p.stdout


@pytest.mark.parametrize("door", [["nlp-inference", "predict", "--data_file", "IN"], ["nlp-serve"]])
def test_a_torch_model_where_torch_is_missing_is_one_line_naming_the_install(door, model_folders, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = [str(text) if a == "IN" else a for a in door] + ["--model_dir", str(model_folders["crf"])]
    p = subprocess.run([sys.executable, "-c", CLI_BLOCKED, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    errors = [l for l in p.stderr.splitlines() if l.startswith("Error")]
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(errors) == 1 and "pip install torch==2.13.0" in errors[0] and "nlp-export onnx" in errors[0]
