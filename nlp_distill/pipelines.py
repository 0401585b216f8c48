"""Entities in and out: ``pipeline(model_dir)`` tags raw text or token lists with any saved model
(BiLSTM / ID-CNN student, compact student, transformer teacher or student, ONNX export) and
returns entity spans with character offsets and scores, in the keys of the Hugging Face
token-classification pipeline (``aggregation_strategy="simple"``)::

    from nlp_distill import pipeline

    ner = pipeline("runs/student/model")
    ner("Mary Jones flew to New York")
    # [{"entity_group": "person", "score": 0.91, "word": "Mary Jones", "start": 0, "end": 10}, ...]

Scores: a word's score is the probability of its predicted tag (the CRF marginal
p(y_t = tag | x) for a CRF student, the softmax of the logits otherwise); an entity's score is
the mean of its words' scores. Entities are read from the predicted tags by
``labels.entity_spans`` (BIO, IOB1, BIOES, IO), so they always equal the model's own ``predict``.

A model of plain tags (POS: ``NN``, ``VBD``, ...; no B-/I- spans) returns one dict per word
instead, ``{"word", "tag", "score", "start", "end"}`` (``NerPipeline.output == "words"``)::

    pos = pipeline("runs/pos_student")
    pos("Dogs bark")
    # [{"word": "Dogs", "tag": "NNS", "score": 0.97, "start": 0, "end": 4},
    #  {"word": "bark", "tag": "VBP", "score": 0.88, "start": 5, "end": 9}]
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from nlp_distill.data.labels import PLAIN, entity_spans
from nlp_distill.data.tokenize import check_token_lists, tokenize
from nlp_distill.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
TORCH_PRECISIONS = ("auto", "fp32", "bf16")  # the network's dtype (nlp_distill.precision)
ONNX_PRECISIONS = ("auto", "fp32", "int8")  # which file of an export runs (auto: int8 when exported)
PRECISIONS = ("auto", "fp32", "bf16", "int8")
Span = Tuple[int, int]
_TINY = float(np.finfo(np.float32).tiny)  # a score is > 0 even where a float32 marginal underflowed


def _check_choices(backend: str, precision: Optional[str]) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def load_for_inference(model_dir, backend: str = "auto", device=None, precision: Optional[str] = None,
                       threads: Optional[int] = None):
    """(model, model class name, backend used) for any model folder (or run folder holding ``model/``).

    ``auto`` runs an ONNX export with ONNX Runtime and every other folder with torch, loaded by
    ``models.loader.load_model`` (students, compact students, transformers) or
    ``export.backends.load_exported`` (ONNX folders); both name a damaged file and its fix
    (``errors.ModelFolderError``). ``precision``: ``fp32`` / ``bf16`` / ``auto`` set a torch
    model's dtype; ``fp32`` / ``int8`` pick an export's ONNX file (``auto`` or ``None``: int8 when
    exported). ``threads``: the ONNX Runtime session's intra-op threads for an export,
    ``torch.set_num_threads`` (process-wide) for a torch model. An export loads without torch.
    """
    from nlp_distill.export.backends import exported_class, load_exported
    from nlp_distill.models.loader import load_model, model_class_of

    _check_choices(backend, precision)
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConfigError(f"{model_dir}: no such folder")
    exported = exported_class(folder) or exported_class(folder / "model")
    if exported:
        if backend == "torch":
            raise ConfigError(f"{model_dir} is an ONNX export ({exported}); run it with backend 'onnx' or 'auto'")
        if device is not None and str(device) != "cpu":
            raise ConfigError(f"{model_dir} is an ONNX export: it runs on the CPU, not on {device}")
        if precision is not None and precision not in ONNX_PRECISIONS:
            raise ConfigError(f"{model_dir} is an ONNX export: precision {precision} applies to torch models; an export "
                              "runs its fp32 or int8 file (precision fp32 or int8)")
        sub = folder if exported_class(folder) else folder / "model"
        variant = None if precision in (None, "auto") else precision
        return load_exported(sub, variant=variant, threads=threads), exported, "onnx"
    cls, _ = model_class_of(folder)
    if backend == "onnx":
        raise ConfigError(f"{model_dir} holds {'a ' + cls if cls else 'no model'}, not an exported model (ONNX); "
                          "make one with `nlp-export onnx`, or use backend 'torch' or 'auto'")
    if precision == "int8":
        raise ConfigError(f"{model_dir} holds a torch model ({cls or 'none'}): precision int8 runs an ONNX export's int8 "
                          f"file; make one with `nlp-export onnx --quantize int8 --model_dir {model_dir} --output_dir DIR` "
                          "and run that folder")
    if threads:
        import torch

        torch.set_num_threads(threads)
    model = load_model(folder)
    if precision is not None:
        model.config.precision = precision
    if device is not None:
        model.to(device)
    return model.eval(), type(model).__name__, "torch"


class NerPipeline:
    """Tags text or token lists with a loaded model; see the module docstring and ``pipeline``.

    Attributes:
        labels: the model's tag list (output order).
        model_kind: the saved model class: ``NeuralTagger``, ``TransformerTokenClassifier``,
            ``OnnxTagger`` or ``OnnxTransformer``.
        backend: ``"torch"`` or ``"onnx"``.
        batch_size: sentences (student) / windows (transformer) per batch.
        output: what a call returns per text: ``"entities"`` (span tags: BIO, BIOES, IO) or
            ``"words"`` (plain tags such as POS: one dict per word); also the key of the
            ``nlp-serve`` response and of the JSON lines of ``nlp-inference predict``.

    Calls are serialised by a lock, so one pipeline may serve several threads (one at a time).
    """

    def __init__(self, model, model_kind: str, backend: str, batch_size: int = 64) -> None:
        self.model = model
        self.model_kind = model_kind
        self.backend = backend
        self.batch_size = batch_size
        self.labels: List[str] = list(model.labels.labels)
        self._label2id = model.labels.label2id
        self.output = "words" if model.labels.scheme == PLAIN else "entities"
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NerPipeline({self.model_kind}, backend={self.backend}, labels={self.labels})"

    def __call__(self, inputs: Union[str, Sequence[str]]) -> Union[List[Dict[str, Any]], List[List[Dict[str, Any]]]]:
        """Entities of one text (a list of dicts) or of each of a list of texts (a list of lists).

        Each entity: ``{"entity_group", "score", "word", "start", "end"}``, ``start``/``end``
        character offsets into the text (``text[start:end] == word``). A model of plain tags
        (``output == "words"``, e.g. POS) gives every word instead: ``{"word", "tag", "score",
        "start", "end"}``.
        """
        if isinstance(inputs, str):
            return self._plain(self.tag_texts([inputs])[0])
        if isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs):
            return [self._plain(r) for r in self.tag_texts(inputs)]
        raise TypeError(f"a pipeline takes a str or a list of str, not {type(inputs).__name__}"
                        + (" of non-str items (use tag_tokens for token lists)" if isinstance(inputs, (list, tuple)) else ""))

    def _plain(self, record: Dict[str, Any]) -> List[Dict[str, Any]]:
        if self.output == "words":
            return [dict(w) for w in record["words"]]
        keys = ("entity_group", "score", "word", "start", "end")
        return [{k: e[k] for k in keys} for e in record["entities"]]

    def tag_texts(self, texts: Sequence[str]) -> List[Dict[str, Any]]:
        """Tokenize each text (``data.tokenize``) and tag it.

        Returns:
            per text ``{"text", "tokens", "spans", "tags", "scores", "entities"}`` (entities as in
            ``tag_tokens``, with character offsets into the text), plus ``"words"`` for a model of
            plain tags (``{"word", "tag", "score", "start", "end"}`` per token).
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("tag_texts takes a list of str")
        tokenized = [tokenize(t) for t in texts]
        records = self._tag([t.tokens for t in tokenized], [t.spans for t in tokenized], list(texts))
        for r, t, text in zip(records, tokenized, texts):
            r["text"], r["spans"] = text, t.spans
        return records

    def tag_tokens(self, sentences: Sequence[Sequence[str]]) -> List[Dict[str, Any]]:
        """Tag pre-tokenised sentences, e.g. ``ner.tag_tokens([["Empire", "State", "Building"]])``.

        Returns:
            per sentence ``{"tokens", "tags", "scores", "entities"}``: ``scores`` the probability
            of each token's tag; each entity ``{"entity_group", "score", "word", "start", "end",
            "token_start", "token_end"}`` with token indices (end exclusive), ``word`` the tokens
            joined by spaces and ``start``/``end`` ``None`` (no original text). A model of plain
            tags (POS) holds no entities (``[]``) and adds ``"words"``: ``{"word", "tag",
            "score", "start": None, "end": None}`` per token.

        Raises:
            TypeError: a str (or a list of str) where a list of token lists is expected.
            ValueError: an empty token or one holding whitespace (untokenised text).
        """
        check_token_lists(sentences, "tag_tokens input")
        for i, s in enumerate(sentences):
            for j, tok in enumerate(s):
                if not tok or any(c.isspace() for c in tok):
                    raise ValueError(f"sentence {i}, token {j} {tok!r} is empty or holds whitespace: tokens are single "
                                     "words (pass raw text to the pipeline itself to have it tokenized)")
        return self._tag([list(s) for s in sentences], None, None)

    def _tag(self, token_lists: List[List[str]], spans: Optional[List[List[Span]]],
             texts: Optional[List[str]]) -> List[Dict[str, Any]]:
        with self._lock:
            tags, probs = self.model.predict_with_probs(token_lists, batch_size=self.batch_size)
        out = []
        for k, (tokens, t, p) in enumerate(zip(token_lists, tags, probs)):
            scores = [min(1.0, max(float(p[i, self._label2id[tag]]), _TINY)) for i, tag in enumerate(t)]
            ents = entities(tokens, t, scores, spans[k] if spans else None, texts[k] if texts else None)
            out.append({"tokens": tokens, "tags": t, "scores": scores, "entities": ents})
            if self.output == "words":
                out[-1]["words"] = words(tokens, t, scores, spans[k] if spans else None)
        return out


