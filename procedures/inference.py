"""Tag raw text or CoNLL with any saved model (``nlp_distill.pipeline``) and write CoNLL or JSON lines,
to a file (atomically) or to stdout; ``-`` reads stdin."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from itertools import islice
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from nlp_distill.data.conll import iter_conll, iter_lines
from nlp_distill.data.unlabeled import detect_format
from nlp_distill.errors import ConfigError, DataFormatError
from nlp_distill.export.backends import model_kind_of
from nlp_distill.io import atomic_open
from nlp_distill.models.registry import kind_named
from nlp_distill.pipelines import NerPipeline, pipeline
from procedures.logs import setup_logging

logger = logging.getLogger(__name__)

STDIN = "<stdin>"


@contextlib.contextmanager
def readable(data_file) -> Iterator[str]:
    """A path to read ``data_file`` from; ``-``: stdin copied to a temporary file first (format
    detection reads the start twice)."""
    if str(data_file) != "-":
        yield str(data_file)
        return
    tmp = tempfile.mkdtemp(prefix="nlp-inference-")
    try:
        path = os.path.join(tmp, "stdin")
        with open(path, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        try:
            yield path
        except DataFormatError as e:  # name stdin, not the temporary copy
            raise DataFormatError(STDIN if e.path == path else e.path, e.line, e.problem) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_inputs(path: str, fmt: str, encoding: str) -> Iterator[Tuple[int, Optional[str], Optional[List[str]]]]:
    """``(line, raw text, None)`` per non-blank line of raw text, or ``(line, None, tokens)`` per
    CoNLL sentence (tags ignored)."""
    if fmt == "text":
        for lineno, line in iter_lines(path, encoding):
            if line.strip():
                yield lineno, line, None
    else:
        for s in iter_conll(path, tag_column=None, encoding=encoding):
            yield s.line, None, s.tokens


def tag_records(ner: NerPipeline, items: Iterator[Tuple[int, Optional[str], Optional[List[str]]]],
                chunk: int) -> Iterator[Dict[str, Any]]:
    """Tagged records (``tag_texts`` / ``tag_tokens`` output plus ``line``), ``chunk`` inputs at a time."""
    while True:
        block = list(islice(items, chunk))
        if not block:
            return
        texts = [t for _, t, _ in block if t is not None]
        done = iter(ner.tag_texts(texts)) if texts else iter(())
        tokens = iter(ner.tag_tokens([k for _, _, k in block if k is not None]))
        for lineno, text, _ in block:
            rec = next(done) if text is not None else next(tokens)
            if rec["tokens"]:  # a line of zero-width characters holds no token
                yield {"line": lineno, **rec}


def jsonl_line(rec: Dict[str, Any]) -> str:
    """One JSON object: line, text (raw input), tokens, tags, scores, entities (offsets into text),
    and for a model of plain tags (POS) words: the pipeline's per-word dicts."""
    keys = ("line", "text", "tokens", "tags", "scores", "entities", "words")
    return json.dumps({k: rec[k] for k in keys if k in rec}, ensure_ascii=False)


def conll_lines(rec: Dict[str, Any]) -> str:
    return "".join(f"{tok}\t{tag}\n" for tok, tag in zip(rec["tokens"], rec["tags"])) + "\n"


@contextlib.contextmanager
def output(output_file) -> Iterator[IO[str]]:
    """stdout, or ``output_file`` written to a temporary name and renamed when complete."""
    if output_file is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_open(output_file, "w", newline="\n") as f:
        yield f


def check_kind(ner: NerPipeline, kind: Optional[str], model_dir) -> None:
    """The per-kind commands (``tagger``, ``transformer_token``) refuse the other kind."""
    if kind is None:
        return
    want = kind_named(kind)
    if model_kind_of(ner.model_kind) != want:  # a saved model or its export
        raise ConfigError(f"{model_dir} holds a {ner.model_kind}, not a {want.model_class}; a {want.model_class} comes "
                          f"from `{want.made_by}` (or use `nlp-inference predict`, which takes every kind)")


def do_inference(kind: Optional[str], model_dir, data_file, output_file=None, batch_size: int = 64, chunk: int = 2048,
                 input_format: str = "auto", encoding: str = "utf-8", backend: str = "auto",
                 precision: Optional[str] = None, output_format: str = "conll", device: Optional[str] = None) -> int:
    """Tag ``data_file`` (raw text, one text per line, tokenized by ``data.tokenize``; or CoNLL;
    ``-``: stdin) with the model in ``model_dir`` and write CoNLL or JSON lines to ``output_file``
    (stdout when ``None``). ``kind``: refuse other model kinds (the per-kind commands).

    Returns:
        number of sentences tagged.
    """
    setup_logging()
    if output_format not in ("conll", "jsonl"):
        raise ConfigError(f"--output_format {output_format!r}: expected conll or jsonl")
    ner = pipeline(model_dir, backend=backend, device=device, batch_size=batch_size, precision=precision)
    check_kind(ner, kind, model_dir)
    write = jsonl_line if output_format == "jsonl" else conll_lines
    n = 0
    with readable(data_file) as path:
        fmt = detect_format(path, encoding) if input_format == "auto" else input_format
        with output(output_file) as out:
            for rec in tag_records(ner, read_inputs(path, fmt, encoding), chunk):
                out.write(write(rec) + ("\n" if output_format == "jsonl" else ""))
                n += 1
    logger.info("tagged %d sentences from %s", n, STDIN if str(data_file) == "-" else data_file)
    return n
