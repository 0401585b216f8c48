"""An MPNet encoder (the architecture of the packaged ``mpnet`` teacher: relative attention bias
shared by all layers, <s>/</s>/<pad> specials, no token_type_ids) through every path a BERT
teacher takes: fine-tuning, KD into a BiLSTM student, layer dropping and ONNX export. A tiny
random MPNet is built from a config, like the tiny BERT of conftest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_distill.config import TransformerConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.models.layer_drop import drop_layers, encoder_layers
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_export, nlp_inference, nlp_train
from tests.conftest import TINY, make_tiny_tokenizer
from tests.option_probe import capture
from tests.test_cli import TAGGER_ARGS, invoke, ok

DATA = load_data_dir(TINY)
MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"]  # ids 0-3 as in all-mpnet-base-v2


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    """A tiny random-weight MPNet encoder folder: the conftest word-piece vocabulary under MPNet's
    special tokens (pad id 1, as MPNet's position ids expect), 2 layers, hidden 32."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_mpnet")
    bert_vocab = make_tiny_tokenizer(folder / "bert").get_vocab()
    words = [w for w, _ in sorted(bert_vocab.items(), key=lambda kv: kv[1]) if not w.startswith("[")]
    vocab = {w: i for i, w in enumerate(MPNET_SPECIALS + words)}
    tok = MPNetTokenizerFast(vocab=vocab, do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    MPNetModel(cfg).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def teacher(tiny_mpnet_dir) -> TransformerTokenClassifier:
    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(str(tiny_mpnet_dir), labels=DATA.labels,
                                                      config=TransformerConfig(max_seq_length=16, stride=4,
                                                                               precision="fp32")).eval()


def test_tiny_mpnet_tokenizer_and_every_word_of_long_sentences(teacher):
    assert type(teacher.model).__name__ == "MPNetForTokenClassification"
    enc = teacher.tokenizer([["Visited", "Paris"]], is_split_into_words=True)
    assert enc.tokens()[0] == "<s>" and enc.tokens()[-1] == "</s>" and "token_type_ids" not in enc
    assert enc.word_ids()[1:-1] == sorted(enc.word_ids()[1:-1]) and set(enc.word_ids()[1:-1]) == {0, 1}
    assert "[UNK]" not in enc.tokens()  # the fixture words are in the vocabulary
    long = (DATA.train[1].tokens * 10)[:60]  # several 16-sub-token windows
    sents = [s.tokens for s in DATA.dev[:4]] + [long]
    logits = teacher.word_logits(sents, batch_size=2)
    assert [l.shape for l in logits] == [(len(s), len(DATA.labels)) for s in sents]
    alone = teacher.word_logits([long])[0]  # padding in a batch changes nothing (pad id, positions)
    np.testing.assert_allclose(logits[-1], alone, atol=1e-5)


def test_layer_dropping_keeps_the_shared_relative_attention_bias(teacher):
    sents = [s.tokens for s in DATA.dev[:6]]
    n = len(encoder_layers(teacher.model))
    assert n == 3
    same = drop_layers(teacher, list(range(n))).eval()
    for a, b in zip(same.word_logits(sents), teacher.word_logits(sents)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    cut = drop_layers(teacher, [0, 2]).eval()
    bias, ref = cut.model.mpnet.encoder.relative_attention_bias, teacher.model.mpnet.encoder.relative_attention_bias
    assert bias is not ref and torch.equal(bias.weight, ref.weight)
    assert cut.model.config.num_hidden_layers == 2 and len(encoder_layers(cut.model)) == 2
    # the cut runs exactly the kept layers: layer 0 then layer 2 of the teacher, by hand
    batch = cut.aligner.collate(cut.windows(sents))
    seen = {}  # what the teacher's encoder hands its layer 1: layer 0's output, mask, position bias
    hook = teacher.model.mpnet.encoder.layer[1].register_forward_pre_hook(
        lambda mod, args, kwargs: seen.update(args=args, kwargs=kwargs), with_kwargs=True)
    with torch.no_grad():
        teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hook.remove()
        h = teacher.model.mpnet.encoder.layer[2](*seen["args"], **seen["kwargs"])[0]
        want = teacher.model.classifier(h)
    got = cut.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)


def test_mpnet_teacher_kd_student_layer_drop_and_onnx_export(tiny_mpnet_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from nlp_distill.export.runtime import OnnxTransformer

    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", t, "--model_name_or_path",
                          tiny_mpnet_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu"]))
    assert json.loads((t / "model" / "config.json").read_text())["model_type"] == "mpnet"
    kd = tmp_path / "kd"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", TINY, "--output_dir", kd, *TAGGER_ARGS,
                          "--teacher_model_path", t]))
    assert 0.0 <= json.loads((kd / "metrics.json").read_text())["test"]["f1"] <= 1.0
    s = tmp_path / "student"
    ok(invoke(nlp_train, ["transformer_kd", "--data_dir", TINY, "--output_dir", s, "--teacher_model_path", t,
                          "--num_student_layers", 1, "--kd_hidden_w", 1, "--kd_attention_w", 1,
                          "--num_train_epochs", 1, "--device", "cpu", "--report_to", "jsonl"]))
    m = json.loads((s / "metrics.json").read_text())
    assert m["student_layers"] == [0]
    log = json.loads((s / "train_log.jsonl").read_text().splitlines()[0])
    assert {"train_kd", "train_hidden", "train_attention"} <= set(log)
    assert all(np.isfinite(log[k]) for k in ("train_kd", "train_hidden", "train_attention"))
    student = TransformerTokenClassifier.from_pretrained(str(s))
    assert type(student.model).__name__ == "MPNetForTokenClassification" and len(encoder_layers(student.model)) == 1
    ok(invoke(nlp_export, ["onnx", "--model_dir", s, "--output_dir", tmp_path / "onnx"]))
    sents = [x.tokens for x in DATA.test] + [(DATA.train[1].tokens * 20)[:80]]
    ref = student.eval().word_logits(sents)
    got = OnnxTransformer.from_pretrained(tmp_path / "onnx", variant="fp32").word_logits(sents, batch_size=3)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-4)
    out = tmp_path / "o.conll"
    ok(invoke(nlp_inference, ["transformer_token", "--model_dir", tmp_path / "onnx", "--data_file", TINY / "test.txt",
                              "--output_file", out, "--backend", "onnx"]))
    assert len(read_conll(out, tag_column=1)) == len(DATA.test)