def words(tokens: Sequence[str], tags: Sequence[str], scores: Sequence[float],
          spans: Optional[Sequence[Span]] = None) -> List[Dict[str, Any]]:
    """One dict per token of a sentence of plain tags: ``{"word", "tag", "score", "start",
    "end"}``, character offsets from ``spans`` (``None`` without them)."""
    return [{"word": tok, "tag": tag, "score": score, "start": spans[i][0] if spans else None,
             "end": spans[i][1] if spans else None} for i, (tok, tag, score) in enumerate(zip(tokens, tags, scores))]


def entities(tokens: Sequence[str], tags: Sequence[str], scores: Sequence[float],
             spans: Optional[Sequence[Span]] = None, text: Optional[str] = None) -> List[Dict[str, Any]]:
    """Entity dicts of a tagged sentence (``entity_spans`` of its tags), scored by the mean of
    their tokens' scores; with ``spans`` and ``text``, character offsets and the surface string
    ``text[start:end]``, else ``word`` is the tokens joined by spaces."""
    out = []
    for a, b, etype in entity_spans(tags):
        start, end = (spans[a][0], spans[b - 1][1]) if spans else (None, None)
        word = text[start:end] if spans and text is not None else " ".join(tokens[a:b])
        out.append({"entity_group": etype, "score": float(np.mean(scores[a:b])), "word": word,
                    "start": start, "end": end, "token_start": a, "token_end": b})
    return out


