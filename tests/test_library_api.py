"""The library functions the procedures are built from: teachers from paths, a student from its
configs, transfer sets (augment or read text -> teacher labels -> store)."""
from __future__ import annotations

import pytest
import torch

from nlp_distill.config import AugmentConfig, StudentDataConfig, TaggerConfig, TransformerConfig
from nlp_distill.data.augment import augment_corpus, iter_augment
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.ensemble import TeacherEnsemble
from nlp_distill.distill.pseudo_label import pseudo_tags
from nlp_distill.distill.teachers import load_teacher, teacher_paths, teacher_scores
from nlp_distill.distill.transfer_set import label_augmented, label_copies_in_memory, label_text, write_store_labels
from nlp_distill.errors import ConfigError
from nlp_distill.metrics import evaluate_split
from nlp_distill.models.student import build_student
from nlp_distill.models.transformer import TransformerTokenClassifier
from tests.conftest import TINY

DATA = load_data_dir(TINY)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder_dir):
    torch.manual_seed(0)
    clf = TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), labels=DATA.labels,
                                                     config=TransformerConfig(max_seq_length=32, precision="fp32"))
    folder = tmp_path_factory.mktemp("teacher")
    clf.save_pretrained(folder)
    return folder


def test_teacher_paths_split_comma_lists():
    assert teacher_paths("a, b,") == ["a", "b"]
    assert teacher_paths(["a,b", "c"]) == ["a", "b", "c"]
    assert teacher_paths([]) == []


def test_load_teacher_from_one_path_a_comma_list_and_a_list(teacher_dir):
    one = load_teacher(str(teacher_dir), max_seq_len=16)
    assert isinstance(one, TransformerTokenClassifier) and one.config.max_seq_length == 16
    for paths in (f"{teacher_dir},{teacher_dir}", [str(teacher_dir), str(teacher_dir)]):
        ens = load_teacher(paths)
        assert isinstance(ens, TeacherEnsemble) and len(ens.members) == 2
    with pytest.raises(ConfigError, match="--teacher_model_path is required"):
        load_teacher("")


def test_teacher_scores_are_the_teachers_own_dev_and_test_scores(teacher_dir):
    teacher = load_teacher(str(teacher_dir))
    scores = teacher_scores(teacher, DATA.dev, DATA.test)
    assert scores["members"] == 1
    for split, sents in (("dev", DATA.dev), ("test", DATA.test)):
        assert scores[split]["f1"] == evaluate_split(teacher.predict, sents)["f1"]
    assert teacher_scores(teacher, DATA.dev)["test"] is None


def test_build_student_takes_its_vocabulary_from_the_given_sentences_only():
    cfg = TaggerConfig(hidden=8, word_emb_dim=8, char_emb_dim=4, char_hidden=4)
    model = build_student(cfg, StudentDataConfig(embedding_file="none"), DATA.train, DATA.labels)
    train_words = {w.lower() if cfg.lowercase else w for s in DATA.train for w in s.tokens}
    assert set(model.word_vocab.itos[2:]) <= train_words
    assert model.labels == DATA.labels and model.config.hidden == 8


def test_label_augmented_stores_the_operator_copies_with_teacher_logits(teacher_dir, tmp_path):
    teacher = load_teacher(str(teacher_dir))
    train = DATA.train[:6]
    augment = AugmentConfig(copies=2, ops=["token", "mention"], seed=3)
    store = label_augmented(teacher, train, augment, DATA.labels.scheme, tmp_path / "aug", batch_size=4,
                            show_progress=False)
    expected = [s.tokens for _, s in iter_augment(train, 2, ["token", "mention"], 3, DATA.labels.scheme)]
    assert expected and list(store.iter_tokens()) == expected
    want = teacher.word_logits(expected[:2])
    for i in range(2):
        assert torch.allclose(torch.tensor(store.sentence(i), dtype=torch.float32),
                              torch.as_tensor(want[i]), atol=1e-2)  # stored as fp16
    n, accepted = write_store_labels(store, len(store), 0.0, tmp_path / "aug.txt")
    assert n == accepted == len(expected)


def test_label_text_reads_text_into_a_store_and_names_a_missing_file(teacher_dir, tmp_path):
    teacher = load_teacher(str(teacher_dir))
    text = tmp_path / "u.txt"
    text.write_text("the cat sat\n\nin London today\nnew line here\n", encoding="utf-8")
    store = label_text(teacher, text, tmp_path / "store", limit=2, show_progress=False)
    assert len(store) == 2 and len(store.sentence(0)) == len(next(iter(store.iter_tokens())))
    with pytest.raises(ConfigError, match="no such file"):
        label_text(teacher, tmp_path / "missing.txt", tmp_path / "s2", show_progress=False)


def test_label_copies_in_memory_tags_the_copies_with_the_teachers_repaired_argmax(teacher_dir, tmp_path):
    teacher = load_teacher(str(teacher_dir))
    train = DATA.train[:5]
    augment = AugmentConfig(copies=1, ops=["token"], seed=1)
    sents, targets = label_copies_in_memory(teacher, train, augment, DATA.labels.scheme, tmp_path / "a.txt",
                                            soft_targets=True)
    copies = augment_corpus(train, 1, ["token"], 1, DATA.labels.scheme)
    assert [s.tokens for s in sents] == [s.tokens for s in train] + [s.tokens for s in copies]
    assert sents[: len(train)] == list(train) and len(targets) == len(sents)
    for s, lg in zip(sents[len(train):], targets[len(train):]):
        assert s.tags == pseudo_tags(lg, teacher.labels)[0]
    assert (tmp_path / "a.txt").is_file()


def test_the_documented_distillation_run_runs(tiny_encoder_dir, tmp_path):
    """docs/api.md's complete run (teacher, then a student from gold, copies and unlabeled text),
    executed as written with the tiny fixtures: only its first line of settings is changed."""
    from tools.api_docs import HEADER

    code = next(block for block in HEADER.split("```python\n")[1:] if "distil_student(" in block).split("```")[0]
    settings = 'DATA, ENCODER, RUNS = "data/wnut16", "minilm", "runs"'
    assert settings in code
    code = code.replace(settings, f"DATA, ENCODER, RUNS = {str(TINY)!r}, {str(tiny_encoder_dir)!r}, {str(tmp_path)!r}")
    scope: dict = {}
    exec(compile(code, "docs/api.md", "exec"), scope)
    teacher, student = scope["teacher"], scope["student"]
    assert student.output_dir == tmp_path / "student" and (tmp_path / "student" / "model" / "config.json").is_file()
    assert student.metrics["teacher"]["dev"]["f1"] == teacher.metrics["dev"]["f1"]  # the teacher it was given
    assert (tmp_path / "student" / "augmented.txt").is_file() and (tmp_path / "student" / "pseudo_labeled.txt").is_file()
    tags = student.model.predict([["Mary", "flew", "to", "New", "York"]])
    assert len(tags[0]) == 5 and set(tags[0]) <= set(DATA.labels.labels)
