"""Tagging schemes (IO/BIO/BIOES): detection, conversion, repair, validity; LabelVocab."""
from __future__ import annotations

import json

import pytest

from nlp_distill.data.labels import (
    LabelVocab,
    convert_tags,
    detect_scheme,
    is_valid,
    read_labels_txt,
    repair,
    split_tag,
)
from nlp_distill.errors import DataFormatError

# (BIO, BIOES, IO) triples derived by hand
TRIPLES = [
    (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "E-PER", "O", "S-LOC"], ["I-PER", "I-PER", "O", "I-LOC"]),
    (["B-ORG", "I-ORG", "I-ORG", "B-LOC", "I-LOC"], ["B-ORG", "I-ORG", "E-ORG", "B-LOC", "E-LOC"],
     ["I-ORG", "I-ORG", "I-ORG", "I-LOC", "I-LOC"]),
    (["O", "O", "O"], ["O", "O", "O"], ["O", "O", "O"]),
    (["B-PER"], ["S-PER"], ["I-PER"]),
    (["O", "B-MISC", "O", "B-PER", "I-PER", "I-PER", "I-PER", "O"],
     ["O", "S-MISC", "O", "B-PER", "I-PER", "I-PER", "E-PER", "O"],
     ["O", "I-MISC", "O", "I-PER", "I-PER", "I-PER", "I-PER", "O"]),
    ([], [], []),
]


def test_split_tag():
    assert split_tag("O") == ("O", None)
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I-corporation") == ("I", "corporation")
    assert split_tag("S-creative-work") == ("S", "creative-work")
    # only the hyphenated B/I/E/S spelling is accepted (conversion writes that form)
    for bad in ("PER", "X-PER", "B-", "b-PER", "", "B_PER", "L-PER", "U-LOC"):
        with pytest.raises(ValueError):
            split_tag(bad)


def test_detect_scheme():
    assert detect_scheme(["O", "I-PER", "I-LOC"]) == "IO"
    assert detect_scheme(["O", "O"]) == "IO"
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "BIO"
    assert detect_scheme(["B-PER"]) == "BIO"
    assert detect_scheme(["O", "B-PER", "I-PER", "E-PER", "S-LOC"]) == "BIOES"
    assert detect_scheme(["S-LOC", "O"]) == "BIOES"
    assert detect_scheme(["E-LOC"]) == "BIOES"
    with pytest.raises(ValueError):
        detect_scheme(["B-PER", "L-PER", "U-LOC"])  # BILOU must be converted first


@pytest.mark.parametrize("bio,bioes,io", TRIPLES)
def test_convert_known(bio, bioes, io):
    assert convert_tags(bio, "BIOES") == bioes
    assert convert_tags(bio, "IO") == io
    assert convert_tags(bioes, "BIO") == bio
    assert convert_tags(bioes, "IO") == io
    # round trips
    assert convert_tags(convert_tags(bio, "BIOES"), "BIO") == bio
    assert convert_tags(convert_tags(bioes, "BIO"), "BIOES") == bioes
    assert convert_tags(convert_tags(io, "BIO"), "IO") == io
    assert convert_tags(convert_tags(io, "BIOES"), "IO") == io
    # none of these have two adjacent same-type entities, so IO loses nothing
    assert convert_tags(io, "BIO") == bio
    assert convert_tags(io, "BIOES") == bioes
    for s in (bio, bioes, io):
        assert convert_tags(s, detect_scheme(s) if s else "IO") == list(s)


def test_convert_adjacent_same_type():
    bio = ["B-PER", "B-PER", "I-PER", "O"]
    assert convert_tags(bio, "BIOES") == ["S-PER", "B-PER", "E-PER", "O"]
    assert convert_tags(convert_tags(bio, "BIOES"), "BIO") == bio
    # IO cannot tell the two entities apart: they merge
    io = convert_tags(bio, "IO")
    assert io == ["I-PER", "I-PER", "I-PER", "O"]
    assert convert_tags(io, "BIO") == ["B-PER", "I-PER", "I-PER", "O"]


def test_convert_refuses_other_spellings():
    with pytest.raises(ValueError):
        convert_tags(["B-PER", "L-PER", "U-LOC", "O"], "BIO")
    with pytest.raises(ValueError):
        convert_tags(["B_PER", "I_PER"], "BIOES")
    with pytest.raises(ValueError):
        LabelVocab(["O", "B_PER"])


def test_convert_unknown_scheme():
    with pytest.raises(ValueError):
        convert_tags(["O"], "BILOU")


