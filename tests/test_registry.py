"""One registry of model kinds (models/registry.py) and one export-backend interface
(export/backends.py): the loader, inference, export and the benchmarks dispatch through them."""
from __future__ import annotations

import pytest

from nlp_distill.errors import ConfigError
from nlp_distill.export.backends import BACKENDS, exported_class, export_model, model_kind_of
from nlp_distill.models.registry import KINDS, kind_named, kind_of_class


def test_every_kind_names_its_own_class():
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.model_type().__name__ == kind.model_class
        assert kind_of_class(kind.model_class) is kind
    assert kind_of_class("Nope") is None
    with pytest.raises(ConfigError, match="unknown model kind 'nope'"):
        kind_named("nope")


def test_every_backend_maps_to_registered_kinds():
    for backend in BACKENDS.values():
        assert set(backend.exporters()) <= set(KINDS)
        for cls, (kind, predictor) in backend.predictors().items():
            assert kind in KINDS and predictor.__name__ == cls
            assert model_kind_of(cls) is KINDS[kind]


def test_saved_and_exported_folders_resolve_to_their_kind(model_folders):
    from nlp_distill.models.loader import load_model

    assert type(load_model(model_folders["student"])).__name__ == KINDS["tagger"].model_class
    assert exported_class(model_folders["student"]) is None
    if "onnx_crf" in model_folders:
        assert model_kind_of(exported_class(model_folders["onnx_crf"])) is KINDS["tagger"]
        assert model_kind_of(exported_class(model_folders["onnx_teacher"])) is KINDS["transformer_token"]


def test_export_names_an_unknown_backend_and_a_folder_without_a_model(model_folders, tmp_path):
    with pytest.raises(ConfigError, match="unknown export backend 'nope'"):
        export_model(model_folders["student"], tmp_path / "x", backend="nope")
    with pytest.raises(ConfigError, match="no saved model"):
        export_model(tmp_path, tmp_path / "y")
