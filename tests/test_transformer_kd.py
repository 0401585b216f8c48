"""Transformer students: layer dropping keeps weights, KD terms vanish for a copy, attention KL
against a loop, and the CLI run whose output every teacher-consuming command accepts."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nlp_distill.config import KDConfig, TransformerConfig, TransformerStudentConfig
from nlp_distill.data.conll import Sentence
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill import losses
from nlp_distill.distill.transformer_kd import TransformerDistill, layer_mapping
from nlp_distill.errors import ConfigError
from nlp_distill.models.layer_drop import bottom_layers, drop_layers, encoder_layers
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_inference, nlp_train
from tests.conftest import TINY
from tests.test_cli import TAGGER_ARGS, invoke, ok

DATA = load_data_dir(TINY)


@pytest.fixture(scope="module")
def teacher(tiny_encoder_dir):
    torch.manual_seed(0)
    return TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=DATA.labels,
                                                      config=TransformerConfig(max_seq_length=32, precision="fp32")).eval()  # exact KD-term comparisons


def test_bottom_layers_and_bad_layers(teacher):
    assert bottom_layers(6, 3) == [0, 1, 2] and bottom_layers(6, 6) == list(range(6)) and bottom_layers(4, 1) == [0]
    with pytest.raises(ConfigError):
        bottom_layers(2, 3)
    n = len(encoder_layers(teacher.model))
    with pytest.raises(ConfigError, match="layers 0.."):
        drop_layers(teacher, [n])
    assert layer_mapping(TransformerStudentConfig(), [0, 1], n) == [(0, 0), (1, 1)]
    assert layer_mapping(TransformerStudentConfig(layer_mappings=["1:0"]), [0, 1], n) == [(1, 0)]
    with pytest.raises(ConfigError, match="TEACHER:STUDENT"):
        layer_mapping(TransformerStudentConfig(layer_mappings=["x"]), [0], n)


def test_dropping_no_layer_is_the_teacher_and_kept_layers_are_copies(teacher, tmp_path):
    sents = [s.tokens for s in DATA.dev[:6]]
    n = len(encoder_layers(teacher.model))
    same = drop_layers(teacher, list(range(n))).eval()
    for a, b in zip(same.word_logits(sents), teacher.word_logits(sents)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    student = drop_layers(teacher, [n - 1])
    kept = encoder_layers(student.model)[0].state_dict()
    for k, v in encoder_layers(teacher.model)[n - 1].state_dict().items():
        assert torch.equal(kept[k], v)
    assert student.model.config.num_hidden_layers == 1 and teacher.model.config.num_hidden_layers == n
    student.save_pretrained(tmp_path / "s")
    again = TransformerTokenClassifier.from_pretrained(str(tmp_path / "s"))
    assert len(encoder_layers(again.model)) == 1
    assert again.predict(sents) == student.eval().predict(sents)


def test_attention_kl_matches_loop():
    g = torch.Generator().manual_seed(0)
    B, Hh, T = 2, 3, 5
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    def probs():
        x = torch.randn(B, Hh, T, T, generator=g, dtype=torch.float64).masked_fill(~mask[:, None, None, :], -1e9)
        return torch.softmax(x, -1)
    s, t = probs(), probs()
    got = losses.attention_kl(s, t, mask, reduction="sum")
    ref = 0.0
    for b in range(B):
        for q in range(T):
            if not mask[b, q]:
                continue
            ref += sum(sum(float(t[b, h, q, k]) * (math.log(float(t[b, h, q, k])) - math.log(float(s[b, h, q, k])))
                           for k in range(T) if mask[b, k]) for h in range(Hh)) / Hh
    assert float(got) == pytest.approx(ref, rel=1e-6)
    assert float(losses.attention_kl(t, t, mask, reduction="sum")) == pytest.approx(0.0, abs=1e-9)


def test_kd_terms_vanish_for_a_student_that_is_the_teacher(teacher):
    n = len(encoder_layers(teacher.model))
    student = drop_layers(teacher, list(range(n))).eval()
    cfg = TransformerStudentConfig(attention_w=1.0)
    dist = TransformerDistill(teacher, student, KDConfig(hidden_w=1.0, student_w=0.0), cfg,
                              layer_mapping(cfg, list(range(n)), n))
    wins = teacher.windows([s.tokens for s in DATA.train[:8]])
    batch = teacher.collate(wins, [DATA.labels.encode(s.tags) for s in DATA.train[:8]])
    total, words = dist.loss(batch)
    assert int(words) == sum(len(s) for s in DATA.train[:8])
    assert set(dist.last_parts) == {"kd", "hidden", "attention"}
    assert all(abs(v) < 1e-4 for v in dist.last_parts.values()), dist.last_parts
    # a one-layer student differs: every term is positive and gradients reach it
    small = drop_layers(teacher, [0]).train()
    dist2 = TransformerDistill(teacher, small, KDConfig(hidden_w=1.0), cfg, [(n - 1, 0)])
    total2, _ = dist2.loss(batch)
    total2.backward()
    assert all(v > 0 for v in dist2.last_parts.values()) and set(dist2.last_parts) == {"kd", "gold", "hidden", "attention"}
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in small.parameters())


def test_cached_teacher_logits_give_the_online_kd_term_and_skip_the_teacher(teacher):
    """Logit targets that arrive with the batch (an ensemble's, computed once) are used as they are;
    the teacher's own word logits as targets give exactly the online KD term."""
    sents = DATA.train[:8] + [Sentence(["word"] * 40, ["O"] * 40)]  # one multi-window sentence
    student = drop_layers(teacher, [0]).eval()
    tokens = [s.tokens for s in sents]
    targets = teacher.word_logits(tokens)
    wins = teacher.windows(tokens)
    assert len(wins) > len(sents)
    tags = [DATA.labels.encode(s.tags) for s in sents]
    batch = teacher.collate(wins, tags, targets)
    owned = batch["owned"] & batch["word_mask"]
    for i, w in enumerate(wins):  # each owned word's row is its sentence's target row; the rest are zero
        for j, (wi, own) in enumerate(zip(w.word_index, w.owned)):
            want = targets[w.sent][wi] if own else np.zeros(len(DATA.labels), np.float32)
            np.testing.assert_array_equal(batch["teacher_logits"][i, j].numpy(), want)
            assert int(batch["labels"][i, j]) == (tags[w.sent][wi] if own else -100)
    assert not batch["teacher_logits"][~owned].any()
    cfg, kd = TransformerStudentConfig(), KDConfig(student_w=0.0)
    online = TransformerDistill(teacher, student, kd, cfg, [])
    ref, _ = online.loss({k: v for k, v in batch.items() if k != "teacher_logits"})
    calls = []
    hook = teacher.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got, _ = TransformerDistill(teacher, student, kd, cfg, []).loss(batch)
    finally:
        hook.remove()
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-5) and not calls
    shifted = dict(batch, teacher_logits=batch["teacher_logits"] + torch.randn(batch["teacher_logits"].shape))
    assert float(TransformerDistill(teacher, student, kd, cfg, []).loss(shifted)[0].detach()) != pytest.approx(float(ref.detach()))