def test_a_minilm_like_student_of_another_tokenizer_and_width_learns_from_mpnet_word_logits(tiny_mpnet_dir, tmp_path):
    """transformer_kd --student_model_name_or_path: a BERT student (word-piece tokenizer with
    [CLS]/[SEP], hidden 24) taught by an MPNet teacher (<s>/</s>, hidden 32) through word-level
    logits computed once; the KD term falls and nothing asks the teacher to read the student's ids."""
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    tok = make_tiny_tokenizer(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=64)).save_pretrained(str(bert))
    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", t, "--model_name_or_path",
                          tiny_mpnet_dir, "--num_train_epochs", 2, "--lr", 5e-3, "--max_seq_length", 32, "--device", "cpu"]))
    s = tmp_path / "student"
    args = ["transformer_kd", "--data_dir", TINY, "--output_dir", s, "--teacher_model_path", t, "--device", "cpu",
            "--student_model_name_or_path", bert, "--kd_student_w", 0, "--augment", 1, "--lr", 5e-3,
            "--num_train_epochs", 4, "--warmup_ratio", 0, "--report_to", "jsonl"]
    ok(invoke(nlp_train, args))
    m = json.loads((s / "metrics.json").read_text())
    assert m["student_model"] == str(bert) and m["student_layers"] == []
    student = TransformerTokenClassifier.from_pretrained(str(s))
    assert type(student.model).__name__ == "BertForTokenClassification" and student.model.config.hidden_size == 24
    assert student.tokenizer.cls_token == "[CLS]" and student.config.max_seq_length == 32  # the teacher's windows
    log = [json.loads(l) for l in (s / "train_log.jsonl").read_text().splitlines() if '"train_kd"' in l]
    assert "train_hidden" not in log[0] and log[-1]["train_kd"] < log[0]["train_kd"]
    # layer-wise losses need a student cut from the teacher: refused by name
    bad = invoke(nlp_train, [*args[:4], tmp_path / "bad", *args[5:], "--kd_hidden_w", 1])
    assert bad.exit_code != 0 and "--kd_hidden_w" in bad.output and "cut from the teacher" in bad.output


def test_the_mpnet_short_name_brings_its_measured_recipe_unless_flags_say_otherwise(tiny_mpnet_dir, tmp_path,
                                                                                    monkeypatch):
    """`--model_name_or_path mpnet` trains at lr 5e-5, batch 32 and a 2e-3 head (the recipe that
    did not stay at the label prior); a typed flag keeps its value; another encoder is untouched."""
    import nlp_distill.models.transformer as transformer

    real = transformer.resolve_encoder
    monkeypatch.setattr(transformer, "resolve_encoder", lambda p: str(tiny_mpnet_dir) if p == "mpnet" else real(p))
    common = ["transformer_token", "--data_dir", TINY, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu"]

    def settings(out, *extra):
        """What the Trainer was given: the optimiser's peak lrs (body groups first, then the head's)
        and the largest training batch."""
        tr = capture(monkeypatch, nlp_train, [*common, "--output_dir", tmp_path / out, *extra]).trainer
        lrs = tuple(dict.fromkeys(g["initial_lr"] for g in tr.optimizer.param_groups))  # in group order
        return lrs, max(len(b) for b in tr.train_batches(0))

    assert settings("recipe", "--model_name_or_path", "mpnet") == ((5e-5, 2e-3), 32)
    assert settings("typed", "--model_name_or_path", "mpnet", "--lr", 1e-3, "--head_lr", 1e-2) == ((1e-3, 1e-2), 32)
    assert settings("folder", "--model_name_or_path", tiny_mpnet_dir) == ((2e-4,), 16)
