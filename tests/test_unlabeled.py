"""Unlabeled text: raw text and CoNLL readers, format detection, chunking, regex tokenizer, sentence
splitter."""
from __future__ import annotations

from pathlib import Path

import pytest

from nlp_distill.data.unlabeled import detect_format, iter_unlabeled, regex_tokenize, split_sentences


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_raw_text(tmp_path):
    p = _write(tmp_path / "u.txt", "Mary Jones said hi .\n\n   \nnobody  expected   that\nZoë\n")
    assert detect_format(p) == "text"
    sents = list(iter_unlabeled(p))
    assert [s.tokens for s in sents] == [["Mary", "Jones", "said", "hi", "."], ["nobody", "expected", "that"], ["Zoë"]]
    assert all(s.tags is None for s in sents)
    assert [s.line for s in sents] == [1, 4, 5]


def test_one_tab_in_raw_text_does_not_make_it_conll(tmp_path):
    # the whole first sentence decides: prose lines of varying length are text, tab or not
    p = _write(tmp_path / "u.txt", "a\tb c\nthe second sentence is here\nand a third one\n")
    assert detect_format(p) == "text"
    assert [len(s.tokens) for s in iter_unlabeled(p)] == [3, 5, 4]  # no word dropped
    p2 = _write(tmp_path / "u2.txt", "a\tb c\n")
    assert [s.tokens for s in iter_unlabeled(p2)] == [["a", "b", "c"]]


def test_tab_separated_columns_are_conll(tmp_path):
    p = _write(tmp_path / "c.txt", "Mary\tx\nJones\ty\n\nhi\tz\n")
    assert detect_format(p) == "conll"
    assert [s.tokens for s in iter_unlabeled(p)] == [["Mary", "Jones"], ["hi"]]


def test_bom_and_non_utf8_and_binary(tmp_path):
    from nlp_distill.errors import DataFormatError

    p = tmp_path / "bom.txt"
    p.write_bytes("\ufeffZoë said hi\n".encode("utf-8"))
    assert [s.tokens for s in iter_unlabeled(p)] == [["Zoë", "said", "hi"]]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine line\nZo\xeb said hi\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.txt:2: byte 0xeb at column 3 is not utf-8"):
        list(iter_unlabeled(bad))
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"abc\x00def\n")
    with pytest.raises(DataFormatError, match="NUL byte"):
        list(iter_unlabeled(binary))


def test_raw_text_crlf(tmp_path):
    p = tmp_path / "u.txt"
    p.write_bytes("a b c\r\n\r\nd e\r\n".encode("utf-8"))
    assert [s.tokens for s in iter_unlabeled(p)] == [["a", "b", "c"], ["d", "e"]]


