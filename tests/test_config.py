"""Config dataclasses: dict and JSON round trips, unknown keys rejected."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nlp_distill.config import (
    AugmentConfig,
    KDConfig,
    PseudoConfig,
    StudentDataConfig,
    StudentTrainerConfig,
    TaggerConfig,
    TeacherTrainerConfig,
    TrainerConfig,
    TransformerConfig,
)
from nlp_distill.errors import ConfigError

ALL = [TrainerConfig, TransformerConfig, TaggerConfig, KDConfig, PseudoConfig, StudentDataConfig, AugmentConfig]

# non-default values for every class, touching each kind of field (str, int, float, bool,
# Optional set / unset, list)
CHANGED = {
    TrainerConfig: dict(epochs=3, lr=5e-5, optimizer="adamw", scheduler="linear", warmup_ratio=0.1,
                        grad_accum_steps=4, early_stopping_patience=2, seed=7, show_progress=False),
    TransformerConfig: dict(model_name_or_path="/some/model", max_seq_length=64, stride=16, pooling="first",
                            batch_size=8, eval_batch_size=16),
    TaggerConfig: dict(model_type="id-cnn", use_crf=True, crf_constraints=False, idcnn_dilations=[1, 2, 4, 8],
                       char_encoder="lstm", dropout=0.25, lowercase=False, min_word_freq=2),
    KDConfig: dict(teacher_model_path=["runs/t", "runs/t2"], temperature=2.5, loss_function="mse", dist_w=0.3,
                   student_w=0.7, use_cache=False),
    AugmentConfig: dict(copies=5, ops=["token", "typo"], seed=3),
    PseudoConfig: dict(unlabeled_filename="u.txt", threshold=0.9, unlabeled_weight=0.5, max_unlabeled=1000),
    StudentDataConfig: dict(batch_size=4, embedding_file="glove.txt", init_embeddings_from_teacher="runs/t",
                            vocab_from_unlabeled=False),
}


def test_every_config_class_is_covered():
    assert set(CHANGED) == set(ALL)
    for cls in ALL:
        assert dataclasses.is_dataclass(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(CHANGED[cls]) <= names


@pytest.mark.parametrize("cls", ALL)
def test_defaults_round_trip(cls, tmp_path):
    c = cls()
    d = c.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(cls)}
    assert cls.from_dict(d) == c
    p = tmp_path / "c.json"
    c.save(p)
    assert cls.load(p) == c


@pytest.mark.parametrize("cls", ALL)
def test_changed_round_trip(cls, tmp_path):
    c = cls(**CHANGED[cls])
    assert c != cls()
    d = c.to_dict()
    for k, v in CHANGED[cls].items():
        assert d[k] == v
    back = cls.from_dict(d)
    assert back == c
    p = tmp_path / "c.json"
    c.save(p)
    raw = json.loads(p.read_text(encoding="utf-8"))  # plain JSON, same dict
    assert raw == d
    loaded = cls.load(p)
    assert loaded == c
    for k, v in CHANGED[cls].items():
        assert getattr(loaded, k) == v


@pytest.mark.parametrize("cls", ALL)
def test_partial_dict_uses_defaults(cls):
    k, v = next(iter(CHANGED[cls].items()))
    c = cls.from_dict({k: v})
    assert getattr(c, k) == v
    assert c == cls().replace(**{k: v})
    assert cls.from_dict({}) == cls()


@pytest.mark.parametrize("cls", ALL)
def test_unknown_keys_raise(cls, tmp_path):
    d = cls().to_dict()
    d["definitely_not_a_field"] = 1
    with pytest.raises(ValueError, match="definitely_not_a_field"):
        cls.from_dict(d)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError, match="definitely_not_a_field"):
        cls.load(p)


def test_typo_is_not_silently_ignored():
    with pytest.raises(ValueError, match="epoch"):
        TrainerConfig.from_dict({"epoch": 3})
    # a key of another section is unknown here too
    with pytest.raises(ValueError):
        KDConfig.from_dict({"lr": 0.1})


def test_list_default_not_shared():
    a, b = TaggerConfig(), TaggerConfig()
    a.idcnn_dilations.append(16)
    assert b.idcnn_dilations == [1, 2, 1]
    # from_dict copies nothing surprising: the round trip is independent of the source object
    c = TaggerConfig(idcnn_dilations=[1, 3])
    d = c.to_dict()
    d["idcnn_dilations"].append(9)
    assert c.idcnn_dilations == [1, 3]


def test_replace_returns_new_object():
    c = TransformerConfig()
    c2 = c.replace(max_seq_length=16)
    assert c2.max_seq_length == 16 and c.max_seq_length == 128
    assert c2.stride == c.stride
    with pytest.raises(TypeError):
        c.replace(no_such_field=1)


# --------------------------------------------------------------------- validation (issue: every
# option validated where it enters, the same from code, --config and flags)
@pytest.mark.parametrize("cls, bad, match", [
    (TrainerConfig, {"epochs": 0}, r"--epochs\): must be >= 1"),
    (TrainerConfig, {"lr": 0.0}, r"must be > 0"),
    (TrainerConfig, {"epochs": "ten"}, r"expected an integer"),
    (TrainerConfig, {"epochs": True}, r"expected an integer"),
    (TrainerConfig, {"optimizer": "adagrad"}, r"'adagrad' is not one of adam, adamw, sgd"),
    (TaggerConfig, {"dropout": 1.0}, r"--dropout\): must be < 1"),
    (TaggerConfig, {"word_dropout": 1.5}, r"--word_dropout\): must be < 1"),
    (TaggerConfig, {"word_dropout": -0.1}, r"must be >= 0"),
    (TaggerConfig, {"idcnn_dilations": [1, 0]}, r"must be >= 1"),
    (TaggerConfig, {"use_crf": "yes"}, r"expected true or false"),
    (KDConfig, {"temperature": 0}, r"--kd_temp\): must be > 0"),
    (KDConfig, {"loss_function": "js"}, r"not one of"),
    (StudentDataConfig, {"batch_size": 0}, r"--batch_size\): must be >= 1"),
    (StudentDataConfig, {"batch_size": -4}, r"must be >= 1"),
    (PseudoConfig, {"max_unlabeled": 0}, r"must be >= 1"),
    (AugmentConfig, {"ops": ["token", "synonym"]}, r"'synonym' is not one of"),
    (AugmentConfig, {"copies": -1}, r"--augment\): must be >= 0"),
])
def test_out_of_range_values_are_refused(cls, bad, match):
    with pytest.raises(ConfigError, match=match):
        cls.from_dict(bad)
    with pytest.raises(ConfigError, match=match):
        cls(**bad)


def test_lossless_conversions():
    assert TrainerConfig(lr=1).lr == 1.0 and isinstance(TrainerConfig(lr=1).lr, float)
    assert KDConfig(teacher_model_path="a,b").teacher_model_path == ["a", "b"]  # old single-path configs load
    assert PseudoConfig(max_unlabeled=None).max_unlabeled is None


def test_command_defaults_declared_once_per_command():
    t, s, g = TeacherTrainerConfig(), StudentTrainerConfig(), TrainerConfig()
    assert (t.epochs, t.lr, t.optimizer, t.scheduler) == (10, 2e-4, "adamw", "linear")
    assert (s.epochs, s.lr, s.early_stopping_patience) == (25, 2e-3, 6)
    # what a subclass does not re-declare is the base default
    assert s.weight_decay == g.weight_decay and t.seed == g.seed
    # the override keeps the help and range of the base field
    f = {x.name: x for x in dataclasses.fields(TeacherTrainerConfig)}
    assert f["epochs"].metadata["ge"] == 1 and f["epochs"].metadata["aliases"] == ("num_train_epochs",)
    with pytest.raises(ConfigError, match="--epochs"):
        TeacherTrainerConfig(epochs=0)


def test_every_command_uses_the_same_names_and_keeps_the_hf_aliases():
    """Teachers and students say --epochs / --lr / --batch_size; the HF Trainer's names still work
    and set the same setting; --help lists options under headings, the main flags first."""
    from click.testing import CliRunner

    from procedures.cli import nlp_train
    from procedures.options import build_configs

    for name in ("transformer_token", "transformer_kd", "tagger", "tagger_kd", "tagger_kd_pseudo"):
        cmd = nlp_train.commands[name]
        flags = {o for p in cmd.params for o in p.opts}
        assert {"--epochs", "--lr", "--batch_size"} <= flags, name
    cmd = nlp_train.commands["transformer_token"]
    for hf, ours in (("--num_train_epochs", "--epochs"), ("--learning_rate", "--lr"),
                     ("--per_device_train_batch_size", "--batch_size")):
        vals = []
        for flag in (hf, ours):
            ctx = cmd.make_context("transformer_token", ["--data_dir", ".", "--output_dir", "x", flag, "3"])
            cfg = build_configs(ctx)
            vals.append((cfg["trainer"].epochs, cfg["trainer"].lr, cfg["model"].batch_size))
        assert vals[0] == vals[1] and 3 in vals[0], (hf, vals)
    shown = CliRunner().invoke(nlp_train, ["tagger_kd", "--help"]).output
    heads = [l for l in shown.splitlines() if l.endswith(" options:")]
    assert heads[0] == "Main options:", heads
    assert {"Student options:", "Distillation options:", "Augmentation options:", "Training options:",
            "Run options:"} <= set(heads), heads
    main = shown.split("Main options:")[1].split("options:")[0]
    assert "--data_dir" in main and "--output_dir" in main and "--teacher_model_path" in main


def test_every_library_export_resolves():
    import nlp_distill

    for name in nlp_distill.__all__:
        assert getattr(nlp_distill, name) is not None, name


def test_tagger_presets_are_valid_and_smaller_in_order():
    from nlp_distill.data.dataset_dir import load_data_dir
    from nlp_distill.models.neural_tagger import NeuralTagger

    d = load_data_dir(Path(__file__).parent / "fixtures" / "tiny")
    sizes = {}
    for name in ("base", "medium", "small", "tiny"):
        cfg = TaggerConfig.from_preset(name, use_crf=True)
        assert cfg.preset == name and cfg.use_crf
        assert all(getattr(cfg, k) == v for k, v in TaggerConfig.PRESETS[name].items())
        sizes[name] = NeuralTagger.build(cfg, d.train, d.labels).num_parameters()
    assert sizes["tiny"] < sizes["small"] < sizes["medium"] < sizes["base"]
    assert TaggerConfig.from_preset("small", hidden=7).hidden == 7  # explicit values win
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        TaggerConfig.from_preset("huge")


@pytest.mark.parametrize("bad", [[3], [1, 0], [3, 3], [3, 1, 2]])
def test_holdout_fold_must_name_one_fold_of_k(bad):
    from nlp_distill.config import TransformerConfig
    with pytest.raises(ConfigError, match="--holdout_fold"):
        TransformerConfig(holdout_fold=bad)


def test_holdout_fold_selects_every_kth_sentence():
    from nlp_distill.config import TransformerConfig
    cfg = TransformerConfig(holdout_fold=[3, 1])
    assert [i for i in range(9) if not cfg.in_training_fold(i)] == [1, 4, 7]
    assert all(TransformerConfig().in_training_fold(i) for i in range(5))
