"""A teacher fine-tuned elsewhere: a HF token-classification folder saved by plain
``save_pretrained`` (``id2label`` in config.json), its labels mapped to the data's by name."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_distill.config import AugmentConfig, KDConfig, StudentDataConfig, StudentTrainerConfig, TaggerConfig
from nlp_distill.data.batching import EncodedData
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.teacher_student import TeacherStudentDistill
from nlp_distill.errors import LabelMismatchError
from nlp_distill.models.loader import load_model
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.transformer import TransformerTokenClassifier
from procedures.cli import nlp_train
from nlp_distill.distill.teachers import load_teacher
from procedures.tagger_kd import do_kd_training
from tests.conftest import TINY, make_tiny_tokenizer

HF_ORDER = ["B-PER", "I-LOC", "O", "I-PER", "B-ORG", "B-LOC", "I-ORG"]  # the data's labels, shuffled


def make_hf_classifier(folder: Path, labels, seed: int = 0) -> Path:
    """A tiny random BertForTokenClassification saved the plain HF way (config.json with
    id2label, safetensors, tokenizer files): no file of this library."""
    from transformers import BertConfig, BertForTokenClassification

    tok = make_tiny_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128,
                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    BertForTokenClassification(cfg).eval().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def hf_teacher(tmp_path_factory) -> Path:
    return make_hf_classifier(tmp_path_factory.mktemp("hf_ner"), HF_ORDER)


def hf_word_logits(folder: Path, words) -> np.ndarray:
    """The HF model's own token logits, mean over each word's sub-tokens (the classifier's
    default pooling), computed without this library: (n_words, C) in the model's id order."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForTokenClassification.from_pretrained(str(folder)).eval()
    enc = tok(list(words), is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]  # (T, C)
    ids = enc.word_ids(0)
    return np.stack([logits[[t for t, w in enumerate(ids) if w == k]].mean(0).numpy() for k in range(len(words))])


def test_plain_hf_folder_loads_with_its_head_and_labels(hf_teacher, caplog):
    caplog.set_level(logging.INFO)
    clf = load_model(hf_teacher, expect="TransformerTokenClassifier")
    assert clf.labels.labels == HF_ORDER  # id2label order: the head is the saved one
    assert "new" not in caplog.text  # the head is kept: no "new classification head" message
    words = load_data_dir(TINY).dev[0].tokens
    np.testing.assert_allclose(clf.word_logits([words])[0], hf_word_logits(hf_teacher, words), atol=1e-5)


def test_a_bare_encoder_still_reports_its_new_head(tiny_encoder_dir, tiny_labels, caplog):
    caplog.set_level(logging.INFO)
    TransformerTokenClassifier.from_pretrained(str(tiny_encoder_dir), tiny_labels)
    assert "new 7-label classification head" in caplog.text


def test_tagger_kd_teacher_columns_follow_label_names(hf_teacher, tmp_path):
    d = load_data_dir(TINY)
    assert HF_ORDER != d.labels.labels and sorted(HF_ORDER) == sorted(d.labels.labels)
    m = do_kd_training(TINY, tmp_path / "kd", TaggerConfig(hidden=16, word_emb_dim=16, char_emb_dim=8, char_hidden=8),
                       StudentTrainerConfig(epochs=1, show_progress=False), StudentDataConfig(embedding_file="none"),
                       kd=KDConfig(teacher_model_path=str(hf_teacher)),
                       augment=AugmentConfig(copies=0))
    assert 0.0 <= m["dev"]["f1"] <= 1.0 and m["teacher"]["dev"]["n_sentences"] == len(d.dev)
    assert json.loads((tmp_path / "kd" / "teacher_cache" / "meta.json").read_text())["labels"] == HF_ORDER
    # the distribution the student is taught: column j is the HF model's logit of data label j
    teacher = load_teacher(str(hf_teacher), "cpu", d.labels)
    dist = TeacherStudentDistill(teacher)
    sents = [s.tokens for s in d.train[:6]]
    dist.attach(d.labels, sents)
    student = NeuralTagger.from_pretrained(tmp_path / "kd" / "model")
    got = dist.teacher_logits(EncodedData(d.train[:6], student.word_vocab, student.char_vocab, d.labels).collate([0, 3, 5]))
    for b, i in enumerate([0, 3, 5]):
        own = hf_word_logits(hf_teacher, sents[i])
        expected = own[:, [HF_ORDER.index(name) for name in d.labels.labels]]
        np.testing.assert_allclose(got[b, : len(sents[i])].numpy(), expected, atol=1e-5)
        assert not np.allclose(got[b, : len(sents[i])].numpy(), own, atol=1e-3)  # not mapped by position