@pytest.mark.parametrize("bad,fixed", [
    (["O", "I-PER", "I-PER", "O"], ["O", "B-PER", "I-PER", "O"]),       # orphan after O
    (["I-LOC", "O"], ["B-LOC", "O"]),                                   # orphan at start
    (["B-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),         # orphan after B-Y
    (["B-PER", "I-PER", "I-ORG", "O", "I-ORG"], ["B-PER", "I-PER", "B-ORG", "O", "B-ORG"]),
])
def test_repair_bio(bad, fixed):
    assert not is_valid(bad, "BIO")
    out = repair(bad, "BIO")
    assert out == fixed
    assert is_valid(out, "BIO")
    assert repair(out, "BIO") == out  # idempotent
    assert len(out) == len(bad)


def test_repair_bioes():
    bad = ["B-PER", "O", "I-LOC", "I-LOC", "E-ORG"]
    out = repair(bad, "BIOES")
    # B-PER alone -> S-PER; the orphan I-LOC run -> B/E; E-ORG after another type -> S-ORG
    assert out == ["S-PER", "O", "B-LOC", "E-LOC", "S-ORG"]
    assert is_valid(out, "BIOES")
    assert repair(out, "BIOES") == out


def test_is_valid():
    assert is_valid(["O", "B-PER", "I-PER", "B-PER", "O"], "BIO")
    assert is_valid([], "BIO")
    assert not is_valid(["O", "I-PER"], "BIO")
    assert not is_valid(["B-PER", "I-LOC"], "BIO")
    assert is_valid(["I-PER", "I-PER", "O"], "IO")
    assert not is_valid(["B-PER", "O"], "IO")
    assert is_valid(["B-PER", "I-PER", "E-PER", "S-LOC"], "BIOES")
    assert not is_valid(["B-PER", "I-PER"], "BIOES")  # unclosed
    assert not is_valid(["B-PER", "O"], "BIOES")
    assert not is_valid(["O", "B-PER"], "BIOES")  # a sentence-final B must be S in BIOES


# ----------------------------------------------------------------------------------- LabelVocab
def test_label_vocab_basic():
    v = LabelVocab(["O", "B-PER", "I-PER"])
    assert len(v) == 3
    assert v.scheme == "BIO"
    assert v.encode(["I-PER", "O", "B-PER"]) == [2, 0, 1]
    assert v.decode([1, 2, 0]) == ["B-PER", "I-PER", "O"]
    assert v.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    assert v == LabelVocab(["O", "B-PER", "I-PER"])
    assert v != LabelVocab(["O", "I-PER", "B-PER"])  # order matters
    with pytest.raises(KeyError):
        v.encode(["B-LOC"])


def test_label_vocab_rejects_bad_lists():
    with pytest.raises(ValueError, match="duplicate"):
        LabelVocab(["O", "B-PER", "O"])
    with pytest.raises(ValueError):
        LabelVocab([])
    with pytest.raises(ValueError, match="cannot be mixed"):
        LabelVocab(["O", "B-PER", "PER"])  # a typo in a span set, not a plain tag set


def test_from_sentences_order():
    v = LabelVocab.from_sentences([["I-PER", "B-LOC"], ["B-PER", "O", "I-LOC"], ["B-ORG"]])
    assert v.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER", "I-PER"]
    # 'O' is added even when absent
    assert LabelVocab.from_sentences([["B-X"]]).labels == ["O", "B-X"]


def _ok(v: LabelVocab):
    start, trans = v.allowed_transitions()
    idx = v.label2id
    return (lambda t: start[idx[t]]), (lambda a, b: trans[idx[a]][idx[b]])


def test_allowed_transitions_bio():
    v = LabelVocab(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    start, trans = v.allowed_transitions()
    assert len(start) == 5 and len(trans) == 5 and all(len(r) == 5 for r in trans)
    s, t = _ok(v)
    assert not t("O", "I-PER")
    assert t("B-PER", "I-PER")
    assert t("I-PER", "I-PER")
    assert not t("B-PER", "I-LOC")
    assert not t("I-LOC", "I-PER")
    assert t("O", "B-PER") and t("B-PER", "B-LOC") and t("I-PER", "O") and t("O", "O")
    assert not s("I-PER") and not s("I-LOC")
    assert s("O") and s("B-PER") and s("B-LOC")
    assert v.allowed_end() == [True] * 5


def test_allowed_transitions_agree_with_is_valid():
    # in BIO any valid prefix is a valid sequence, so "b may follow a" iff [ctx..., a, b] is valid,
    # where ctx makes a itself valid (an I-X needs a B-X before it)
    v = LabelVocab(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    start, trans = v.allowed_transitions()
    for i, a in enumerate(v.labels):
        assert start[i] == is_valid([a], "BIO")
        ctx = ["B-" + a[2:]] if a.startswith("I-") else []
        assert is_valid(ctx + [a], "BIO")
        for j, b in enumerate(v.labels):
            assert trans[i][j] == is_valid(ctx + [a, b], "BIO"), (a, b)


def test_allowed_transitions_bioes_and_io():
    v = LabelVocab(["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "E-LOC"])
    s, t = _ok(v)
    assert t("B-PER", "I-PER") and t("B-PER", "E-PER") and t("I-PER", "E-PER")
    assert not t("B-PER", "O") and not t("B-PER", "B-LOC") and not t("B-PER", "E-LOC")
    assert not t("E-PER", "I-PER") and not t("O", "E-PER") and not t("S-PER", "E-PER")
    assert t("E-PER", "O") and t("S-PER", "B-LOC") and t("E-PER", "S-PER")
    assert s("B-PER") and s("S-PER") and s("O") and not s("I-PER") and not s("E-PER")
    end = dict(zip(v.labels, v.allowed_end()))
    assert end == {"O": True, "B-PER": False, "I-PER": False, "E-PER": True, "S-PER": True,
                   "B-LOC": False, "E-LOC": True}
    io = LabelVocab(["O", "I-PER", "I-LOC"])
    start, trans = io.allowed_transitions()
    assert all(start) and all(all(r) for r in trans)


def test_save_load(tmp_path):
    v = LabelVocab(["O", "B-corporation", "I-corporation", "B-person"])
    p = tmp_path / "labels.json"
    v.save(p)
    assert json.loads(p.read_text(encoding="utf-8")) == v.labels
    w = LabelVocab.load(p)
    assert w == v and w.labels == v.labels and w.scheme == "BIO"


def test_read_labels_txt(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("B-PER\r\n\r\nI-PER\r\n  O  \r\n", encoding="utf-8")
    assert read_labels_txt(p).labels == ["B-PER", "I-PER", "O"]  # O kept where listed
    p.write_text("B-PER\nI-PER\nB-PER\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as ei:
        read_labels_txt(p)
    assert ei.value.line == 3 and str(p) in str(ei.value)
    p.write_text("O\nB-PER\nPERSON\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as ei:
        read_labels_txt(p)
    assert ei.value.line == 3
