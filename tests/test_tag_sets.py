"""Tag sets beyond BIO: plain tags (POS) scored per token, chunking in BIO and IOB1, BILOU and
``B_PER`` spellings read like their BIO equivalents."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nlp_distill.config import AugmentConfig, KDConfig, StudentDataConfig, StudentTrainerConfig, TaggerConfig
from nlp_distill.data.conll import Sentence, write_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab, convert_tags, entity_spans, split_tag
from nlp_distill.errors import DataFormatError
from nlp_distill.metrics import tagging_metrics
from tests.conftest import FIXTURES, TINY
from tests.test_hf_teacher import make_hf_classifier

POS, CHUNK = FIXTURES / "pos", FIXTURES / "chunk"
TINY_TAGGER = TaggerConfig(hidden=16, word_emb_dim=16, char_emb_dim=8, char_hidden=8)
NO_VECTORS = StudentDataConfig(embedding_file="none")


def _rewrite(src: Path, dst: Path, fn, columns: int = 2) -> Path:
    """``src`` data dir with every sentence's tags passed through ``fn`` (tags in the last column)."""
    dst.mkdir(parents=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        lines = []
        for block in (src / name).read_text(encoding="utf-8").strip().split("\n\n"):
            rows = [r.split() for r in block.splitlines()]
            for r, t in zip(rows, fn([r[-1] for r in rows])):
                lines.append(" ".join(r[:-1] + [t]))
            lines.append("")
        (dst / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def to_iob1(tags):
    """BIO -> IOB1: an entity opens with I-, B- only where it directly follows one of its type."""
    out, prev = [], (None, None)
    for t in tags:
        p, typ = split_tag(t)
        out.append(t if p != "B" or prev == ("I", typ) or prev == ("B", typ) else f"I-{typ}")
        prev = (p, typ)
    return out


def test_plain_tag_sets_score_per_token_and_per_tag():
    gold = [["DT", "NN", "VBD"], ["PRP", "VBD"]]
    pred = [["DT", "NN", "NN"], ["PRP", "VBD"]]
    m = tagging_metrics(gold, pred)
    assert m["scheme"] == "plain" and m["accuracy"] == pytest.approx(4 / 5) and m["f1"] == m["accuracy"]
    assert m["per_type"]["NN"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["per_type"]["VBD"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert tagging_metrics([["O", "B-PER"]], [["O", "B-PER"]])["scheme"] == "span"


def test_tagger_trains_on_pos_and_reports_token_accuracy_and_per_tag_scores(tmp_path):
    from procedures.tagger import do_training

    d = load_data_dir(POS)
    assert d.labels.scheme == "plain" and "O" not in d.labels.labels
    m = do_training(POS, tmp_path / "pos", TINY_TAGGER, StudentTrainerConfig(epochs=2, show_progress=False), NO_VECTORS)
    for split in ("dev", "test"):
        assert m[split]["scheme"] == "plain" and 0.0 < m[split]["accuracy"] <= 1.0
        assert m[split]["f1"] == m[split]["accuracy"]  # the selection metric follows token accuracy
        assert set(m[split]["per_type"]) >= {"DT", "NN", "VBD"}  # per POS tag, not per entity type


def test_tagger_kd_on_pos_with_a_tiny_teacher(tmp_path):
    from procedures.tagger_kd import do_kd_training

    d = load_data_dir(POS)
    teacher = make_hf_classifier(tmp_path / "teacher", list(reversed(d.labels.labels)))
    m = do_kd_training(POS, tmp_path / "kd", TINY_TAGGER, StudentTrainerConfig(epochs=1, show_progress=False),
                       NO_VECTORS, KDConfig(teacher_model_path=str(teacher)), AugmentConfig(copies=1))
    assert m["dev"]["scheme"] == "plain" and m["teacher"]["dev"]["scheme"] == "plain"
    aug = (tmp_path / "kd" / "augmented.txt").read_text(encoding="utf-8").split()
    assert set(aug[1::3]) <= set(d.labels.labels)  # teacher tags of the copies: POS tags


def test_chunks_in_iob1_and_bio_are_the_same_chunks(tmp_path):
    bio = load_data_dir(CHUNK)
    iob1_dir = _rewrite(CHUNK, tmp_path / "iob1", to_iob1)
    raw = (iob1_dir / "train.txt").read_text(encoding="utf-8")
    assert "B-NP" in raw and "I-NP\nthe DT I-NP" not in raw  # really IOB1: NPs open with I-, B- separates
    iob1 = load_data_dir(iob1_dir)
    assert iob1.labels == bio.labels and bio.labels.scheme == "BIO"
    for a, b in zip(bio.train + bio.dev + bio.test, iob1.train + iob1.dev + iob1.test):
        assert a.tags == b.tags
    adjacent = [s for s in bio.train if any(split_tag(s.tags[i])[0] == "B" and s.tags[i - 1] == "I-NP"
                                            for i in range(1, len(s.tags)))]
    assert adjacent  # two adjacent NPs: the case where IOB1 needs its B-
    pred = [["O"] * len(s.tags[:2]) + s.tags[2:] for s in bio.dev]
    assert tagging_metrics([s.tags for s in iob1.dev], pred) == tagging_metrics([s.tags for s in bio.dev], pred)


@pytest.mark.parametrize("spelling", ["BILOU", "underscore"])
def test_bilou_and_underscore_files_read_and_score_like_bio(tmp_path, spelling):
    bio = load_data_dir(TINY)
    if spelling == "BILOU":
        fn = lambda tags: [t.replace("E-", "L-").replace("S-", "U-") for t in convert_tags(tags, "BIOES")]
    else:
        fn = lambda tags: [t.replace("-", "_", 1) for t in tags]
    folder = _rewrite(TINY, tmp_path / spelling, fn)
    assert ("U-PER" if spelling == "BILOU" else "B_PER") in (folder / "train.txt").read_text(encoding="utf-8")
    other = load_data_dir(folder)
    for a, b in zip(bio.train + bio.dev, other.train + other.dev):
        assert entity_spans(a.tags) == entity_spans(b.tags)
        assert b.tags == (convert_tags(a.tags, "BIOES") if spelling == "BILOU" else a.tags)
    pred = [s.tags[::-1] for s in bio.dev]  # some right, some wrong
    want = tagging_metrics([s.tags for s in bio.dev], pred)
    got = tagging_metrics([s.tags for s in other.dev], [convert_tags(p, other.labels.scheme) for p in pred])
    assert 0 < want["f1"] < 1 and got["f1"] == pytest.approx(want["f1"]) and got["per_type"] == want["per_type"]


def test_a_file_mixing_span_and_plain_tags_names_its_line(tmp_path):
    d = tmp_path / "mixed"
    shutil.copytree(TINY, d)
    sents = load_data_dir(TINY).dev
    write_conll(d / "dev.txt", [Sentence(sents[0].tokens, sents[0].tags[:-1] + ["PER"])] + sents[1:])
    with pytest.raises(DataFormatError, match=r"dev.txt:\d+: tag 'PER' has no B-/I-/E-/S- prefix"):
        load_data_dir(d)
    with pytest.raises(ValueError, match="cannot be mixed"):
        LabelVocab(["O", "B-PER", "PER"])
