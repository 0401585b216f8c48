"""benchmarks.peers: spaCy NER beside our students on the tiny fixture (skipped without spaCy)."""
from __future__ import annotations

import json
import random

import pytest

from tests.conftest import TINY

spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install -e .[peers]): benchmarks.peers not tested")


def test_docbin_keeps_our_tokens_and_entities_and_gold25_is_run_alls_split(tmp_path):
    from spacy.tokens import DocBin

    from benchmarks.peers import doc_tags, split_data, to_docbin
    from nlp_distill.data.dataset_dir import load_data_dir

    full = load_data_dir(TINY)
    low = split_data(TINY, tmp_path, 0.25)
    assert [s.tokens for s in low.train] == [s.tokens for i, s in enumerate(full.train) if i % 4 == 0]
    assert [s.tokens for s in low.test] == [s.tokens for s in full.test]
    to_docbin(low.train, tmp_path / "train.spacy")
    docs = list(DocBin().from_disk(tmp_path / "train.spacy").get_docs(spacy.blank("en").vocab))
    assert [[t.text for t in d] for d in docs] == [s.tokens for s in low.train]
    back = [doc_tags(d) for d in docs]
    assert back == [s.tags for s in low.train] and any(t != "O" for s in back for t in s)
    with pytest.raises(SystemExit, match="0.5"):
        split_data(TINY, tmp_path, 0.5)


def test_peers_end_to_end_on_the_tiny_fixture(tmp_path):
    from benchmarks import peers
    from procedures.cli import nlp_train
    from tests.test_cli import TAGGER_ARGS, invoke, ok

    student = tmp_path / "student"
    ok(invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", student, "--embedding_file", "none",
                          "--no_show_progress", *TAGGER_ARGS]))
    words = sorted({ln.split()[0].lower() for f in ("train", "dev", "test")
                    for ln in (TINY / f"{f}.txt").read_text(encoding="utf-8").splitlines() if ln.strip()})
    rng = random.Random(0)
    vec = tmp_path / "vectors.txt"  # stands in for GloVe: lowercase words, as in glove-6b-50d
    vec.write_text(f"{len(words)} 4\n" + "".join(w + " " + " ".join(f"{rng.gauss(0, 1):.3f}" for _ in range(4)) + "\n"
                                                 for w in words), encoding="utf-8")
    res = peers.main(["--data_dir", str(TINY), "--output_dir", str(tmp_path / "out"), "--seeds", "1",
                      "--max_epochs", "6", "--eval_frequency", "5", "--vectors", str(vec),
                      "--student", f"tiny={student}", "--speed_file", str(TINY / "unlabeled.txt"),
                      "--latency_n", "4", "--n_process", "0"])
    assert list(res["models"]) == ["spacy_efficiency", "spacy_accuracy", "tiny"]
    for kind in ("efficiency", "accuracy"):  # our seqeval F1 on our tokens == spaCy's own scorer, same dev set
        row = res["models"][f"spacy_{kind}"][0]
        assert row["dev_f1"] > 0 and row["dev_f1"] == pytest.approx(row["spacy_dev_ents_f"], abs=1e-6)
    from spacy.training import Corpus

    eff = res["models"]["spacy_efficiency"][0]
    peers.to_docbin(peers.load_data_dir(TINY).test, tmp_path / "test.spacy")
    nlp = spacy.load(eff["dir"])
    own_test = nlp.evaluate(list(Corpus(tmp_path / "test.spacy", gold_preproc=True)(nlp)))["ents_f"]
    assert eff["test_f1"] == pytest.approx(own_test, abs=1e-6)
    st = res["models"]["tiny"][0]
    saved = json.loads((student / "metrics.json").read_text())
    assert st["seed"] == 3 and st["test_f1"] == pytest.approx(saved["test"]["f1"]) and st["train_seconds"] == saved["train_seconds"]
    nlp = spacy.load(res["models"]["spacy_accuracy"][0]["dir"])
    assert nlp.vocab.vectors.shape == (len(words), 4)
    assert nlp.make_doc("Mary")[0].has_vector  # looked up lowercased (--attr LOWER)
    for name in res["models"]:
        assert all(res["speed"][name][t]["sent_per_s_b64"] > 0 for t in ("1", "2"))
        assert all(r["size_mb"] > 0 for r in res["models"][name])
    assert json.loads((tmp_path / "out" / "peers.json").read_text())["models"]["tiny"][0]["seed"] == 3
    table = peers.markdown(res)
    assert "| spacy_accuracy | 1 |" in table and "| tiny | 3 |" in table and "x spaCy efficiency" in table
