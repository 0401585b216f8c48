"""CoNLL reading/writing and data-dir loading: round trips, tolerated variants, located errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from nlp_distill.data.conll import Sentence, iter_conll, read_conll, write_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.errors import DataFormatError


def _write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def _assert_located(err: DataFormatError, path: Path, line):
    msg = str(err)
    assert str(path) in msg
    assert err.path == str(path)
    assert err.line == line
    if line is not None:
        assert f"{path}:{line}:" in msg


# --------------------------------------------------------------------------- reading / writing
def test_write_read_round_trip(tmp_path):
    sents = [
        Sentence(["Mary", "Jones", "visited", "Zoë's", "São"], ["B-PER", "I-PER", "O", "B-PER", "B-LOC"]),
        Sentence(["."], ["O"]),
        Sentence(["we", "flew", "to", "New", "York"], ["O", "O", "O", "B-LOC", "I-LOC"]),
    ]
    out = tmp_path / "sub" / "out.txt"  # parent folder is created
    write_conll(out, sents)
    back = read_conll(out)
    assert back == sents  # Sentence equality ignores .line
    # line numbers: sentence 1 at line 1, sentence 2 after 5 tokens + 1 blank, sentence 3 after that
    assert [s.line for s in back] == [1, 7, 9]
    assert not (tmp_path / "sub" / "out.txt.tmp").exists()


def test_write_untagged_and_extra_columns(tmp_path):
    out = tmp_path / "u.txt"
    write_conll(out, [Sentence(["a", "b"]), Sentence(["c"])])
    assert out.read_text(encoding="utf-8") == "a\nb\n\nc\n\n"
    back = read_conll(out, tag_column=None)
    assert [s.tokens for s in back] == [["a", "b"], ["c"]]
    assert all(s.tags is None for s in back)

    out2 = tmp_path / "x.txt"
    write_conll(out2, [Sentence(["a", "b"], ["O", "B-X"])], extra=[[0.5, 0.25]])
    assert out2.read_text(encoding="utf-8") == "a\tO\t0.5\nb\tB-X\t0.25\n\n"
    # the tag is the middle column of the 3-column file
    assert read_conll(out2, tag_column=1)[0].tags == ["O", "B-X"]


def test_write_rejects_whitespace_token(tmp_path):
    with pytest.raises(ValueError):
        write_conll(tmp_path / "bad.txt", [Sentence(["a b"], ["O"])])
    with pytest.raises(ValueError):
        write_conll(tmp_path / "bad2.txt", [Sentence([""], ["O"])])


def test_docstart_skipped(tmp_path):
    p = _write(tmp_path / "d.txt", "-DOCSTART- -X- -X- O\n\nEU B-ORG\nrejects O\n\n-DOCSTART- -X- -X- O\n\nPeter B-PER\n")
    sents = read_conll(p)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter"]]
    assert [s.tags for s in sents] == [["B-ORG", "O"], ["B-PER"]]
    assert [s.line for s in sents] == [3, 8]


def test_crlf_file(tmp_path):
    text = "Mary\tB-PER\nJones\tI-PER\n\nhi\tO\n"
    lf = read_conll(_write(tmp_path / "lf.txt", text))
    crlf = read_conll(_write(tmp_path / "crlf.txt", text, newline="\r\n"))
    assert crlf == lf
    assert crlf[0].tags == ["B-PER", "I-PER"]  # no stray "\r" in the tags
    assert crlf[1].tokens == ["hi"] and crlf[1].line == 4


def test_whitespace_only_separator_lines(tmp_path):
    p = _write(tmp_path / "w.txt", "a\tO\nb\tB-X\n\t\nc\tO\n   \n\nd\tI-X\n \t \n")
    sents = read_conll(p)
    assert [s.tokens for s in sents] == [["a", "b"], ["c"], ["d"]]
    assert [s.line for s in sents] == [1, 4, 7]


def test_space_separated_columns(tmp_path):
    p = _write(tmp_path / "s.txt", "EU  NNP B-ORG\nrejects VBZ   O\n")
    assert read_conll(p)[0].tags == ["B-ORG", "O"]


def test_tag_column_selection(tmp_path):
    p = _write(tmp_path / "three.txt", "EU\tB-NP\tB-ORG\nrejects\tB-VP\tO\n\nPeter\tB-NP\tB-PER\n")
    last = read_conll(p)
    assert [s.tags for s in last] == [["B-ORG", "O"], ["B-PER"]]
    assert [s.tags for s in read_conll(p, tag_column=2)] == [["B-ORG", "O"], ["B-PER"]]
    mid = read_conll(p, tag_column=1)
    assert [s.tags for s in mid] == [["B-NP", "B-VP"], ["B-NP"]]
    assert [s.tokens for s in mid] == [["EU", "rejects"], ["Peter"]]
    assert [s.tags for s in read_conll(p, tag_column=-2)] == [["B-NP", "B-VP"], ["B-NP"]]
    with pytest.raises(DataFormatError) as ei:
        read_conll(p, tag_column=5)
    _assert_located(ei.value, p, 1)


def test_tag_column_none(tmp_path):
    p = _write(tmp_path / "three.txt", "EU\tB-NP\tB-ORG\nrejects\tB-VP\tO\n\nPeter\tB-NP\tB-PER\n")
    sents = read_conll(p, tag_column=None)
    assert [s.tokens for s in sents] == [["EU", "rejects"], ["Peter"]]
    assert all(s.tags is None for s in sents)
    one_col = _write(tmp_path / "one.txt", "a\nb\n\nc\n")
    assert [s.tokens for s in read_conll(one_col, tag_column=None)] == [["a", "b"], ["c"]]


def test_iter_conll_is_lazy(tmp_path):
    # the first sentence is yielded before the malformed line 5 is reached
    p = _write(tmp_path / "l.txt", "a\tO\nb\tO\n\nc\tO\nbroken\n")
    it = iter_conll(p)
    assert next(it).tokens == ["a", "b"]
    with pytest.raises(DataFormatError) as ei:
        next(it)
    _assert_located(ei.value, p, 5)


# ------------------------------------------------------------------------------ malformed files
def test_single_column_line(tmp_path):
    p = _write(tmp_path / "m.txt", "a\tO\nb\tO\n\nc\tO\nlonely\nd\tO\n")
    with pytest.raises(DataFormatError) as ei:
        read_conll(p)
    _assert_located(ei.value, p, 5)


def test_single_column_line_crlf(tmp_path):
    p = _write(tmp_path / "m.txt", "a\tO\n\t\nlonely\n", newline="\r\n")
    with pytest.raises(DataFormatError) as ei:
        read_conll(p)
    _assert_located(ei.value, p, 3)


def test_inconsistent_column_count(tmp_path):
    # the count is fixed by the file's first token line, also across sentence breaks
    p = _write(tmp_path / "c.txt", "a\tNN\tO\nb\tNN\tO\n\nc\tNN\tO\nd\tO\n")
    with pytest.raises(DataFormatError) as ei:
        read_conll(p)
    _assert_located(ei.value, p, 5)
    p2 = _write(tmp_path / "c2.txt", "a\tO\nb\tNN\tO\n")
    with pytest.raises(DataFormatError) as ei:
        read_conll(p2)
    _assert_located(ei.value, p2, 2)


def test_tag_not_allowed(tmp_path):
    p = _write(tmp_path / "t.txt", "a\tO\n\nb\tB-PER\nc\tB-MISC\n")
    assert read_conll(p, allowed_tags=["O", "B-PER", "B-MISC"])[1].tags == ["B-PER", "B-MISC"]
    with pytest.raises(DataFormatError) as ei:
        read_conll(p, allowed_tags=["O", "B-PER", "I-PER"])
    _assert_located(ei.value, p, 4)
    assert "B-MISC" in str(ei.value)


@pytest.mark.parametrize("content", ["", "\n\n", " \t\n\n", "-DOCSTART- -X- O\n\n"])
def test_empty_file(tmp_path, content):
    p = _write(tmp_path / "e.txt", content)
    with pytest.raises(DataFormatError) as ei:
        read_conll(p)
    _assert_located(ei.value, p, None)
    assert list(iter_conll(p)) == []  # streaming an empty file is fine; read_conll complains


# ----------------------------------------------------------------------------- load_data_dir
def _tiny_copy(tiny_dir: Path, **files: str) -> Path:
    for name, text in files.items():
        _write(tiny_dir / name, text)
    return tiny_dir


def test_load_data_dir_derives_labels(tmp_path):
    d = _tiny_copy(tmp_path,
                   **{"train.txt": "Rome\tB-LOC\nis\tO\n\nKim\tB-PER\nLee\tI-PER\nat\tO\nAcme\tB-ORG\nNew\tB-LOC\nYork\tI-LOC\n",
                      "dev.txt": "Kim\tB-PER\nx\tO\n"})
    data = load_data_dir(d)
    # 'O' first, then types alphabetically, B before I
    assert data.labels.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "B-PER", "I-PER"]
    assert len(data.train) == 2 and len(data.dev) == 1 and data.test == []
    assert data.unlabeled_path is None
    # stable: the same data in another sentence order gives the same labels
    _write(d / "train.txt", "Kim\tB-PER\nLee\tI-PER\nat\tO\nAcme\tB-ORG\nNew\tB-LOC\nYork\tI-LOC\n\nRome\tB-LOC\nis\tO\n")
    assert load_data_dir(d).labels.labels == data.labels.labels


def test_load_tiny_fixture(tiny_dir):
    data = load_data_dir(tiny_dir)
    assert data.labels.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert data.train and data.dev and data.test
    assert data.unlabeled_path == tiny_dir / "unlabeled.txt"
    for split in (data.train, data.dev, data.test):
        for s in split:
            assert len(s.tokens) == len(s.tags)


def test_load_data_dir_uses_labels_txt(tiny_dir):
    # a custom order, no 'O' (it is added first), and an extra label absent from the data
    _write(tiny_dir / "labels.txt", "B-PER\nI-PER\n\nB-ORG\nI-ORG\nB-LOC\nI-LOC\nB-MISC\n")
    data = load_data_dir(tiny_dir)
    assert data.labels.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC"]
    assert data.labels.label2id["B-PER"] == 1


def test_load_data_dir_dev_tag_not_in_labels_txt(tiny_dir):
    _write(tiny_dir / "labels.txt", "O\nB-PER\nI-PER\nB-ORG\nI-ORG\nB-LOC\nI-LOC\n")
    dev = tiny_dir / "dev.txt"
    lines = dev.read_text(encoding="utf-8").splitlines()
    # line 3 ("all O") gets a tag outside the list
    assert lines[2].split("\t")[1] == "O"
    lines[2] = lines[2].split("\t")[0] + "\tB-MISC"
    _write(dev, "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as ei:
        load_data_dir(tiny_dir)
    _assert_located(ei.value, dev, 3)
    assert "B-MISC" in str(ei.value)


def test_load_data_dir_dev_tag_not_in_derived_labels(tiny_dir):
    dev = tiny_dir / "dev.txt"
    _write(dev, dev.read_text(encoding="utf-8").rstrip("\n") + "\n\nFoo\tB-MISC\n")
    n_lines = len(dev.read_text(encoding="utf-8").splitlines())
    with pytest.raises(DataFormatError) as ei:
        load_data_dir(tiny_dir)
    _assert_located(ei.value, dev, n_lines)


def test_load_data_dir_malformed_train_tag(tmp_path):
    # no labels.txt: labels come from train, and a tag that is not O / B-X / I-X ... is located
    d = _tiny_copy(tmp_path, **{"train.txt": "a\tO\n\nKim\tB-PER\nLee\tPER\n", "dev.txt": "a\tO\n"})
    with pytest.raises(DataFormatError) as ei:
        load_data_dir(d)
    _assert_located(ei.value, d / "train.txt", 4)


def test_load_data_dir_missing_dev(tiny_dir):
    (tiny_dir / "dev.txt").unlink()
    with pytest.raises(FileNotFoundError, match="dev.txt"):
        load_data_dir(tiny_dir)


def test_load_data_dir_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_data_dir(tmp_path / "nope")


def test_load_data_dir_test_optional(tiny_dir):
    (tiny_dir / "test.txt").unlink()
    data = load_data_dir(tiny_dir)
    assert data.test == []
