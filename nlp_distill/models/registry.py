"""Every kind of saved model, declared once: its command name, the class its folder records, the
command that writes it, and how to load it. The loader, inference, export and the benchmarks all
dispatch through ``KINDS``; a new model kind is one entry here (plus its exporters in
``nlp_distill.export.backends``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from nlp_distill.errors import ConfigError


def _neural_tagger() -> type:
    from nlp_distill.models.neural_tagger import NeuralTagger

    return NeuralTagger


def _transformer() -> type:
    from nlp_distill.models.transformer import TransformerTokenClassifier

    return TransformerTokenClassifier


@dataclass(frozen=True)
class ModelKind:
    """One kind of saved model.

    Attributes:
        name: the kind's command name (``nlp-inference tagger | transformer_token``).
        model_class: the class name its folder records (``config.json`` / ``nlp_distill.json``).
        made_by: the command(s) that write such a folder, for messages.
        model_type: returns the class (imported on first use, so listing kinds stays cheap).
    """

    name: str
    model_class: str
    made_by: str
    model_type: Callable[[], type]

    def load(self, folder):
        """The model saved in ``folder`` (its class's ``from_pretrained``)."""
        return self.model_type().from_pretrained(str(folder))


KINDS: Dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("tagger", "NeuralTagger", "nlp-train tagger | tagger_kd | tagger_kd_pseudo", _neural_tagger),
    ModelKind("transformer_token", "TransformerTokenClassifier", "nlp-train transformer_token", _transformer),
)}


def kind_of_class(model_class: Optional[str]) -> Optional[ModelKind]:
    """The kind whose folders record ``model_class``, else ``None``."""
    return next((k for k in KINDS.values() if k.model_class == model_class), None)


def kind_named(name: str) -> ModelKind:
    """The kind called ``name``; another name is a ``ConfigError`` listing the kinds."""
    if name not in KINDS:
        raise ConfigError(f"unknown model kind {name!r}; expected one of {', '.join(KINDS)}")
    return KINDS[name]
