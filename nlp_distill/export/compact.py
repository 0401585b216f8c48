"""A small copy of a student for shipping: product-quantised word table and fp16 weights
(``CompactConfig``), still an ordinary NeuralTagger folder (``nlp-inference tagger``, ONNX export
and ``from_pretrained`` load it, restored to float32)."""
from __future__ import annotations

import logging
from typing import Dict, Optional

from nlp_distill.config import CompactConfig
from nlp_distill.errors import ConfigError
from nlp_distill.io import atomic_dir, folder_size
from nlp_distill.models.loader import load_model, model_class_of
from nlp_distill.models.registry import KINDS, kind_of_class

logger = logging.getLogger(__name__)


def compact_tagger(model_dir, output_dir, storage: Optional[CompactConfig] = None) -> Dict[str, object]:
    """Write a compact copy of the NeuralTagger in ``model_dir`` (a model or run folder).

    Returns:
        ``{"folder", "bytes_before", "bytes_after"}``.
    """
    cls, src = model_class_of(model_dir)
    if kind_of_class(cls) is not KINDS["tagger"]:
        raise ConfigError(f"{model_dir} holds {'a ' + cls if cls else 'no saved model'}; nlp-export compact takes "
                          "a BiLSTM/ID-CNN student (for a transformer: nlp-export onnx --quantize int8)")
    model = load_model(src, expect=KINDS["tagger"].model_class)  # names a damaged file
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp, storage or CompactConfig())
    before, after = folder_size(src), folder_size(output_dir)
    logger.info("compact %s: %.2f MB -> %.2f MB (%.1fx) in %s", src, before / 1e6, after / 1e6, before / after, output_dir)
    return {"folder": str(output_dir), "bytes_before": before, "bytes_after": after}
