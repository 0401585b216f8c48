"""Entity-level P/R/F1 and token accuracy on hand-computed examples."""
from __future__ import annotations

import pytest

from nlp_distill.data.labels import convert_tags
from nlp_distill.metrics import tagging_metrics

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["O", "B-ORG"],
    ["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG"],   # PER right; LOC predicted as ORG
    ["O", "B-ORG"],                     # ORG right
    ["B-LOC", "I-LOC", "O", "O", "B-PER"],  # LOC boundary wrong; PER right
]
# Hand count:
#   gold entities: PER(s0 0-1), LOC(s0 3), ORG(s1 1), LOC(s2 0-2), PER(s2 4)          = 5
#   pred entities: PER(s0 0-1), ORG(s0 3), ORG(s1 1), LOC(s2 0-1), PER(s2 4)          = 5
#   exact matches: PER(s0), ORG(s1), PER(s2)                                          = 3
#   micro P = 3/5, R = 3/5, F1 = 3/5
#   PER: pred 2, gold 2, correct 2 -> P = R = F1 = 1, support 2
#   LOC: pred 1 (s2 0-1), gold 2, correct 0 -> P = R = F1 = 0, support 2
#   ORG: pred 2, gold 1, correct 1 -> P = 1/2, R = 1, F1 = 2*(1/2*1)/(3/2) = 2/3, support 1
#   tokens: 4 + 2 + 5 = 11; wrong: s0[3], s2[2] -> accuracy 9/11


def test_hand_computed_example():
    m = tagging_metrics(GOLD, PRED)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(3 / 5)
    assert m["accuracy"] == pytest.approx(9 / 11)
    assert m["n_sentences"] == 3
    pt = m["per_type"]
    assert set(pt) == {"PER", "LOC", "ORG"}
    assert pt["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    assert pt["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2})
    assert pt["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    for v in pt.values():
        assert isinstance(v["support"], int)


def test_unequal_precision_recall():
    gold = [["B-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "O", "O", "O", "B-LOC", "I-LOC"]]
    # gold 3 entities, pred 2, both pred correct: P = 2/2 = 1, R = 2/3, F1 = 2*(2/3)/(5/3) = 4/5
    # tokens: 6, wrong 1 (index 2) -> 5/6
    m = tagging_metrics(gold, pred)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["per_type"]["PER"]["recall"] == pytest.approx(0.5)
    assert m["per_type"]["LOC"]["f1"] == pytest.approx(1.0)


def test_perfect_and_all_wrong():
    m = tagging_metrics(GOLD, GOLD)
    assert m["precision"] == m["recall"] == m["f1"] == m["accuracy"] == pytest.approx(1.0)
    all_o = [["O"] * len(g) for g in GOLD]
    m = tagging_metrics(GOLD, all_o)
    # no predicted entity: P = 0 (zero division -> 0), R = 0/5, F1 = 0
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    # 11 tokens of which 3 are gold O (s0[2], s1[0], s2[3]) -> 3/11
    assert m["accuracy"] == pytest.approx(3 / 11)


def test_partial_boundary_is_wrong():
    # one gold entity of 3 tokens, predicted with 2: no exact match
    m = tagging_metrics([["B-ORG", "I-ORG", "I-ORG"]], [["B-ORG", "I-ORG", "O"]])
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_orphan_i_counts_as_entity():
    # conlleval reading: an I-X after O starts an X entity
    m = tagging_metrics([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert m["f1"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_entities_do_not_cross_sentence_boundaries():
    # Per sentence, gold has two one-word PER entities (s0 word 1, s1 word 0: an I- at a sentence
    # start opens an entity). Flattened, they would merge into one two-word entity.
    gold = [["O", "B-PER"], ["I-PER", "O"]]
    pred = [["O", "B-PER"], ["B-PER", "O"]]
    # per sentence: gold {PER s0:1, PER s1:0}, pred the same -> P = R = F1 = 1
    # flattened: gold {PER 1-2}, pred {PER 1, PER 2} -> F1 would be 0
    m = tagging_metrics(gold, pred)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(1.0)
    assert m["per_type"]["PER"]["support"] == 2
    assert m["accuracy"] == pytest.approx(3 / 4)


def test_sentence_boundary_does_not_create_entity():
    # gold: a two-word LOC at the end of s0 and a one-word LOC at the start of s1
    # pred: the same two entities; flattened, the pred I-LOC would extend the s0 entity.
    gold = [["O", "B-LOC", "I-LOC"], ["B-LOC", "O"]]
    pred = [["O", "B-LOC", "I-LOC"], ["I-LOC", "O"]]
    m = tagging_metrics(gold, pred)
    assert m["f1"] == pytest.approx(1.0)
    assert m["per_type"]["LOC"]["support"] == 2
    # and an entity split by a boundary in pred is two entities, not one matching the gold span
    gold2 = [["O", "O"], ["O", "O"]]
    pred2 = [["O", "B-LOC"], ["I-LOC", "O"]]
    m2 = tagging_metrics(gold2, pred2)
    assert m2["precision"] == 0.0 and m2["f1"] == 0.0
    assert m2["accuracy"] == pytest.approx(2 / 4)


def test_bioes_equals_bio():
    # the same entities written in BIOES score the same
    gold = [convert_tags(g, "BIOES") for g in GOLD]
    pred = [convert_tags(p, "BIOES") for p in PRED]
    m_bio, m_bioes = tagging_metrics(GOLD, PRED), tagging_metrics(gold, pred)
    for k in ("precision", "recall", "f1"):
        assert m_bioes[k] == pytest.approx(m_bio[k])
    assert set(m_bioes["per_type"]) == set(m_bio["per_type"]) == {"PER", "LOC", "ORG"}
    for t, v in m_bio["per_type"].items():
        assert m_bioes["per_type"][t] == pytest.approx(v)


def test_no_entities_anywhere():
    m = tagging_metrics([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert m["f1"] == 0.0 and m["precision"] == 0.0 and m["recall"] == 0.0
    assert m["accuracy"] == 1.0
    assert m["per_type"] == {}


def test_empty_input():
    m = tagging_metrics([], [])
    assert m["n_sentences"] == 0 and m["f1"] == 0.0 and m["accuracy"] == 0.0


def test_tuples_accepted():
    m = tagging_metrics([("B-PER", "O")], [("B-PER", "O")])
    assert m["f1"] == pytest.approx(1.0)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="sentences"):
        tagging_metrics(GOLD, PRED[:2])
    with pytest.raises(ValueError, match="sentence 1"):
        tagging_metrics([["O"], ["O", "B-PER"]], [["O"], ["O"]])