def test_teacher_labels_the_data_lacks_are_dropped_with_a_warning(tmp_path, caplog):
    folder = make_hf_classifier(tmp_path / "hf", HF_ORDER[:3] + ["B-MISC"] + HF_ORDER[3:] + ["I-MISC"])
    d = load_data_dir(TINY)
    caplog.set_level(logging.WARNING)
    teacher = load_teacher(str(folder), "cpu", d.labels)
    assert "['B-MISC', 'I-MISC'] are not in the data" in caplog.text
    assert teacher.labels.labels == HF_ORDER and teacher.model.config.num_labels == 7
    words = d.dev[1].tokens
    own = hf_word_logits(folder, words)  # 9 columns; MISC at 3 and 8
    np.testing.assert_allclose(teacher.word_logits([words])[0], own[:, [0, 1, 2, 4, 5, 6, 7]], atol=1e-5)


def test_data_labels_the_teacher_lacks_are_one_clear_error(tmp_path):
    from click.testing import CliRunner

    folder = make_hf_classifier(tmp_path / "hf", ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC"])
    with pytest.raises(LabelMismatchError, match=r"no label \['B-PER', 'I-PER'\] of the data .*\['B-MISC'\]"):
        load_teacher(str(folder), "cpu", load_data_dir(TINY).labels)
    r = CliRunner().invoke(nlp_train, ["tagger_kd", "--data_dir", str(TINY), "--output_dir", str(tmp_path / "kd"),
                                       "--teacher_model_path", str(folder), "--device", "cpu"])
    assert r.exit_code != 0
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and "['B-PER', 'I-PER']" in err[0] and "['B-MISC']" in err[0], r.output


def test_transformer_token_starts_from_a_hf_classifier_with_its_head_in_the_data_order(hf_teacher, caplog):
    caplog.set_level(logging.INFO)
    d = load_data_dir(TINY)
    clf = TransformerTokenClassifier.from_pretrained(str(hf_teacher), d.labels)
    assert clf.labels == d.labels and clf.model.config.id2label == d.labels.id2label
    assert "new" not in caplog.text
    words = d.dev[2].tokens
    expected = hf_word_logits(hf_teacher, words)[:, [HF_ORDER.index(n) for n in d.labels.labels]]
    np.testing.assert_allclose(clf.word_logits([words])[0], expected, atol=1e-5)


def test_underscore_and_bilou_spellings_of_a_hf_head_match_the_data(tmp_path):
    """A HF model trained on ``B_PER`` / BILOU tags teaches data read as ``B-PER`` / BIOES: its
    head's names are normalised as the data reader normalises tags, and its columns follow them."""
    spelled = {"B-PER": "B_PER", "I-LOC": "I_LOC", "B-ORG": "U-ORG"}  # U- (BILOU) is S- here
    folder = make_hf_classifier(tmp_path / "hf", [spelled.get(l, l) for l in HF_ORDER])
    clf = load_model(folder, expect="TransformerTokenClassifier")
    assert clf.labels.labels == ["B-PER", "I-LOC", "O", "I-PER", "S-ORG", "B-LOC", "I-ORG"]
    words = load_data_dir(TINY).dev[0].tokens
    np.testing.assert_allclose(clf.word_logits([words])[0], hf_word_logits(folder, words), atol=1e-5)


def test_a_store_from_a_teacher_with_extra_labels_needs_the_data_labels(tmp_path):
    """A student takes the teacher's whole label list unless labels.txt gives one; label_unlabeled
    --data_dir cuts the teacher's head to that labels.txt, and tagger_kd with the labels.txt names
    that remedy for a store scored by the whole head instead of calling it another teacher's."""
    import shutil

    from nlp_distill.distill.transfer_store import TransferStore
    from tests.test_cli import TAGGER_ARGS, invoke, ok

    folder = make_hf_classifier(tmp_path / "hf", HF_ORDER + ["B-MISC", "I-MISC"])
    data = tmp_path / "data"
    shutil.copytree(TINY, data)
    (data / "labels.txt").write_text("\n".join(HF_ORDER) + "\n", encoding="utf-8")
    base = ["label_unlabeled", "--teacher_model_path", folder, "--unlabeled_filename", TINY / "unlabeled.txt",
            "--max_unlabeled", 6, "--device", "cpu"]
    ok(invoke(nlp_train, [*base, "--output_dir", tmp_path / "whole"]))
    ok(invoke(nlp_train, [*base, "--output_dir", tmp_path / "cut", "--data_dir", data]))
    assert TransferStore(tmp_path / "whole").labels[-2:] == ["B-MISC", "I-MISC"]
    assert TransferStore(tmp_path / "cut").labels == HF_ORDER  # labels.txt's, in the head's order
    kd = ["tagger_kd_pseudo", *TAGGER_ARGS, "--teacher_model_path", folder, "--augment", 0]
    r = invoke(nlp_train, [*kd, "--data_dir", data, "--output_dir", tmp_path / "a", "--transfer_store", tmp_path / "whole"])
    assert r.exit_code != 0 and "label_unlabeled --data_dir" in r.output and "another teacher" not in r.output
    ok(invoke(nlp_train, [*kd, "--data_dir", data, "--output_dir", tmp_path / "b", "--transfer_store", tmp_path / "cut"]))
    # without labels.txt the student's labels are the teacher's: the whole-head store is the one that fits
    ok(invoke(nlp_train, [*kd, "--data_dir", TINY, "--output_dir", tmp_path / "c", "--transfer_store", tmp_path / "whole"]))
