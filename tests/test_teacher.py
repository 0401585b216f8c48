"""TransformerTokenClassifier (the teacher) on the tiny random BERT: training, save/load, runs."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_distill.config import TrainerConfig, TransformerConfig
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab
from nlp_distill.models.transformer import NLP_DISTILL_FILE, TransformerTokenClassifier
from procedures.common import RunOptions

TINY = Path(__file__).parent / "fixtures" / "tiny"


def _clf(tiny_encoder_dir, tiny_labels, **cfg) -> TransformerTokenClassifier:
    torch.manual_seed(0)
    config = TransformerConfig(max_seq_length=32, **cfg)
    return TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=tiny_labels, config=config)


def test_training_steps_reduce_loss(tiny_encoder_dir, tiny_labels):
    clf = _clf(tiny_encoder_dir, tiny_labels)
    data = load_data_dir(TINY)
    train = data.train[:32]
    windows = clf.windows([s.tokens for s in train])
    tags = [tiny_labels.encode(s.tags) for s in train]
    batch = clf.collate(windows, tags)
    assert int((batch["labels"] != -100).sum()) == sum(len(s) for s in train)  # every word trained once
    opt = torch.optim.AdamW(clf.parameters(), lr=1e-3)
    clf.train()
    torch.manual_seed(0)
    first = None
    for _ in range(15):
        loss, n = clf.loss(batch)
        (loss / n).backward()
        opt.step()
        opt.zero_grad()
        if first is None:
            first = float(loss.detach() / n)
    clf.eval()
    with torch.no_grad():
        loss, n = clf.loss(batch)
    last = float(loss / n)
    assert last < 0.8 * first, (first, last)


def test_word_logits_cover_every_word_of_a_long_sentence(tiny_encoder_dir, tiny_labels):
    clf = _clf(tiny_encoder_dir, tiny_labels)
    long = ("Mary Jones visited New York yesterday .".split()) * 20  # 140 words >> 32 sub-tokens
    short = ["it", "rained"]
    out = clf.word_logits([long, short], batch_size=4)
    assert [a.shape for a in out] == [(len(long), len(tiny_labels)), (2, len(tiny_labels))]
    assert np.isfinite(out[0]).all()
    # windows really were needed, and no word row was left at its zero initialisation
    assert len(clf.windows([long])) > 1
    assert (np.abs(out[0]).sum(1) > 0).all()
    assert [len(p) for p in clf.predict([long, short])] == [len(long), 2]


def test_save_load_roundtrip(tiny_encoder_dir, tiny_labels, tmp_path):
    clf = _clf(tiny_encoder_dir, tiny_labels)
    # perturb the head so a reload from the encoder (new random head) could not pass by chance
    with torch.no_grad():
        for p in clf.model.classifier.parameters():
            p.add_(torch.randn_like(p))
    sents = [s.tokens for s in load_data_dir(TINY).dev[:6]]
    before = clf.word_logits(sents)
    folder = tmp_path / "teacher"
    clf.save_pretrained(folder)

    cfg = json.loads((folder / "config.json").read_text())
    assert {int(k): v for k, v in cfg["id2label"].items()} == dict(enumerate(tiny_labels.labels))
    assert cfg["label2id"] == {l: i for i, l in enumerate(tiny_labels.labels)}
    assert (folder / "tokenizer_config.json").is_file()
    assert (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
    meta = json.loads((folder / NLP_DISTILL_FILE).read_text())
    assert meta["labels"] == tiny_labels.labels
    assert meta["config"]["max_seq_length"] == 32

    loaded = TransformerTokenClassifier.from_pretrained(str(folder))
    assert loaded.labels == tiny_labels
    assert loaded.config.max_seq_length == 32
    after = loaded.word_logits(sents)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert loaded.predict(sents) == clf.predict(sents)
    # same labels given explicitly: accepted
    TransformerTokenClassifier.from_pretrained(str(folder), labels=LabelVocab(tiny_labels.labels))


def test_load_with_other_labels_raises(tiny_encoder_dir, tiny_labels, tmp_path):
    clf = _clf(tiny_encoder_dir, tiny_labels)
    clf.save_pretrained(tmp_path / "t")
    reordered = LabelVocab(list(reversed(tiny_labels.labels)))
    with pytest.raises(ValueError):
        TransformerTokenClassifier.from_pretrained(str(tmp_path / "t"), labels=reordered)
    fewer = LabelVocab(["O", "B-PER", "I-PER"])
    with pytest.raises(ValueError):
        TransformerTokenClassifier.from_pretrained(str(tmp_path / "t"), labels=fewer)


def test_plain_encoder_needs_labels(tiny_encoder_dir):
    with pytest.raises(ValueError):
        TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir))


def test_do_training_run_folder(tiny_dir, tiny_encoder_dir, tmp_path, monkeypatch):
    import nlp_distill.training.fit as fit
    import nlp_distill.training.result as result
    import procedures.transformer_token as tt

    # record when each split is evaluated relative to the end of training
    state = {"training_done": False, "test_calls": [], "dev_calls": 0}
    real_train = fit.Trainer.train
    real_eval = fit.evaluate_split
    data = load_data_dir(tiny_dir)
    test_tokens = [s.tokens for s in data.test]

    def train_spy(self, *a, **k):
        r = real_train(self, *a, **k)
        state["training_done"] = True
        return r

    def eval_spy(predict, sentences):
        if [s.tokens for s in sentences] == test_tokens:
            state["test_calls"].append(state["training_done"])
        else:
            state["dev_calls"] += 1
        return real_eval(predict, sentences)

    monkeypatch.setattr(fit.Trainer, "train", train_spy)
    for module in (fit, result):  # dev each epoch (fit), dev and test of the best model (result)
        monkeypatch.setattr(module, "evaluate_split", eval_spy)

    out = tmp_path / "run"
    model = TransformerConfig(model_name_or_path=str(tiny_encoder_dir), max_seq_length=32, batch_size=16)
    trainer = TrainerConfig(epochs=2, lr=1e-3, optimizer="adamw", show_progress=False, seed=1)
    m = tt.do_training(tiny_dir, out, model, trainer, run=RunOptions(device="cpu"))

    assert (out / "model" / NLP_DISTILL_FILE).is_file()
    assert (out / "model" / "config.json").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "transformer_token"
    assert cfg["model"]["max_seq_length"] == 32 and cfg["trainer"]["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["dev"]["f1"] <= 1.0
    assert 0.0 <= metrics["test"]["f1"] <= 1.0
    assert metrics["dev"]["f1"] == pytest.approx(m["dev"]["f1"])
    assert metrics["epochs_run"] == 2
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines() if l.strip()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all("dev_f1" in r for r in log)
    assert not any("test" in k for r in log for k in r)
    # test scored exactly once, after training; dev scored every epoch
    assert state["test_calls"] == [True]
    assert state["dev_calls"] >= 2
    # the saved best model reloads and tags
    best = TransformerTokenClassifier.from_pretrained(str(out))
    assert best.labels == data.labels
    assert [len(p) for p in best.predict(test_tokens[:3])] == [len(t) for t in test_tokens[:3]]


def test_bf16_precision_runs_the_encoder_in_bf16_and_returns_fp32(tiny_encoder_dir, tiny_labels):
    """``precision=bf16`` autocasts the encoder (its linear layers see bf16) but hands fp32 logits
    to losses and caches; they stay close to the fp32 model's. ``auto`` on a CPU is bf16 for passes
    without gradients where it has AMX tiles (this machine, if it has them), else fp32."""
    from nlp_distill.precision import bf16_native

    fp32 = _clf(tiny_encoder_dir, tiny_labels, precision="fp32")
    bf16 = _clf(tiny_encoder_dir, tiny_labels, precision="bf16")
    auto = _clf(tiny_encoder_dir, tiny_labels)
    assert isinstance(fp32.autocast(), contextlib.nullcontext)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    assert bf16_native(torch.device("cpu")) == amx
    with torch.no_grad():  # auto on an AMX CPU: bf16 for inference ...
        assert isinstance(auto.autocast(), torch.autocast) == amx
    assert isinstance(auto.autocast(), contextlib.nullcontext)  # ... and fp32 for training
    seen = []
    hook = bf16.model.bert.encoder.layer[0].attention.self.query.register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    sents = [s.tokens for s in load_data_dir(TINY).train[:8]]
    a, b = fp32.word_logits(sents), bf16.word_logits(sents)
    hook.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(x.dtype == np.float32 for x in b)
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    assert 0 < diff < 0.1, diff
    batch = bf16.collate(bf16.windows(sents), [tiny_labels.encode(s.tags) for s in load_data_dir(TINY).train[:8]])
    loss, n = bf16.loss(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()  # gradients reach the fp32 weights through the autocast region
    assert bf16.model.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_token_budget_spans_cover_in_order_within_budget():
    from nlp_distill.models.transformer import token_budget_spans
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = sorted(rng.integers(1, 40, rng.integers(0, 60)).tolist())
        budget = int(rng.integers(1, 200))
        spans = token_budget_spans(lengths, budget)
        assert [i for a, b in spans for i in range(a, b)] == list(range(len(lengths)))  # every item once, in order
        for a, b in spans:
            assert b - a == 1 or (b - a) * lengths[b - 1] <= budget  # within budget (a lone item may exceed it)
            if b < len(lengths):
                assert (b - a + 1) * lengths[b] > budget  # greedy: the next item would not have fitted
    assert token_budget_spans([10] * 8, 40) == [(0, 4), (4, 8)]
