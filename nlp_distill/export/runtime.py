"""Torch-free predictors over an exported folder: ``OnnxTagger.from_pretrained(dir).predict(...)``
with the same signature as ``NeuralTagger.predict`` (ONNX Runtime + numpy only)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.tokenize import check_token_lists
from nlp_distill.data.vocab import Vocab
from nlp_distill.errors import ConfigError, ModelFolderError
from nlp_distill.export.features import featurize
from nlp_distill.models.folders import newer_version_error, read_model_json
from nlp_distill.modules.label_probs import crf_marginals, softmax
from nlp_distill.modules.viterbi import best_valid_paths, viterbi

VARIANTS = ("fp32", "int8")  # the ONNX files an export may hold (config.json "files")
REEXPORT = "export it again with `nlp-export onnx --model_dir MODEL --output_dir {folder}`"


def _session(folder: Path, files: dict, variant: Optional[str], threads: Optional[int]):
    """(ONNX Runtime session of the ``variant`` file, the variant used); default int8 if exported.

    This is where every command and ``pipeline`` open an export's ONNX file, so a missing,
    damaged or absent variant is reported here once, naming the file and the fix.
    """
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise ConfigError("the ONNX backend needs onnxruntime: pip install onnxruntime") from None
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"precision {variant!r} for the ONNX export {folder}: expected one of {', '.join(VARIANTS)}")
    variant = variant or ("int8" if "int8" in files else "fp32")
    if variant not in files:
        fix = ("export it with `nlp-export onnx --quantize int8`, or run its fp32 file (precision fp32)"
               if variant == "int8" else REEXPORT.format(folder=folder))
        raise ConfigError(f"{folder} has no {variant} model file (its config.json lists {', '.join(files) or 'none'}): "
                          f"{fix}")
    path = folder / files[variant]
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing from the export {folder}: {REEXPORT.format(folder=folder)}")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own classes (InvalidProtobuf, Fail, InvalidGraph, ...)
        problem = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problem = problem.rsplit(" : ", 1)[-1].split("failed:", 1)[-1].strip()  # ORT's "[...] : 7 : ... failed:why"
        raise newer_version_error(folder, problem) or ModelFolderError(
            f"{path} is not a readable ONNX model ({problem}): the file is damaged or incomplete; "
            f"{REEXPORT.format(folder=folder)}") from None
    return session, variant


def _config(folder: Path, expect: str) -> dict:
    cfg = read_model_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if cfg.get("model_class") != expect:
        raise ConfigError(f"{folder} holds a {cfg.get('model_class')}, not an exported model ({expect}); make one with "
                          "`nlp-export onnx --model_dir MODEL --output_dir DIR`")
    missing = [k for k in ("labels", "files") if not isinstance(cfg.get(k), (list, dict))]
    if missing:
        problem = f"its config.json lacks {', '.join(missing)}"
        raise newer_version_error(folder, problem) or ModelFolderError(
            f"{folder / 'config.json'}: {problem}; {REEXPORT.format(folder=folder)}")
    return cfg


def graph_parameters(path) -> Optional[int]:
    """Weights stored in an ONNX file (its initializers' elements), or ``None`` without the
    ``onnx`` package (the runtime itself does not need it)."""
    try:
        import onnx
    except ModuleNotFoundError:
        return None
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer)


def _read_vocab(folder: Path) -> dict:
    """``vocab.json`` of an exported student (its words and characters)."""
    if not (folder / "vocab.json").is_file():
        raise ModelFolderError(f"{folder / 'vocab.json'} is missing from the export {folder}: "
                               f"{REEXPORT.format(folder=folder)}")
    return read_model_json(folder / "vocab.json")


class OnnxTagger:
    """An exported NeuralTagger run by ONNX Runtime.

    Args:
        folder: written by ``nlp-export onnx`` (``export_tagger``).
        variant: ``"int8"`` (when exported) or ``"fp32"``; default: int8 if present.
        threads: intra-op threads for ONNX Runtime (default: its own choice).
    """

    def __init__(self, folder, variant: Optional[str] = None, threads: Optional[int] = None) -> None:
        folder = Path(folder)
        cfg = _config(folder, "OnnxTagger")
        self.session, self.variant = _session(folder, cfg["files"], variant, threads)
        self.files, self.model_file = dict(cfg["files"]), folder / cfg["files"][self.variant]
        self.inputs = {i.name for i in self.session.get_inputs()}  # unused features are pruned from the graph
        vocab = _read_vocab(folder)
        self.words, self.chars = Vocab.from_dict(vocab["words"]), Vocab.from_dict(vocab["chars"])
        self.labels = LabelVocab(cfg["labels"])
        self.max_word_length = cfg["tagger"]["max_word_length"]
        crf = cfg.get("crf")
        self.crf = None if crf is None else tuple(np.asarray(crf[k], np.float32) for k in ("start", "trans", "end"))

    @classmethod
    def from_pretrained(cls, folder, variant: Optional[str] = None, threads: Optional[int] = None) -> "OnnxTagger":
        return cls(folder, variant, threads)

    def num_parameters(self) -> Optional[int]:
        """Weights of the fp32 graph plus the CRF's scores (what the torch student counts), or
        ``None`` without the ``onnx`` package."""
        n = graph_parameters(self.model_file.with_name(self.files["fp32"])) if "fp32" in self.files else None
        return None if n is None else n + (sum(int(a.size) for a in self.crf) if self.crf else 0)

    def emissions(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, L, C) emissions of non-empty sentences."""
        feats = featurize(sentences, self.words, self.chars, self.max_word_length)
        return self.session.run(["emissions"], {k: v for k, v in feats.items() if k in self.inputs})[0]

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> List[List[str]]:
        """Tags per sentence (Viterbi for CRF students, the best scheme-valid softmax path
        otherwise); empty sentences -> []."""
        return self._predict(sentences, batch_size, with_probs=False)[0]

    def predict_with_probs(self, sentences: Sequence[Sequence[str]], batch_size: int = 64
                           ) -> Tuple[List[List[str]], List[np.ndarray]]:
        """``predict``'s tags and each word's label distribution (CRF marginals or softmax).

        Returns:
            (tags per sentence, one (n_words, C) float32 array per sentence)
        """
        return self._predict(sentences, batch_size, with_probs=True)

    def _predict(self, sentences: Sequence[Sequence[str]], batch_size: int, with_probs: bool):
        check_token_lists(sentences)
        order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
        out: List[List[str]] = [[] for _ in sentences]
        probs = [np.zeros((0, len(self.labels)), np.float32) for _ in sentences] if with_probs else []
        for a in range(0, len(order), batch_size):
            idx = order[a : a + batch_size]
            batch = [list(sentences[i]) for i in idx]
            em = self.emissions(batch)  # (B, L, C)
            mask = np.zeros(em.shape[:2], bool)
            for b, s in enumerate(batch):
                mask[b, : len(s)] = True
            ids = viterbi(em, mask, *self.crf) if self.crf else best_valid_paths([em[b, : len(s)] for b, s in enumerate(batch)],
                                                                                 self.labels)
            if with_probs:
                dist = crf_marginals(em, mask, *self.crf) if self.crf else softmax(em)  # (B, L, C)
            for b, (i, p) in enumerate(zip(idx, ids)):
                out[i] = self.labels.decode(p)
                if with_probs:
                    probs[i] = dist[b, : len(p)]
        return out, probs


def pool_words_np(sub: np.ndarray, word_start: np.ndarray, word_len: np.ndarray, mode: str) -> np.ndarray:
    """(B, T, C) sub-token rows -> (B, W, C) word rows: first sub-token or mean (numpy)."""
    if mode == "first":
        return np.take_along_axis(sub, word_start[:, :, None], axis=1)
    pos = np.arange(sub.shape[1])[None, None, :]  # (1, 1, T)
    member = (pos >= word_start[:, :, None]) & (pos < (word_start + word_len)[:, :, None])  # (B, W, T)
    weights = member / np.maximum(word_len, 1)[:, :, None]
    return np.einsum("bwt,btc->bwc", weights, sub)


class OnnxTransformer:
    """An exported TransformerTokenClassifier (teacher or layer-dropped student) run by ONNX
    Runtime, with the same windows, owners and word pooling as the torch model.

    Args: as ``OnnxTagger``.
    """

    def __init__(self, folder, variant: Optional[str] = None, threads: Optional[int] = None) -> None:
        from nlp_distill.data.alignment import WordAligner
        from nlp_distill.export.fast_tokenizer import TOKENIZER_FILE, FastTokenizer

        folder = Path(folder)
        cfg = _config(folder, "OnnxTransformer")
        self.session, self.variant = _session(folder, cfg["files"], variant, threads)
        self.files, self.model_file = dict(cfg["files"]), folder / cfg["files"][self.variant]
        self.labels = LabelVocab(cfg["labels"])
        self.config = cfg["transformer"]
        if (folder / TOKENIZER_FILE).is_file():  # the tokenizers library alone: no transformers, no torch
            tokenizer = FastTokenizer(folder)
        else:  # a slow-only tokenizer (no tokenizer.json) needs transformers
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.aligner = WordAligner(tokenizer, self.config["max_seq_length"], self.config["stride"])

    @classmethod
    def from_pretrained(cls, folder, variant: Optional[str] = None, threads: Optional[int] = None) -> "OnnxTransformer":
        return cls(folder, variant, threads)

    def num_parameters(self) -> Optional[int]:
        """Weights of the fp32 graph (constant folding may merge a few), or ``None`` without ``onnx``."""
        return graph_parameters(self.model_file.with_name(self.files["fp32"])) if "fp32" in self.files else None

    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> List[np.ndarray]:
        """One (n_words, C) float32 array per sentence; every word is filled by its owner window."""
        check_token_lists(sentences)
        wins = self.aligner.encode(sentences)
        order = sorted(range(len(wins)), key=lambda k: len(wins[k].input_ids))
        out = [np.zeros((len(s), len(self.labels)), np.float32) for s in sentences]
        for a in range(0, len(order), batch_size):
            chunk = [wins[k] for k in order[a : a + batch_size]]
            b = self.aligner.collate_arrays(chunk)
            sub = self.session.run(["logits"], {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]})[0]
            words = pool_words_np(sub, b["word_start"], b["word_len"], self.config["pooling"])  # (B, W, C)
            for i, w in enumerate(chunk):
                for j, (wi, own) in enumerate(zip(w.word_index, w.owned)):
                    if own:
                        out[w.sent][wi] = words[i, j]
        return out

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> List[List[str]]:
        """Tags: the most probable sequence the scheme allows (``best_valid_paths``), as the torch model."""
        return [self.labels.decode(p) for p in best_valid_paths(self.word_logits(sentences, batch_size), self.labels)]

    def predict_with_probs(self, sentences: Sequence[Sequence[str]], batch_size: int = 64
                           ) -> Tuple[List[List[str]], List[np.ndarray]]:
        """``predict``'s tags and each word's softmax label distribution."""
        logits = self.word_logits(sentences, batch_size)
        return [self.labels.decode(p) for p in best_valid_paths(logits, self.labels)], [softmax(l) for l in logits]
