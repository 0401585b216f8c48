"""Dataclass configs, one per component. ``to_dict``/``from_dict``/JSON round-trip; the JSON a
run writes into its output folder is the JSON ``--config`` accepts."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """Mixin: dict/JSON conversion that rejects unknown keys (typos never pass silently)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[T], d: Dict[str, Any]) -> T:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}; known: {sorted(known)}")
        kwargs = {}
        for k, v in d.items():
            sub = known[k].type
            sub_cls = _NESTED.get(sub) if isinstance(sub, str) else None
            kwargs[k] = sub_cls.from_dict(v) if sub_cls is not None and isinstance(v, dict) else v
        return cls(**kwargs)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: Type[T], path) -> T:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainerConfig(ConfigBase):
    """Generic training loop settings.

    ``grad_accum_steps`` micro-batches form one optimiser step; the loss is normalised by the
    number of items (words) in the whole group, so accumulation equals one big batch.
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    scheduler: str = "constant"  # constant | linear (warmup then linear decay)
    warmup_ratio: float = 0.0
    max_grad_norm: float = 5.0
    grad_accum_steps: int = 1
    early_stopping_patience: Optional[int] = None  # epochs without dev improvement
    metric_for_best: str = "f1"
    seed: int = 42
    show_progress: bool = True


@dataclass
class TransformerConfig(ConfigBase):
    """Teacher (or transformer student) settings around a HF token-classification model."""

    model_name_or_path: str = ""
    max_seq_length: int = 128
    stride: int = 32
    pooling: str = "first"  # first | mean sub-token -> word
    batch_size: int = 16  # windows (sentences) per training batch
    eval_batch_size: int = 64


@dataclass
class TaggerConfig(ConfigBase):
    """NeuralTagger architecture (student)."""

    model_type: str = "cnn-lstm"  # cnn-lstm | id-cnn
    use_crf: bool = False
    crf_constraints: bool = True  # forbid scheme-invalid transitions (e.g. O -> I-X)
    word_emb_dim: int = 100
    lowercase: bool = True  # look words up lowercased; a case feature keeps the casing signal
    char_encoder: str = "cnn"  # cnn | lstm | none
    char_emb_dim: int = 30
    char_hidden: int = 50
    char_kernel: int = 3
    max_word_length: int = 30  # longer words use their first and last characters only for chars
    use_word_shape: bool = True
    hidden: int = 200  # BiLSTM: per direction; ID-CNN: filters
    num_layers: int = 1  # BiLSTM layers
    idcnn_dilations: List[int] = field(default_factory=lambda: [1, 2, 1])
    idcnn_iterations: int = 4
    dropout: float = 0.5
    word_dropout: float = 0.05  # training-only: replace word ids by UNK at this rate
    min_word_freq: int = 1


@dataclass
class KDConfig(ConfigBase):
    """Distillation settings: ``loss = student_w * CE(gold) + dist_w * KD(teacher)``."""

    teacher_model_path: str = ""
    temperature: float = 1.0
    loss_function: str = "kl"  # kl | mse
    dist_w: float = 1.0
    student_w: float = 1.0
    teacher_max_seq_len: Optional[int] = None  # None: the length the teacher was trained with
    teacher_batch_size: int = 64
    use_cache: bool = True  # False: run the teacher every step (benchmark baseline)


@dataclass
class PseudoConfig(ConfigBase):
    """Pseudo-labeling of unlabeled text by the teacher."""

    unlabeled_filename: str = ""
    threshold: float = 0.0  # sentences whose confidence is below get no pseudo-label CE (KD kept)
    unlabeled_weight: float = 1.0
    max_unlabeled: Optional[int] = None  # read at most this many unlabeled sentences


@dataclass
class StudentDataConfig(ConfigBase):
    """How student training data is batched and how word vectors are initialised."""

    batch_size: int = 32
    eval_batch_size: int = 256
    embedding_file: Optional[str] = None  # GloVe / word2vec text vectors
    init_embeddings_from_teacher: Optional[str] = None  # teacher/encoder folder: mean sub-token vectors
    vocab_from_unlabeled: bool = True  # add unlabeled training words (min_word_freq) to the word vocab


_NESTED: Dict[str, Type[ConfigBase]] = {
    c.__name__: c for c in (TrainerConfig, TransformerConfig, TaggerConfig, KDConfig, PseudoConfig, StudentDataConfig)
}