def test_transformer_kd_cli_output_is_a_teacher_folder(tiny_encoder_dir, tmp_path):
    data = tmp_path / "data"
    import shutil

    shutil.copytree(TINY, data)
    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", data, "--output_dir", t, "--model_name_or_path",
                          tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu"]))
    s = tmp_path / "student"
    ok(invoke(nlp_train, ["transformer_kd", "--data_dir", data, "--output_dir", s, "--teacher_model_path", t,
                          "--num_student_layers", 1, "--kd_hidden_w", 1, "--kd_attention_w", 1, "--augment", 1,
                          "--num_train_epochs", 1, "--device", "cpu", "--report_to", "jsonl"]))
    m = json.loads((s / "metrics.json").read_text())
    full = TransformerTokenClassifier.from_pretrained(str(t))
    assert m["student_layers"] == [0]
    assert m["parameters"] < full.num_parameters() and 0.0 <= m["teacher"]["dev"]["f1"] <= 1.0
    log = json.loads((s / "train_log.jsonl").read_text().splitlines()[0])
    assert {"train_kd", "train_gold", "train_hidden", "train_attention"} <= set(log)
    assert (s / "augmented.txt").is_file()
    # the student folder is accepted where a teacher is
    ok(invoke(nlp_inference, ["transformer_token", "--model_dir", s, "--data_file", data / "test.txt",
                              "--output_file", tmp_path / "p.conll"]))
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", data, "--output_dir", tmp_path / "kd", *TAGGER_ARGS,
                          "--teacher_model_path", s]))


