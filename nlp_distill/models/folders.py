"""What a saved model folder holds, read without loading it (imported by the models themselves
and by the loader, so it imports no model)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from nlp_distill.errors import ConfigError
from nlp_distill.io import read_json

NLP_DISTILL_FILE = "nlp_distill.json"  # written by TransformerTokenClassifier.save_pretrained


def hf_classifier_labels(folder) -> Optional[List[str]]:
    """The labels (``id2label`` in id order) of a HF token-classification folder saved by plain
    ``save_pretrained`` (its config names a ``...ForTokenClassification`` architecture), else
    ``None`` (a bare encoder, or a folder of this library).

    Raises:
        ConfigError: when ``id2label`` does not number its labels 0..n-1.
    """
    cfg_file = Path(folder) / "config.json"
    if (Path(folder) / NLP_DISTILL_FILE).is_file() or not cfg_file.is_file():
        return None
    cfg = read_json(cfg_file)
    archs = cfg.get("architectures") or []
    if not isinstance(cfg.get("id2label"), dict) or not any(str(a).endswith("ForTokenClassification") for a in archs):
        return None
    id2label = {str(k): v for k, v in cfg["id2label"].items()}
    if sorted(id2label) != sorted(str(i) for i in range(len(id2label))):
        raise ConfigError(f"{cfg_file}: id2label keys {sorted(id2label)} are not 0..{len(id2label) - 1}")
    return [str(id2label[str(i)]) for i in range(len(id2label))]
