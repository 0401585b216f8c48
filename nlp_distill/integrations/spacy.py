"""The spaCy component ``nlp_distill_ner``: ``doc.ents`` (or ``token.tag_``) from any saved model of
this library (student, compact student, transformer, ONNX export)::

    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("nlp_distill_ner", config={"model": "runs/student"})
    doc = nlp("Mary Jones flew to New York")
    [(e.text, e.label_) for e in doc.ents]   # e.g. [('Mary Jones', 'person'), ('New York', 'geo-loc')]
    nlp.to_disk("ner_pipeline")               # the model folder is copied into the pipeline
    nlp = spacy.load("ner_pipeline")          # needs only ner_pipeline/

spaCy finds the factory through the ``spacy_factories`` entry point of this package
(``pip install 'spacy>=3.8,<3.9'``, or ``pip install -e '.[spacy]'`` in the clone). This module imports spaCy; the rest of the library never
imports this module, so ``import nlp_distill`` works without spaCy.

How a Doc is tagged:

- Tokens: the model reads the Doc's text split by ``data.tokenize`` (the tokenizer ``pipeline(DIR)``
  uses), not spaCy's tokens, so it sees what it sees everywhere else. Its entities are character
  spans, put on spaCy's tokens by ``doc.char_span(start, end, label, alignment_mode="expand")``:
  an entity boundary inside a spaCy token grows to cover that whole token. Where two entities then
  overlap (both inside one spaCy token) the longer one is kept (``spacy.util.filter_spans``).
  ``doc.ents`` is replaced.
- Long documents are tagged whole: the tokens are split into windows of at most
  ``max_sentence_length`` tokens and every token is in exactly one window. Windows follow the
  Doc's sentences where an earlier component set them (``sentencizer``, a parser); a longer run
  is cut after its last sentence-final token (``.``, ``!``, ``?``, ``...``) in the second half
  of the window, else after ``max_sentence_length`` tokens. An entity never spans two windows.
- Batching: ``nlp.pipe(texts, batch_size=N)`` tags each N docs with one model call (the windows
  of all N docs together; inside it the model runs ``batch_size`` windows per forward pass).
- A model with plain tags (POS) sets ``token.tag_`` instead of ``doc.ents``: each spaCy token gets
  the tag of the first model token it overlaps; a token the model never sees (whitespace, a
  zero-width character) gets ``_SP``, spaCy's tag for whitespace.
- Saving: ``nlp.to_disk(PATH)`` copies the model folder to ``PATH/<component name>/model`` and
  ``spacy.load(PATH)`` reads it from there, so the loaded pipeline does not need the original
  folder. ``nlp.to_bytes`` does not carry the model.
- The model folder is read when the component first runs (or at ``nlp.initialize()``), not when
  it is added: ``spacy.load`` builds each component from ``config.cfg``, whose ``model`` still
  names the original folder, before ``from_disk`` gives it the copy inside the pipeline. A missing
  or wrong folder is one ``ConfigError`` naming it and the fix, raised by that first call.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from nlp_distill.data.labels import entity_spans, is_plain_tag_set
from nlp_distill.data.tokenize import tokenize
from nlp_distill.errors import ConfigError

try:
    from spacy.language import Language
    from spacy.tokens import Doc
    from spacy.util import filter_spans, minibatch
except ModuleNotFoundError:  # only reached by importing this module directly
    raise ModuleNotFoundError("nlp_distill.integrations.spacy needs spaCy 3.8: pip install 'spacy>=3.8,<3.9'") from None

logger = logging.getLogger(__name__)

FACTORY = "nlp_distill_ner"
MODEL_SUBDIR = "model"  # the copied model folder inside the component's folder of a saved pipeline
SPACE_TAG = "_SP"  # spaCy's tag for whitespace tokens
DEFAULT_CONFIG: Dict[str, Any] = {"backend": "auto", "batch_size": 64, "max_sentence_length": 128, "threads": None}
_SENTENCE_END = frozenset(".!?")


def ends_sentence(token: str) -> bool:
    """True for a sentence-final token: ``.``, ``!``, ``?`` or a run of them (``...``, ``!!``)."""
    return bool(token) and all(c in _SENTENCE_END for c in token)


def token_windows(tokens: Sequence[str], max_len: int, breaks: Iterable[int] = ()) -> List[Tuple[int, int]]:
    """Split ``tokens`` into windows: ``(start, end)`` token ranges, in order, that cover every token once.

    Args:
        tokens: the text's tokens.
        max_len: most tokens per window.
        breaks: token indices where a sentence starts (a window never crosses one).

    Returns:
        the windows; a run longer than ``max_len`` is cut after its last sentence-final token
        (``ends_sentence``) in the second half of the window, else after ``max_len`` tokens.
    """
    if max_len < 1:
        raise ConfigError(f"max_sentence_length {max_len}: expected at least 1 token per window")
    n = len(tokens)
    cuts = sorted({b for b in breaks if 0 < b < n})
    out: List[Tuple[int, int]] = []
    for a, b in zip([0] + cuts, cuts + [n]):
        while b - a > max_len:
            end = a + max_len
            cut = next((i + 1 for i in range(end - 1, a + max_len // 2 - 1, -1) if ends_sentence(tokens[i])), end)
            out.append((a, cut))
            a = cut
        if b > a:
            out.append((a, b))
    return out


class Tagged(NamedTuple):
    """The model's output for one Doc, on the model's tokens."""

    spans: List[Tuple[int, int]]  # character (start, end) of each model token
    tags: List[str]  # one tag per model token
    entities: List[Tuple[int, int, str]]  # (first token, end token exclusive, entity type)


class DistillTagger:
    """The ``nlp_distill_ner`` component; see the module docstring.

    Args:
        nlp: the pipeline (unused; spaCy passes it to every factory).
        name: the component's name in the pipeline.
        model: a model folder of this library, or a run folder holding ``model/``: a student, a
            compact student, a transformer or an ONNX export.
        backend: ``"auto"`` (ONNX Runtime for an export, torch otherwise), ``"torch"`` or ``"onnx"``.
        batch_size: windows per forward pass inside one model call.
        max_sentence_length: most tokens per window (longer sentences are split, never truncated).
        threads: CPU threads of the model (``pipeline(threads=)``; for torch process-wide);
            ``None``: the runtime's choice.
    """

    def __init__(self, nlp: Optional[Language], name: str, model: str, backend: str = "auto", batch_size: int = 64,
                 max_sentence_length: int = 128, threads: Optional[int] = None) -> None:
        from nlp_distill.pipelines import BACKENDS

        if backend not in BACKENDS:
            raise ConfigError(f"{name}: backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        for key, value in (("batch_size", batch_size), ("max_sentence_length", max_sentence_length)):
            if value < 1:
                raise ConfigError(f"{name}: {key} {value}: expected at least 1")
        self.name = name
        self.backend, self.batch_size, self.max_sentence_length, self.threads = backend, batch_size, max_sentence_length, threads
        self._source = Path(model)
        self._model = None  # the loaded model (``predict(sentences, batch_size)``), on first use
        self._backend_used = ""  # "torch" or "onnx"
        self._folder: Optional[Path] = None  # the model folder itself (inside a run folder)
        self._lock = threading.Lock()  # one model call at a time
        self.plain = False  # the model predicts plain tags (POS): token.tag_ instead of doc.ents

    def __repr__(self) -> str:
        return f"DistillTagger({self.name!r}, model={str(self._source)!r})"

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled without the loaded model (an ONNX session does not pickle): a copy, e.g. in a
        process of ``nlp.pipe(n_process=N)``, loads it again from the same folder."""
        state = dict(self.__dict__)
        state.update(_model=None, _lock=None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the model

    def _model_folder(self) -> Path:
        """The folder holding the model (``model/`` of a run folder), checked to hold one."""
        from nlp_distill.export.backends import exported_class
        from nlp_distill.models.loader import model_class_of

        src = self._source
        if not src.is_dir():
            raise ConfigError(f"{self.name}: model folder {src} does not exist (config 'model'); give a folder written by "
                              "nlp-train or nlp-export (a run folder or its model/ folder)")
        for folder in (src, src / MODEL_SUBDIR):
            if exported_class(folder):
                return folder
        cls, folder = model_class_of(src)
        if cls is None:
            raise ConfigError(f"{self.name}: {src} holds no saved model of this library (config 'model'); give a folder "
                              "written by nlp-train (a run folder or its model/ folder) or by nlp-export")
        return folder

    @property
    def predictor(self):
        """The model of the ``model`` folder, loaded on first use (``pipelines.load_for_inference``);
        not named ``model``, which spaCy reads as a component's thinc model."""
        if self._model is None:
            self._load()
        return self._model

    def _load(self) -> None:
        from nlp_distill.pipelines import load_for_inference

        folder = self._model_folder()
        try:
            model, kind, used = load_for_inference(folder, backend=self.backend, threads=self.threads)
        except ConfigError as e:
            raise ConfigError(f"{self.name}: {e}") from None
        self._model, self._backend_used, self._folder = model, used, folder
        self.plain = is_plain_tag_set(model.labels.labels)
        logger.info("%s: %s (%s) from %s, sets %s", self.name, kind, used, folder, "token.tag_" if self.plain else "doc.ents")

    def _tag(self, sentences: List[List[str]]) -> List[List[str]]:
        """The model's tags of token lists: one ``predict`` call (Viterbi or argmax; no scores)."""
        model = self.predictor
        grad_off = contextlib.nullcontext()
        if self._backend_used == "torch":
            import torch

            grad_off = torch.inference_mode()
        with self._lock, grad_off:
            return model.predict(sentences, batch_size=self.batch_size)

    def initialize(self, get_examples=None, *, nlp: Optional[Language] = None) -> None:
        """Load the model now (``nlp.initialize()``): a wrong ``model`` folder fails here, not on the first Doc."""
        self._load()

    # ------------------------------------------------------------ tagging

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc], self.predict([doc]))
        return doc

    def pipe(self, stream: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        """Tag ``batch_size`` docs at a time, one model call per batch."""
        for docs in minibatch(stream, size=batch_size):
            self.set_annotations(docs, self.predict(docs))
            yield from docs

    def predict(self, docs: Sequence[Doc]) -> List[Tagged]:
        """The model's tags and entities for each Doc: the windows of all docs in one model call."""
        plans, flat = [], []
        for doc in docs:
            tok = tokenize(doc.text)
            wins = token_windows(tok.tokens, self.max_sentence_length, self._sentence_breaks(doc, tok.spans))
            plans.append((tok, wins))
            flat += [tok.tokens[a:b] for a, b in wins]
        results = iter(self._tag(flat) if flat else [])
        out = []
        for tok, wins in plans:
            tags: List[str] = []
            ents: List[Tuple[int, int, str]] = []
            for a, _ in wins:
                window_tags = next(results)
                tags += window_tags
                ents += [(a + s, a + e, etype) for s, e, etype in entity_spans(window_tags)]
            out.append(Tagged(list(tok.spans), tags, ents))
        return out

    @staticmethod
    def _sentence_breaks(doc: Doc, spans: Sequence[Tuple[int, int]]) -> List[int]:
        """Model-token indices where the Doc's sentences (set by an earlier component) start."""
        if not doc.has_annotation("SENT_START"):
            return []
        starts = [s for s, _ in spans]
        return [bisect_left(starts, sent.start_char) for sent in doc.sents]

    def set_annotations(self, docs: Sequence[Doc], tagged: Sequence[Tagged]) -> None:
        """``doc.ents`` from the entities (``token.tag_`` from the tags of a plain-tag model)."""
        for doc, t in zip(docs, tagged):
            if self.plain:
                self._set_tags(doc, t)
                continue
            spans = [doc.char_span(t.spans[a][0], t.spans[b - 1][1], label=etype, alignment_mode="expand")
                     for a, b, etype in t.entities]
            doc.ents = filter_spans([s for s in spans if s is not None])

    @staticmethod
    def _set_tags(doc: Doc, t: Tagged) -> None:
        ends = [e for _, e in t.spans]
        for token in doc:
            j = bisect_right(ends, token.idx)  # the first model token ending after the spaCy token starts
            token.tag_ = t.tags[j] if j < len(ends) and t.spans[j][0] < token.idx + len(token.text) else SPACE_TAG

    def score(self, examples, **kwargs) -> Dict[str, Any]:
        """spaCy's scores for ``nlp.evaluate``: entity P/R/F (``ents_*``), or ``tag_acc`` for a plain-tag model."""
        from spacy.scorer import Scorer, get_ner_prf

        _ = self.predictor  # loaded, so ``plain`` is known
        return Scorer.score_token_attr(examples, "tag", **kwargs) if self.plain else get_ner_prf(examples)

    # ------------------------------------------------------------ saving

    def to_disk(self, path, *, exclude: Iterable[str] = ()) -> None:
        """Copy the model folder to ``PATH/model`` (``nlp.to_disk`` gives ``PATH`` = the pipeline's folder of this component)."""
        src = self._folder if self._folder is not None else self._model_folder()
        if not src.is_dir():
            raise ConfigError(f"{self.name}: cannot save the pipeline: its model folder {src} no longer exists")
        path = Path(path)
        dst = path / MODEL_SUBDIR
        if dst.exists() and dst.resolve() == src.resolve():
            return  # saved onto the folder it was loaded from
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (MODEL_SUBDIR + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)

    def from_disk(self, path, *, exclude: Iterable[str] = ()) -> "DistillTagger":
        """Load the model copied into ``PATH/model`` by ``to_disk``."""
        folder = Path(path) / MODEL_SUBDIR
        if not folder.is_dir():
            raise ConfigError(f"{self.name}: {path} has no {MODEL_SUBDIR}/ folder: save the pipeline with nlp.to_disk "
                              "(it copies the model there)")
        self._source, self._model, self._folder = folder, None, None
        self._load()
        return self


@Language.factory(FACTORY, default_config=DEFAULT_CONFIG, assigns=["doc.ents", "token.ent_iob", "token.ent_type", "token.tag"])
def make_component(nlp: Language, name: str, model: str, backend: str, batch_size: int, max_sentence_length: int,
                   threads: Optional[int]) -> DistillTagger:
    """The ``nlp_distill_ner`` factory: ``nlp.add_pipe("nlp_distill_ner", config={"model": DIR})``."""
    return DistillTagger(nlp, name, model, backend, batch_size, max_sentence_length, threads)