def test_transformer_kd_from_an_ensemble_cuts_the_first_teacher(tiny_encoder_dir, tmp_path):
    data = tmp_path / "data"
    import shutil

    shutil.copytree(TINY, data)
    ts = []
    for seed in (1, 2):
        ts.append(tmp_path / f"t{seed}")
        ok(invoke(nlp_train, ["transformer_token", "--data_dir", data, "--output_dir", ts[-1], "--model_name_or_path",
                              tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu",
                              "--seed", seed]))
    s = tmp_path / "student"
    ok(invoke(nlp_train, ["transformer_kd", "--data_dir", data, "--output_dir", s, "--teacher_model_path",
                          f"{ts[0]},{ts[1]}", "--num_student_layers", 1, "--kd_hidden_w", 1, "--augment", 1,
                          "--num_train_epochs", 1, "--device", "cpu"]))
    m = json.loads((s / "metrics.json").read_text())
    assert m["teacher"]["members"] == 2 and m["student_layers"] == [0]
    first = TransformerTokenClassifier.from_pretrained(str(ts[0]))
    cut = TransformerTokenClassifier.from_pretrained(str(s / "model"))
    assert cut.num_parameters() < first.num_parameters()
    log = json.loads((s / "train_log.jsonl").read_text().splitlines()[0])
    assert {"train_kd", "train_gold", "train_hidden"} <= set(log)


def _naive_kd(kind: str, s: np.ndarray, t: np.ndarray, temp: float) -> float:
    """The KD term summed over words, from (N, C) word logits, written out with numpy."""
    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    if kind == "mse":
        return float(((s - t) ** 2).mean(-1).sum())
    ps, pt = softmax(s / temp), softmax(t / temp)
    if kind == "kl":
        return float(temp ** 2 * (pt * (np.log(pt) - np.log(ps))).sum())
    inter = [1 - np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(s))]
    intra = np.mean([1 - np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(s.shape[1])])
    return float(temp ** 2 * sum(x + intra for x in inter))


@pytest.mark.parametrize("kind", ["kl", "mse", "dist"])
def test_each_kd_loss_of_a_transformer_student_matches_its_naive_formula(teacher, kind):
    student = drop_layers(teacher, [0]).eval()
    torch.manual_seed(1)
    with torch.no_grad():  # far from the teacher: a loss well above float32 rounding
        student.model.classifier.weight.normal_(0, 1.0)
    sents = DATA.train[:8]
    tokens = [s.tokens for s in sents]
    wins = teacher.windows(tokens)
    assert len(wins) == len(sents)  # one window each: the word logits below are the batch's
    batch = teacher.collate(wins, [DATA.labels.encode(s.tags) for s in sents])
    dist = TransformerDistill(teacher, student, KDConfig(loss_function=kind, temperature=2.0, student_w=0.0),
                              TransformerStudentConfig(), [])
    dist.loss(batch)
    s_words = np.concatenate(student.word_logits(tokens)).astype(np.float64)
    t_words = np.concatenate(teacher.word_logits(tokens)).astype(np.float64)
    assert float(dist.last_parts["kd"]) == pytest.approx(_naive_kd(kind, s_words, t_words, 2.0), rel=1e-4)


def test_transformer_kd_takes_dist_from_the_command_line(tiny_encoder_dir, tmp_path):
    t = tmp_path / "teacher"
    ok(invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", t, "--model_name_or_path",
                          tiny_encoder_dir, "--num_train_epochs", 1, "--max_seq_length", 32, "--device", "cpu"]))
    s = tmp_path / "student"
    ok(invoke(nlp_train, ["transformer_kd", "--data_dir", TINY, "--output_dir", s, "--teacher_model_path", t,
                          "--num_student_layers", 1, "--kd_loss_fn", "dist", "--kd_temp", 2, "--augment", 0,
                          "--num_train_epochs", 1, "--device", "cpu"]))
    assert json.loads((s / "config.json").read_text())["kd"]["loss_function"] == "dist"
    assert "train_kd" in json.loads((s / "train_log.jsonl").read_text().splitlines()[0])
