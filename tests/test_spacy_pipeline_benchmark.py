"""benchmarks.spacy_pipeline end to end on the tiny fixture: its character-span scores agree with
spaCy's own scorer for both pipelines, and it writes its JSON and table (skipped without spaCy)."""
from __future__ import annotations

import json
import random

import pytest

from tests.conftest import TINY

spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install -e .[spacy]): benchmarks.spacy_pipeline not tested")


def test_gold_text_and_span_scores():
    from benchmarks.spacy_pipeline import span_scores, text_and_entities
    from nlp_distill.data.conll import Sentence

    text, ents = text_and_entities(Sentence(["Mary", "Jones", "flew", "to", "New", "York"],
                                            ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]))
    assert text == "Mary Jones flew to New York" and ents == [(0, 10, "PER"), (19, 27, "LOC")]
    assert [text[a:b] for a, b, _ in ents] == ["Mary Jones", "New York"]
    s = span_scores([{(0, 10, "PER"), (19, 27, "LOC")}, set()], [{(0, 10, "PER"), (19, 23, "LOC")}, {(1, 2, "X")}])
    assert (s["precision"], s["recall"]) == (pytest.approx(1 / 3), 0.5) and s["f1"] == pytest.approx(0.4)
    assert span_scores([set()], [set()])["f1"] == 0.0


def _tiny_spacy_ner(folder):
    """spaCy's default NER trained for a few epochs on the tiny train split, saved to ``folder``."""
    from spacy.training import Example

    from benchmarks.spacy_pipeline import text_and_entities
    from nlp_distill.data.conll import read_conll

    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    examples = []
    for s in read_conll(TINY / "train.txt"):
        text, ents = text_and_entities(s)
        examples.append(Example.from_dict(nlp.make_doc(text), {"entities": ents}))
    spacy.util.fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(0)
    for _ in range(6):
        rng.shuffle(examples)
        for batch in spacy.util.minibatch(examples, 16):
            nlp.update(batch, sgd=optimizer, drop=0.1)
    nlp.to_disk(folder)
    return folder


def test_spacy_pipeline_benchmark_on_the_tiny_fixture(tmp_path, capsys):
    from spacy.training import Example

    from benchmarks import spacy_pipeline as bench
    from nlp_distill.data.conll import read_conll
    from tests.model_zoo import _student

    _student(tmp_path / "run" / "model", use_crf=True)  # a run folder holding model/
    student = str(tmp_path / "run")
    spacy_dir = _tiny_spacy_ner(tmp_path / "spacy_ner")
    out_json = tmp_path / "result.json"
    res = bench.main(["--data_dir", str(TINY), "--student", student, "--spacy_model", str(spacy_dir),
                      "--output_dir", str(tmp_path / "out"), "--output_json", str(out_json),
                      "--speed_file", str(TINY / "unlabeled.txt"), "--repeats", "1", "--batch_size", "8"])
    rows = res["rows"]
    assert list(rows) == ["spacy_efficiency", "nlp_distill_ner"]
    # the character-span F1 is spaCy's own ents_f of each pipeline on the same texts and gold spans
    sents = [s for s in read_conll(TINY / "test.txt") if s.tokens]
    for name, nlp in (("spacy_efficiency", spacy.load(spacy_dir)),
                      ("nlp_distill_ner", bench.our_pipeline(student, 8))):
        examples = []
        for s in sents:
            text, ents = bench.text_and_entities(s)
            examples.append(Example.from_dict(nlp.make_doc(text), {"entities": ents}))
        own = nlp.evaluate(examples)["ents_f"]
        assert rows[name]["text"]["predicted"] > 0, name
        assert rows[name]["text"]["f1"] == pytest.approx(own, abs=1e-9), name
        assert 0.0 <= rows[name]["token_f1"] <= 1.0
        assert rows[name]["speed"]["docs_per_s"] > 0 and rows[name]["size_mb"] > 0
    assert rows["spacy_efficiency"]["text"]["f1"] > 0.3  # a trained model: the scoring finds its right entities
    assert res["n_texts"] == len(sents) and res["threads"] == 1
    assert json.loads(out_json.read_text())["rows"]["nlp_distill_ner"]["pipeline"] == ["nlp_distill_ner"]
    table = capsys.readouterr().out
    assert "| nlp_distill_ner |" in table and "| spacy_efficiency |" in table and "docs/s (1 thread)" in table


def test_without_a_spacy_model_it_trains_spacys_efficiency_ner_like_peers(monkeypatch, tmp_path):
    from benchmarks import spacy_pipeline as bench

    seen = {}

    def fake_group(kind, args, data, root, out):
        seen.update(kind=kind, seeds=args.seeds, max_epochs=args.max_epochs, threads=args.train_threads, root=root)
        return [{"dir": "trained"}]

    monkeypatch.setattr(bench, "spacy_group", fake_group)
    a = bench.parse_args(["--data_dir", str(TINY), "--student", "s", "--output_dir", str(tmp_path), "--seed", "2",
                          "--max_epochs", "5"])
    assert bench.train_spacy_efficiency(a, None) == "trained"
    assert seen == {"kind": "efficiency", "seeds": [2], "max_epochs": 5, "threads": 1, "root": tmp_path / "full"}
