"""A distilled student speaks its teacher's labels: without labels.txt the teacher's label list is
the student's (the data's tags must be among them), labels.txt still overrides, and a folder of
unlabeled text alone distils a student whose best epoch is picked by agreement with the teacher."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nlp_distill.config import KDConfig, PseudoConfig, StudentDataConfig, StudentTrainerConfig, TaggerConfig
from nlp_distill.data.conll import read_conll
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.data.labels import LabelVocab
from nlp_distill.distill.agreement import heldout_size
from nlp_distill.distill.teachers import teacher_labels
from nlp_distill.errors import DataFormatError, LabelMismatchError
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.training.student import distil_student
from procedures.cli import nlp_train
from tests.conftest import TINY
from tests.option_probe import STUDENT_ARGS, invoke

# the tiny data's 7 labels plus MISC, in an order of the teacher's own (not the derived order)
WIDE = ["O", "B-PER", "I-PER", "B-MISC", "I-MISC", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def save_teacher(folder: Path, encoder_dir: Path, labels, seed: int = 0) -> Path:
    """A tiny random teacher of this library predicting ``labels`` (entities in its output)."""
    from nlp_distill.config import TransformerConfig
    from nlp_distill.models.transformer import TransformerTokenClassifier

    torch.manual_seed(seed)
    t = TransformerTokenClassifier.from_pretrained(str(encoder_dir), labels=LabelVocab(labels),
                                                   config=TransformerConfig(max_seq_length=32, precision="fp32"))
    with torch.no_grad():
        t.model.classifier.weight.normal_(0, 1.0)
    t.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wide_teacher(tmp_path_factory, tiny_encoder_dir) -> Path:
    return save_teacher(tmp_path_factory.mktemp("wide") / "teacher", tiny_encoder_dir, WIDE)


def _student_labels(run: Path):
    return NeuralTagger.from_pretrained(run / "model").labels.labels


def _errors(r):
    return [line for line in r.output.splitlines() if line.startswith("Error")]


def _kd(command, data, out, teacher, *extra):
    return invoke(nlp_train, [command, "--data_dir", data, "--output_dir", out, "--teacher_model_path", teacher,
                              *STUDENT_ARGS, *extra])


def test_unlabeled_text_alone_distils_the_teachers_labels_picked_by_agreement(wide_teacher, tmp_path):
    data = tmp_path / "text"
    data.mkdir()
    shutil.copy(TINY / "unlabeled.txt", data / "unlabeled.txt")  # 40 sentences, no train/dev/test/labels
    r = _kd("tagger_kd_pseudo", data, tmp_path / "run", wide_teacher)
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.output.splitlines()[-1].startswith("agreement F1 with the teacher ")  # the result line, not "dev F1"
    run = tmp_path / "run"
    assert _student_labels(run) == WIDE  # the teacher's labels, in its order
    m = json.loads((run / "metrics.json").read_text())
    assert m["dev_tags"] == "teacher" and m["agreement"]["dev"] == m["dev"]
    assert m["dev"]["n_sentences"] == heldout_size(40) == 8 and "held out" in m["agreement"]["text"]
    assert m["test"] is None and m["teacher"]["dev"] is None
    # the held-out sentences are not trained on: the teacher's tags of the other 32 only
    assert len(read_conll(run / "pseudo_labeled.txt")) == 32
    log = (run / "run.log").read_text()
    assert "picked by agreement F1 with the teacher" in log and "agreement F1 with the teacher: dev" in log
    card = (run / "model" / "README.md").read_text()
    assert "dev, agreement with the teacher" in card and "by agreement with it on held-out text" in card


def test_unlabeled_text_with_gold_dev_and_test_reports_gold_f1_and_agreement(wide_teacher, tmp_path):
    data = tmp_path / "text"
    data.mkdir()
    for f in ("unlabeled.txt", "dev.txt", "test.txt"):
        shutil.copy(TINY / f, data / f)
    r = _kd("tagger_kd_pseudo", data, tmp_path / "run", wide_teacher)
    assert r.exit_code == 0, (r.output, r.exception)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["dev_tags"] == "gold" and m["dev"]["n_sentences"] == 20 and m["teacher"]["dev"]["n_sentences"] == 20
    assert m["agreement"]["dev"]["n_sentences"] == 20 and m["agreement"]["test"]["n_sentences"] == 20
    assert m["agreement"]["dev"] != m["dev"]  # scored against the teacher's tags, not the gold ones
    assert len(read_conll(tmp_path / "run" / "pseudo_labeled.txt")) == 40  # nothing held out
    last = r.output.splitlines()[-1]
    assert last.startswith("dev F1") and "test F1" in last and "agreement F1 with the teacher: dev" in last


def _dev_with_a_tag_train_lacks(tmp_path) -> Path:
    """The tiny data with one dev word tagged B-MISC, a type train.txt never has."""
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    lines = (data / "dev.txt").read_text(encoding="utf-8").splitlines()
    k = next(i for i, l in enumerate(lines) if l.endswith("\tO"))
    lines[k] = lines[k][: -len("O")] + "B-MISC"
    (data / "dev.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def test_dev_tags_train_lacks_but_the_teacher_knows_need_no_labels_txt(wide_teacher, tmp_path):
    data = _dev_with_a_tag_train_lacks(tmp_path)
    r = invoke(nlp_train, ["tagger", "--data_dir", data, "--output_dir", tmp_path / "gold", *STUDENT_ARGS[:-5]])
    err = _errors(r)  # without a teacher the labels come from train.txt: the error says so and how to fix it
    assert len(err) == 1 and "'B-MISC'" in err[0] and "derived from" in err[0] and "labels.txt" in err[0], r.output
    r = _kd("tagger_kd", data, tmp_path / "kd", wide_teacher)
    assert r.exit_code == 0, (r.output, r.exception)
    assert _student_labels(tmp_path / "kd") == WIDE


def test_transformer_kd_takes_the_teachers_labels_too(wide_teacher, tmp_path):
    data = _dev_with_a_tag_train_lacks(tmp_path)
    r = invoke(nlp_train, ["transformer_kd", "--data_dir", data, "--output_dir", tmp_path / "tkd", "--teacher_model_path",
                           wide_teacher, "--num_student_layers", 1, "--epochs", 1, "--augment", 0, "--batch_size", 8,
                           "--device", "cpu", "--no_show_progress"])
    assert r.exit_code == 0, (r.output, r.exception)
    from nlp_distill.models.loader import load_model

    assert load_model(tmp_path / "tkd").labels.labels == WIDE


def test_data_tags_outside_the_teachers_labels_are_one_error_naming_both_sides(tiny_encoder_dir, tmp_path):
    teacher = save_teacher(tmp_path / "teacher", tiny_encoder_dir, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"])
    for command in ("tagger_kd", "tagger_kd_pseudo"):
        r = _kd(command, TINY, tmp_path / command, teacher)
        err = _errors(r)
        assert r.exit_code != 0 and len(err) == 1, r.output
        assert "['B-ORG', 'I-ORG']" in err[0] and "['B-MISC']" in err[0] and "train.txt:" in err[0], err[0]
    with pytest.raises(LabelMismatchError, match=r"\['B-ORG', 'I-ORG'\].*\['B-MISC'\]"):  # the library says the same
        distil_student(output_dir=tmp_path / "lib", train=load_data_dir(TINY).train, dev=load_data_dir(TINY).dev,
                       kd=KDConfig(teacher_model_path=str(teacher)))


def test_labels_txt_still_overrides_the_teachers_labels(wide_teacher, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    own = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    (data / "labels.txt").write_text("\n".join(own) + "\n", encoding="utf-8")
    assert load_data_dir(data, teacher_labels=LabelVocab(WIDE)).labels_from == "labels.txt"
    r = _kd("tagger_kd", data, tmp_path / "kd", wide_teacher)
    assert r.exit_code == 0, (r.output, r.exception)
    assert _student_labels(tmp_path / "kd") == own


def test_library_distils_unlabeled_text_with_the_teachers_labels(wide_teacher, tmp_path):
    res = distil_student(output_dir=tmp_path / "lib", train=[], dev=[], kd=KDConfig(teacher_model_path=str(wide_teacher)),
                         tagger=TaggerConfig(hidden=8, word_emb_dim=8, char_emb_dim=4, char_hidden=6, use_crf=False),
                         trainer=StudentTrainerConfig(epochs=1, show_progress=False),
                         data=StudentDataConfig(embedding_file="none", batch_size=8), pseudo=PseudoConfig(),
                         unlabeled_file=TINY / "unlabeled.txt", device="cpu")
    assert res.model.labels.labels == WIDE and res.metrics["dev_tags"] == "teacher"


def test_ensemble_members_must_agree_on_their_labels(wide_teacher, tiny_encoder_dir, tmp_path):
    other = save_teacher(tmp_path / "other", tiny_encoder_dir, WIDE[:3] + WIDE[5:])
    assert teacher_labels([str(wide_teacher), str(wide_teacher)]).labels == WIDE
    with pytest.raises(LabelMismatchError, match=r"lacks \['B-MISC', 'I-MISC'\]"):
        teacher_labels(f"{wide_teacher},{other}")


def test_a_derived_label_list_says_where_it_came_from(tmp_path):
    data = _dev_with_a_tag_train_lacks(tmp_path)
    with pytest.raises(DataFormatError, match=r"dev.txt:\d+: tag 'B-MISC' .*derived from .*train.txt.*labels.txt"):
        load_data_dir(data)
    (data / "labels.txt").write_text("O\nB-PER\nI-PER\nB-LOC\nI-LOC\nB-ORG\nI-ORG\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"tag 'B-MISC' .*from .*labels.txt: add the tag there"):
        load_data_dir(data)


def test_a_folder_without_any_text_says_where_to_put_it(wide_teacher, tmp_path):
    (tmp_path / "empty").mkdir()
    r = _kd("tagger_kd_pseudo", tmp_path / "empty", tmp_path / "run", wide_teacher)
    assert _errors(r) == [f"Error: {tmp_path / 'empty'} has neither train.txt nor unlabeled.txt: put the text for the "
                          f"teacher to label in {tmp_path / 'empty' / 'unlabeled.txt'} (one sentence per line) or give "
                          "--unlabeled_filename"], r.output


def test_held_out_text_without_entities_is_warned_about(caplog):
    from nlp_distill.data.conll import Sentence
    from nlp_distill.distill.agreement import warn_without_entities

    labels = LabelVocab(WIDE)
    warn_without_entities([Sentence(["a", "b"], ["O", "B-PER"])], labels)
    assert "no entity" not in caplog.text
    warn_without_entities([Sentence(["a", "b"], ["O", "O"])], labels)
    assert "the teacher tags no entity in the 1 held-out sentences" in caplog.text


def test_heldout_size():
    assert [heldout_size(n) for n in (2, 40, 300, 1000, 2000, 20000, 10 ** 6)] == [1, 8, 60, 100, 100, 1000, 1000]


def test_tagged_sentences_alone_distil_with_a_gold_dev_held_out_of_them(wide_teacher, tmp_path):
    data = tmp_path / "tagged"
    data.mkdir()
    shutil.copy(TINY / "train.txt", data / "train.txt")  # no dev.txt, no unlabeled.txt
    n = len(read_conll(data / "train.txt"))
    r = _kd("tagger_kd_pseudo", data, tmp_path / "run", wide_teacher)
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.output.splitlines()[-1].startswith("dev F1 ")  # gold F1, not agreement
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    k = heldout_size(n)
    assert m["dev"]["n_sentences"] == k and f"the last {k} of {n} gold training sentences" in m["dev_held_out"]
    assert m.get("dev_tags", "gold") == "gold"
    assert not (tmp_path / "run" / "pseudo_labeled.txt").exists()  # no text was given, none was labeled
    # tagger_kd needs dev.txt, and its error names the command that does not
    r = _kd("tagger_kd", data, tmp_path / "run2", wide_teacher)
    assert r.exit_code != 0 and "dev.txt is missing" in r.output and "tagger_kd_pseudo" in r.output


def test_a_student_that_tags_no_entity_is_warned_about_in_metrics_and_its_card(tmp_path):
    from nlp_distill.config import StudentDataConfig, TaggerConfig
    from nlp_distill.model_card import render_model_card
    from nlp_distill.training.student import learned_nothing

    train = read_conll(TINY / "train.txt")
    labels = LabelVocab.from_sentences(s.tags for s in train)
    model = NeuralTagger.build(TaggerConfig(hidden=8, word_emb_dim=8, use_crf=False, precision="fp32"), train, labels)
    with torch.no_grad():  # every word scores O far above the rest
        model.proj.weight.zero_()
        model.proj.bias.fill_(-10.0)
        model.proj.bias[labels.labels.index("O")] = 10.0
    dev = read_conll(TINY / "dev.txt")
    warning = learned_nothing(model, dev, StudentDataConfig())
    assert warning and "tags no entity" in warning
    from nlp_distill.data.conll import Sentence

    assert learned_nothing(model, [Sentence(s.tokens, ["O"] * len(s)) for s in dev], StudentDataConfig()) is None
    with torch.no_grad():
        model.proj.bias[labels.labels.index("B-PER")] = 20.0
    assert learned_nothing(model, dev, StudentDataConfig()) is None
    model.save_pretrained(tmp_path / "model")
    card = render_model_card(tmp_path / "model", {"task": "tagger_kd_pseudo"}, {"warnings": [warning]}, ["nlp-train"])
    assert f"**Warning**: {warning}" in card