def test_tiny_fixture_unlabeled(tiny_dir):
    p = tiny_dir / "unlabeled.txt"
    assert detect_format(p) == "text"
    sents = list(iter_unlabeled(p))
    lines = [l for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
    assert len(sents) == len(lines)
    assert sents[0].tokens == lines[0].split()


def test_conll_without_tags(tmp_path):
    p = _write(tmp_path / "c.txt", "Mary\nJones\nsaid\nhi\n\nnobody\nexpected\n\n\nthat\n")
    assert detect_format(p) == "conll"
    sents = list(iter_unlabeled(p))
    assert [s.tokens for s in sents] == [["Mary", "Jones", "said", "hi"], ["nobody", "expected"], ["that"]]
    assert all(s.tags is None for s in sents)
    assert [s.line for s in sents] == [1, 6, 10]
    # the same file forced to "text" is one word per sentence
    assert len(list(iter_unlabeled(p, fmt="text"))) == 7


def test_conll_with_tags_ignored(tmp_path):
    p = _write(tmp_path / "c.txt", "-DOCSTART-\tO\n\nMary\tB-PER\nJones\tI-PER\n\nhi\tO\n")
    assert detect_format(p) == "conll"
    sents = list(iter_unlabeled(p))
    assert [s.tokens for s in sents] == [["Mary", "Jones"], ["hi"]]
    assert all(s.tags is None for s in sents)


def test_tiny_train_as_unlabeled(tiny_dir):
    from nlp_distill.data.conll import read_conll

    p = tiny_dir / "train.txt"
    assert detect_format(p) == "conll"
    assert [s.tokens for s in iter_unlabeled(p)] == [s.tokens for s in read_conll(p)]


def test_conll_space_separated_with_tags(tmp_path):
    # CoNLL-2003 style: columns separated by single spaces, no tab anywhere
    p = _write(tmp_path / "c.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                                   "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    assert detect_format(p) == "conll"
    assert [s.tokens for s in iter_unlabeled(p)] == [["EU", "rejects"], ["Peter", "Blackburn"]]


def test_detect_format_edge_cases(tmp_path):
    assert detect_format(_write(tmp_path / "e.txt", "")) == "text"
    assert detect_format(_write(tmp_path / "b.txt", "\n\n")) == "text"
    # prose whose lines happen to have two words is still text
    assert detect_format(_write(tmp_path / "two.txt", "hello world\ngood morning\n\nsee you\n")) == "text"
    # one word per line but no sentence breaks: text (one-word sentences)
    assert detect_format(_write(tmp_path / "w.txt", "hello\nworld\n")) == "text"


def test_unknown_format(tmp_path):
    p = _write(tmp_path / "u.txt", "a b\n")
    with pytest.raises(ValueError):
        list(iter_unlabeled(p, fmt="json"))


@pytest.mark.parametrize("fmt", ["text", "conll"])
def test_max_words_splitting_keeps_all_words(tmp_path, fmt):
    long = [f"w{i}" for i in range(23)]
    short = ["a", "b", "c"]
    if fmt == "text":
        p = _write(tmp_path / "u.txt", " ".join(long) + "\n" + " ".join(short) + "\n")
    else:
        p = _write(tmp_path / "u.txt", "\n".join(long) + "\n\n" + "\n".join(short) + "\n")
    sents = list(iter_unlabeled(p, fmt=fmt, max_words=5))
    # 23 words -> chunks of 5,5,5,5,3; the 3-word sentence stays whole
    assert [len(s) for s in sents] == [5, 5, 5, 5, 3, 3]
    assert [t for s in sents[:5] for t in s.tokens] == long
    assert sents[-1].tokens == short
    assert all(len(s) <= 5 for s in sents)
    assert len({s.line for s in sents[:5]}) == 1  # chunks point at the sentence's line
    # exactly max_words is not split; None keeps everything whole
    assert [len(s) for s in iter_unlabeled(p, fmt=fmt, max_words=23)] == [23, 3]
    assert [len(s) for s in iter_unlabeled(p, fmt=fmt)] == [23, 3]


def test_iter_unlabeled_streams(tmp_path):
    p = _write(tmp_path / "u.txt", "a b\nc d\n")
    it = iter_unlabeled(p)
    assert next(it).tokens == ["a", "b"]
    assert next(it).tokens == ["c", "d"]
    with pytest.raises(StopIteration):
        next(it)


# ------------------------------------------------------------------------------ regex tokenizer
@pytest.mark.parametrize("text,tokens", [
    ("Hello, world!", ["Hello", ",", "world", "!"]),
    ("the State-of-the-Union address", ["the", "State-of-the-Union", "address"]),
    ("we don't stop", ["we", "don't", "stop"]),
    ("rock’n’roll", ["rock’n’roll"]),
    ("$5.00 (approx.)", ["$", "5", ".", "00", "(", "approx", ".", ")"]),
    ("end- and -start", ["end", "-", "and", "-", "start"]),
    ("São Paulo 1999", ["São", "Paulo", "1999"]),
    ("  ", []),
    ("", []),
])
def test_regex_tokenize(text, tokens):
    assert regex_tokenize(text) == tokens


def test_regex_tokenize_loses_only_whitespace():
    text = "Mr. O'Neil's 3-to-1 vote -- \"historic\" (really)?!"
    assert "".join(regex_tokenize(text)) == "".join(text.split())


# ------------------------------------------------------------------------------ sentence splitter
@pytest.mark.parametrize("text,sents", [
    ("It rained. We left.", ["It rained.", "We left."]),
    ("Really? Yes! 5 people came.", ["Really?", "Yes!", "5 people came."]),
    ("It is 3.5 percent. ok? fine.", ["It is 3.5 percent. ok? fine."]),  # no capital after: no split
    ("One.\n\n  Two  words.", ["One.", "Two words."]),
    ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
    ("(It rained.) Next day.", ["(It rained.)", "Next day."]),
    ('Stop. "Why?" she asked.', ["Stop.", '"Why?" she asked.']),
    ("", []),
    ("   ", []),
])
def test_split_sentences(text, sents):
    assert split_sentences(text) == sents


def test_split_sentences_loses_only_whitespace():
    text = 'We met. "It works." (Good.) Then 2 more! Done?'
    parts = split_sentences(text)
    assert len(parts) == 5
    assert "".join("".join(p.split()) for p in parts) == "".join(text.split())


def test_space_separated_pos_conll_is_conll(tmp_path):
    # "token POS" columns split by spaces (no tab, no B-/I- tag): the tags are not words
    p = _write(tmp_path / "pos.txt", "The DT\nman NN\nsaw VBD\nher PRP$\n. .\n\nHe PRP\nleft VBD\n")
    assert detect_format(p) == "conll"
    assert [s.tokens for s in iter_unlabeled(p)] == [["The", "man", "saw", "her", "."], ["He", "left"]]
    # UD tags, three columns
    p2 = _write(tmp_path / "ud.txt", "Mary Mary PROPN\nleft leave VERB\n, , PUNCT\n\nBye bye INTJ\n")
    assert detect_format(p2) == "conll"
    # prose lines of equal length ending in capitals, with no blank line, stay text
    assert detect_format(_write(tmp_path / "t.txt", "we met IBM\nthey saw NASA\nI said OK\n")) == "text"
    assert detect_format(_write(tmp_path / "l.txt", "The man\nsaw her\nleave now\n\nok\n")) == "text"
