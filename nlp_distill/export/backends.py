"""Export backends behind one interface. A backend says, per model kind of
``models.registry.KINDS``, how to export a saved folder and which predictor runs the result.

Adding a backend touches three files: its module (exporters + predictors), ``BACKENDS`` below,
and its command in ``procedures/cli.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from nlp_distill.errors import ConfigError
from nlp_distill.models.folders import newer_version_error, read_model_json
from nlp_distill.models.registry import KINDS, ModelKind, kind_of_class


@dataclass(frozen=True)
class ExportBackend:
    """One export backend; both maps are built on first use (their modules import torch / onnx).

    Attributes:
        name: as in ``nlp-export NAME``.
        exporters: -> {kind name: ``export(model_dir, output_dir, **options) -> Path``}.
        predictors: -> {model class an exported folder records: (kind name, predictor class with
            ``from_pretrained(folder, **options)``, ``labels`` and ``predict``)}.
    """

    name: str
    exporters: Callable[[], Dict[str, Callable[..., Path]]]
    predictors: Callable[[], Dict[str, Tuple[str, type]]]


def _onnx_exporters() -> Dict[str, Callable[..., Path]]:
    from nlp_distill.export.onnx import export_tagger, export_transformer

    return {"tagger": export_tagger, "transformer_token": export_transformer}


def _onnx_predictors() -> Dict[str, Tuple[str, type]]:
    from nlp_distill.export.runtime import OnnxTagger, OnnxTransformer  # torch-free

    return {"OnnxTagger": ("tagger", OnnxTagger), "OnnxTransformer": ("transformer_token", OnnxTransformer)}


BACKENDS: Dict[str, ExportBackend] = {"onnx": ExportBackend("onnx", _onnx_exporters, _onnx_predictors)}


def _predictor(model_class: Optional[str]) -> Optional[Tuple[str, type]]:
    """(kind name, predictor class) of an exported model class, else ``None``."""
    for backend in BACKENDS.values():
        found = backend.predictors().get(model_class)
        if found is not None:
            return found
    return None


def export_model(model_dir, output_dir, backend: str = "onnx", **options) -> Path:
    """Export whatever ``model_dir`` holds (a model or run folder) with ``backend``.

    Args:
        options: the backend's own (ONNX: ``quantize="int8"``).

    Raises:
        ConfigError: no saved model there, an unknown backend, or a kind the backend cannot export.
    """
    from nlp_distill.models.loader import model_class_of

    if backend not in BACKENDS:
        raise ConfigError(f"unknown export backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    cls, _ = model_class_of(model_dir)
    kind = kind_of_class(cls)
    if kind is None:
        raise newer_version_error(model_dir, "it records a model class this version does not know") or ConfigError(
            f"{model_dir} holds no saved model of this library to export")
    exporters = BACKENDS[backend].exporters()
    if kind.name not in exporters:
        raise ConfigError(f"the {backend} backend cannot export a {kind.model_class} ({model_dir})")
    return exporters[kind.name](model_dir, output_dir, **options)


def exported_class(folder) -> Optional[str]:
    """The model class recorded by the exported folder ``folder``, else ``None`` (not an export)."""
    cfg = Path(folder) / "config.json"
    cls = read_model_json(cfg).get("model_class") if cfg.is_file() else None
    return cls if _predictor(cls) is not None else None


def load_exported(folder, *args, **options):
    """The predictor of an exported folder (ONNX: ``variant`` ``"int8"``/``"fp32"``, ``threads``).

    Raises:
        ConfigError: ``folder`` is not an exported model.
    """
    cls = exported_class(folder)
    if cls is None:
        raise ConfigError(f"{folder} holds no exported model; make one with `nlp-export onnx --model_dir MODEL "
                          "--output_dir DIR`")
    return _predictor(cls)[1].from_pretrained(folder, *args, **options)


def model_kind_of(model_class: Optional[str]) -> Optional[ModelKind]:
    """The kind of a saved or exported model class (``NeuralTagger`` and ``OnnxTagger`` -> tagger)."""
    found = _predictor(model_class)
    return KINDS[found[0]] if found is not None else kind_of_class(model_class)
