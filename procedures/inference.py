"""Tag a file with any saved model and write CoNLL (token, predicted tag)."""
from __future__ import annotations

import logging
from itertools import islice
from typing import Iterator, List, Optional

from nlp_distill.data.conll import Sentence, write_conll
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.errors import ConfigError
from nlp_distill.models.loader import load_model
from procedures.common import setup_logging

logger = logging.getLogger(__name__)


KINDS = {"tagger": "NeuralTagger", "transformer_token": "TransformerTokenClassifier"}


def do_inference(kind: str, model_dir, data_file, output_file, batch_size: int = 64, chunk: int = 2048,
                 input_format: str = "auto", encoding: str = "utf-8", backend: str = "torch",
                 precision: Optional[str] = None) -> int:
    """Stream ``data_file`` (CoNLL or one sentence per line) in chunks, predict, write CoNLL.
    ``precision`` (torch backend) replaces the one saved with the model.

    Returns:
        number of sentences tagged.
    """
    setup_logging()
    if backend == "onnx" and precision is not None:
        raise ConfigError("--precision applies to --backend torch; an ONNX folder runs its exported fp32 or int8 file")
    if backend == "onnx":
        from nlp_distill.export.runtime import OnnxTagger, OnnxTransformer

        model = (OnnxTagger if kind == "tagger" else OnnxTransformer).from_pretrained(model_dir)
    else:
        model = load_model(model_dir, expect=KINDS[kind])
        if precision is not None:
            model.config.precision = precision
    it = iter_unlabeled(data_file, None if input_format == "auto" else input_format, encoding=encoding)
    n = 0

    def tagged() -> Iterator[Sentence]:
        nonlocal n
        while True:
            block: List[Sentence] = list(islice(it, chunk))
            if not block:
                return
            for s, tags in zip(block, model.predict([s.tokens for s in block], batch_size=batch_size)):
                n += 1
                yield Sentence(s.tokens, tags)

    write_conll(output_file, tagged())
    logger.info("tagged %d sentences from %s", n, data_file)
    return n
