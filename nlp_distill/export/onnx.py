"""ONNX export with optional ONNX Runtime int8 dynamic quantisation; the folders load without
torch (``nlp_distill.export.runtime``).

- NeuralTagger: embedder + encoder + projection in the graph; the CRF's scores go to
  ``config.json`` and Viterbi runs in numpy.
- TransformerTokenClassifier (teacher or a layer-dropped student): the HF model's sub-token
  logits in the graph; tokenizer, windows and word pooling stay outside, so long sentences keep
  the window logic and no word is dropped.
"""
from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from nlp_distill.data.batching import Batch
from nlp_distill.data.conll import Sentence
from nlp_distill.errors import ConfigError
from nlp_distill.io import LIBRARY_VERSION, resolve_model_dir, write_json
from nlp_distill.models.neural_tagger import NeuralTagger

logger = logging.getLogger(__name__)

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"


class ExportableTagger(nn.Module):
    """A NeuralTagger's emissions from tensors only (the graph ONNX traces): its own ``forward``
    (embedder, encoder, projection; the BiLSTM runs without packed sequences, which ONNX lacks);
    no CRF."""

    def __init__(self, tagger: NeuralTagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, words: torch.Tensor, chars: torch.Tensor, shapes: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """(B, L), (B, L, K), (B, L), (B, L) bool -> emissions (B, L, C)."""
        return self.tagger(Batch(words, chars, shapes, mask, tags=None, index=None, weight=None))  # (B, L, C)


def _example(model: NeuralTagger) -> Tuple[torch.Tensor, ...]:
    """Trace inputs: two sentences of different lengths (so padding is in the traced graph)."""
    batch = model.encode([Sentence(["a", "b", "c"]), Sentence(["d"])]).collate([0, 1])
    return batch.words, batch.chars, batch.shapes, batch.mask


def _crf_scores(model: NeuralTagger) -> Optional[dict]:
    if model.crf is None:
        return None
    start, trans, end = (t.detach().cpu().tolist() for t in model.crf._scores())
    return {"start": start, "trans": trans, "end": end}


def _check_onnx(quantize: Optional[str]) -> None:
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize {quantize}: only int8 is supported")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install onnx onnxruntime (in the clone: pip install -e '.[onnx]')") from None


# int8 for taggers: the projections and the embedding table only; LSTM and char-CNN stay fp32.
# Quantising everything (ORT's default) was slower than fp32 and cost 0.46 test F1 on average over
# 9 BiLSTM students; these ops cost 0.15 at fp32 speed, 3-4x smaller (docs/benchmarks.md)
TAGGER_INT8_OPS = ["MatMul", "Gemm", "Gather"]


def _write_onnx(module: nn.Module, example: Tuple[torch.Tensor, ...], out: Path, names: List[str],
                axes: dict, output: str, quantize: Optional[str], op_types: Optional[List[str]] = None) -> dict:
    """Trace ``module`` to ``out/model.onnx`` (+ ``model.int8.onnx``: dynamic int8 of ``op_types``,
    default ONNX Runtime's choice); returns the file map."""
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(out / ONNX_FILE), input_names=names, output_names=[output],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    files = {"fp32": ONNX_FILE}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(out / ONNX_FILE), str(out / INT8_FILE), weight_type=QuantType.QInt8,
                         op_types_to_quantize=op_types)
        files["int8"] = INT8_FILE
    return files


class _LogitsOnly(nn.Module):
    """The HF token classifier as ``(input_ids, attention_mask) -> sub-token logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, C)


def export_transformer(model_dir, output_dir, quantize: Optional[str] = None) -> Path:
    """Export a TransformerTokenClassifier (``model.onnx`` [+ int8], tokenizer, ``config.json``)."""
    from nlp_distill.models.loader import load_model

    _check_onnx(quantize)
    clf = load_model(model_dir, expect="TransformerTokenClassifier").eval()  # names a damaged file
    # eager attention traces to MatMul + Add(mask) + Softmax; SDPA's ONNX form adds Where(-inf mask)
    # and Where(IsNaN) over every (B, heads, T, T) score tensor: 24% of the int8 graph's time
    # (docs/benchmarks.md). The torch model keeps SDPA.
    clf.model.set_attn_implementation("eager")
    out = Path(output_dir)
    batch = clf.aligner.collate(clf.windows([["a", "b", "c"], ["d"]]))
    axes = {k: {0: "batch", 1: "tokens"} for k in ("input_ids", "attention_mask", "logits")}
    files = _write_onnx(_LogitsOnly(clf.model), (batch["input_ids"], batch["attention_mask"]), out,
                        ["input_ids", "attention_mask"], axes, "logits", quantize)
    clf.tokenizer.save_pretrained(str(out))
    write_json(out / "config.json", {"model_class": "OnnxTransformer", "library_version": LIBRARY_VERSION,
                                     "labels": clf.labels.labels, "transformer": clf.config.to_dict(), "files": files,
                                     "source": str(model_dir)})
    logger.info("exported %s to %s (%s)", model_dir, out, ", ".join(files.values()))
    return out


def export_tagger(model_dir, output_dir, quantize: Optional[str] = None) -> Path:
    """Export the NeuralTagger in ``model_dir`` to ``output_dir`` (``model.onnx``, with
    ``quantize="int8"`` also ``model.int8.onnx``, ``config.json``, ``vocab.json``)."""
    from nlp_distill.models.loader import load_model

    _check_onnx(quantize)
    src = resolve_model_dir(model_dir)
    model = load_model(src, expect="NeuralTagger").eval()  # names a damaged file
    if model.config.char_encoder == "lstm":
        raise ConfigError("ONNX export supports --char_encoder cnn or none (a char BiLSTM student cannot be exported yet)")
    out = Path(output_dir)
    axes = {"words": {0: "batch", 1: "length"}, "chars": {0: "batch", 1: "length", 2: "chars"},
            "shapes": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"},
            "emissions": {0: "batch", 1: "length"}}
    files = _write_onnx(ExportableTagger(model), _example(model), out, ["words", "chars", "shapes", "mask"], axes,
                        "emissions", quantize, TAGGER_INT8_OPS)
    shutil.copy(src / "vocab.json", out / "vocab.json")
    write_json(out / "config.json", {"model_class": "OnnxTagger", "library_version": LIBRARY_VERSION,
                                     "tagger": model.config.to_dict(), "labels": model.labels.labels,
                                     "crf": _crf_scores(model), "files": files, "source": str(src)})
    logger.info("exported %s to %s (%s)", src, out, ", ".join(files.values()))
    return out
