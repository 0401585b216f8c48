"""ONNX export of students: fp32 parity with torch, int8 agreement, a torch-free runtime, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from nlp_distill.config import TaggerConfig  # noqa: E402
from nlp_distill.data.conll import Sentence, read_conll  # noqa: E402
from nlp_distill.data.labels import LabelVocab  # noqa: E402
from nlp_distill.export.onnx import ExportableTagger, export_tagger  # noqa: E402
from nlp_distill.export.runtime import OnnxTagger  # noqa: E402
from nlp_distill.models.neural_tagger import NeuralTagger  # noqa: E402
from procedures.cli import nlp_export, nlp_inference  # noqa: E402
from tests.conftest import TINY  # noqa: E402
from tests.test_cli import invoke, ok  # noqa: E402

TRAIN = read_conll(TINY / "train.txt")
TEST = read_conll(TINY / "test.txt")
# unseen words, a long sentence (no length limit), a one-word sentence and an empty one
EXTRA = [["Zoë", "flew", "to", "Reykjavík", "yesterday"], (TRAIN[0].tokens * 40)[:300], ["x"], []]


def _model(tmp_path, **cfg) -> NeuralTagger:
    torch.manual_seed(0)
    model = NeuralTagger.build(TaggerConfig(hidden=12, word_emb_dim=10, char_emb_dim=6, char_hidden=8, precision="fp32", **cfg),
                               TRAIN, LabelVocab.from_sentences(s.tags for s in TRAIN))
    with torch.no_grad():  # non-trivial CRF scores
        if model.crf is not None:
            model.crf.trans.normal_(0, 1.0)
    model.eval()
    model.save_pretrained(tmp_path / "student")
    return model


ARCHS = [dict(model_type="cnn-lstm", use_crf=False), dict(model_type="cnn-lstm", use_crf=True, num_layers=2),
         dict(model_type="id-cnn", use_crf=True), dict(model_type="cnn-lstm", use_crf=False, char_encoder="none")]


@pytest.mark.parametrize("cfg", ARCHS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_fp32_export_matches_torch(cfg, tmp_path):
    model = _model(tmp_path, **cfg)
    sents = [s.tokens for s in TEST[:20]] + EXTRA
    out = export_tagger(tmp_path / "student", tmp_path / "onnx")
    rt = OnnxTagger.from_pretrained(out, variant="fp32")
    real = [s for s in sents if s]
    batch = model.encode([Sentence(s) for s in real]).collate(list(range(len(real))))
    with torch.no_grad():
        ref = model(batch).numpy()
        traced = ExportableTagger(model)(batch.words, batch.chars, batch.shapes, batch.mask).numpy()
    m = batch.mask.numpy()
    np.testing.assert_allclose(traced[m], ref[m], atol=1e-6)
    np.testing.assert_allclose(rt.emissions(real)[m], ref[m], atol=1e-4)
    assert rt.predict(sents, batch_size=7) == model.predict(sents, batch_size=7)


def test_int8_export_agrees_and_loads_without_torch(tmp_path):
    model = _model(tmp_path, model_type="cnn-lstm", use_crf=True)
    out = export_tagger(tmp_path / "student", tmp_path / "onnx", quantize="int8")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"}
    sents = [s.tokens for s in TEST]
    int8 = OnnxTagger.from_pretrained(out).predict(sents)
    ref = model.predict(sents)
    agree = np.mean([a == b for p, q in zip(int8, ref) for a, b in zip(p, q)])
    assert agree >= 0.95, agree
    import onnx  # int8 covers projections and embeddings; the BiLSTM and char-CNN stay fp32
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"LSTM", "Conv", "MatMulInteger", "DequantizeLinear"} <= ops and "DynamicQuantizeLSTM" not in ops, ops
    eight_bit = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    assert "tagger.embedder.words.weight_quantized" in eight_bit, eight_bit  # the word table, 4x smaller
    code = ("import sys; sys.modules['torch'] = None\n"  # any torch import would fail
            "from nlp_distill.export.runtime import OnnxTagger\n"
            f"print(OnnxTagger.from_pretrained({str(out)!r}).predict([['Mary', 'went', 'home']]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(OnnxTagger.from_pretrained(out).predict([["Mary", "went", "home"]]))


def test_export_and_onnx_inference_cli(tmp_path):
    _model(tmp_path, model_type="id-cnn")
    ok(invoke(nlp_export, ["onnx", "--model_dir", tmp_path / "student", "--output_dir", tmp_path / "onnx"]))
    a, b = tmp_path / "torch.conll", tmp_path / "onnx.conll"
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tmp_path / "student", "--data_file", TINY / "test.txt",
                              "--output_file", a]))
    ok(invoke(nlp_inference, ["tagger", "--model_dir", tmp_path / "onnx", "--data_file", TINY / "test.txt",
                              "--output_file", b, "--backend", "onnx"]))
    assert a.read_text() == b.read_text()
    r = invoke(nlp_inference, ["tagger", "--model_dir", tmp_path / "student", "--data_file", TINY / "test.txt",
                               "--output_file", tmp_path / "c.conll", "--backend", "onnx"])
    assert r.exit_code != 0 and "holds a NeuralTagger, not an exported model" in r.output


def test_transformer_export_matches_torch_on_long_sentences(tiny_encoder_dir, tiny_labels, tmp_path):
    """Teacher export: fp32 word logits equal torch's within 1e-4, windows included (a sentence
    far longer than one window keeps every word); int8 mostly agrees; the CLI round trip."""
    from nlp_distill.config import TransformerConfig
    from nlp_distill.export.runtime import OnnxTransformer
    from nlp_distill.models.transformer import TransformerTokenClassifier

    torch.manual_seed(0)
    clf = TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=tiny_labels,
                                                     config=TransformerConfig(max_seq_length=16, stride=4, pooling="mean",
                                                                             precision="fp32"))  # the graph is fp32
    clf.save_pretrained(tmp_path / "teacher")
    ok(invoke(nlp_export, ["onnx", "--model_dir", tmp_path / "teacher", "--output_dir", tmp_path / "onnx",
                           "--quantize", "int8"]))
    sents = [s.tokens for s in TEST[:10]] + [(TRAIN[1].tokens * 30)[:200], ["x"], []]
    ref = clf.word_logits(sents)
    got = OnnxTransformer.from_pretrained(tmp_path / "onnx", variant="fp32").word_logits(sents, batch_size=3)
    assert [g.shape for g in got] == [r.shape for r in ref]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-4)
    int8 = OnnxTransformer.from_pretrained(tmp_path / "onnx").predict(sents)
    agree = np.mean([a == b for p, q in zip(int8, clf.predict(sents)) for a, b in zip(p, q)])
    assert agree >= 0.8, agree
    out = tmp_path / "o.conll"
    ok(invoke(nlp_inference, ["transformer_token", "--model_dir", tmp_path / "onnx", "--data_file", TINY / "test.txt",
                              "--output_file", out, "--backend", "onnx"]))
    assert len(read_conll(out, tag_column=1)) == len(TEST)


def test_speed_benchmark_measures_exported_and_torch_runtimes(tmp_path):
    from benchmarks.common import load_any
    from benchmarks.speed import benchmark_models

    _model(tmp_path, model_type="cnn-lstm", use_crf=True)
    export_tagger(tmp_path / "student", tmp_path / "onnx", quantize="int8")
    assert load_any(f"{tmp_path / 'student'}@bf16").config.precision == "bf16"
    assert load_any(f"{tmp_path / 'onnx'}@fp32").variant == "fp32"
    assert load_any(str(tmp_path / "onnx")).variant == "int8"
    res = benchmark_models({"torch": f"{tmp_path / 'student'}@fp32", "ort": f"{tmp_path / 'onnx'}@int8"},
                           str(TINY / "test.txt"), threads=1, latency_n=5)
    for r in res.values():
        assert r["sent_per_s_b64"] > 0 and r["latency_p95_ms"] >= r["latency_p50_ms"] > 0 and r["peak_rss_mb"] > 0