def pipeline(model_dir, backend: str = "auto", device=None, batch_size: int = 64,
             precision: Optional[str] = None, threads: Optional[int] = None) -> NerPipeline:
    """A ``NerPipeline`` over the model saved in ``model_dir`` (any model kind of this library).

    Entities per text for span tags (NER), one dict per word for plain tags (POS); see
    ``NerPipeline.__call__``. An ONNX export runs without torch or transformers installed.

    Args:
        model_dir: a model folder, or a run folder holding ``model/``.
        backend: ``"auto"`` (ONNX Runtime for an export, torch otherwise), ``"torch"`` or ``"onnx"``.
        device: torch device for torch models (``"cpu"``, ``"cuda"``, ``"cuda:1"``); default: CPU.
        batch_size: sentences (student) / windows (transformer) per batch.
        precision: a torch model's dtype, ``"fp32"``, ``"bf16"`` or ``"auto"`` instead of the
            saved one; for an ONNX export the file it runs, ``"fp32"`` or ``"int8"`` (default and
            ``"auto"``: int8 when the export has it). ``"int8"`` on a torch model, or on an export
            without an int8 file, is a ``ConfigError`` saying how to make one.
        threads: CPU threads: ONNX Runtime intra-op threads of an export's session, or
            ``torch.set_num_threads`` (process-wide) for a torch model; default: the runtime's choice.
    """
    model, kind, used = load_for_inference(model_dir, backend, device, precision, threads)
    logger.info("%s: %s on %s", model_dir, kind, used)
    return NerPipeline(model, kind, used, batch_size)
