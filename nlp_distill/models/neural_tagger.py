"""NeuralTagger: embedder (word + char + shape) -> encoder (BiLSTM | ID-CNN) -> linear -> [CRF]."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from nlp_distill.config import CompactConfig, TaggerConfig
from nlp_distill.data.batching import Batch, EncodedData, bucket_batches
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.token_table import TokenTable
from nlp_distill.data.tokenize import check_token_lists
from nlp_distill.data.vocab import Vocab, build_char_vocab
from nlp_distill.io import LIBRARY_VERSION, read_json, resolve_model_dir, write_json
from nlp_distill.models.tagger_storage import compact_state, restore_state
from nlp_distill.modules.crf import CRF
from nlp_distill.modules.embedders import WordCharEmbedder
from nlp_distill.modules.encoders import build_encoder
from nlp_distill.modules.masked_loss import ce
from nlp_distill.modules.viterbi import best_valid_paths
from nlp_distill.precision import autocast, bf16_lstm_runs, warn_bf16_fallback

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
PREDICT_BLOCK = 8192  # sentences whose distinct tokens share one vector table (bounds its memory)


class NeuralTagger(nn.Module):
    """A small sequence tagger (the student).

    Args:
        config: architecture.
        word_vocab, char_vocab: vocabularies (built from training data only).
        labels: label vocabulary (output order).
    """

    def __init__(self, config: TaggerConfig, word_vocab: Vocab, char_vocab: Vocab, labels: LabelVocab) -> None:
        super().__init__()
        if config.word_emb_dim is None:  # unresolved (no vectors file): the saved config records the size used
            config = config.replace(word_emb_dim=config.DEFAULT_WORD_DIM)
        self.config = config
        self.word_vocab = word_vocab
        self.char_vocab = char_vocab
        self.labels = labels
        self.embedder = WordCharEmbedder(config, len(word_vocab), len(char_vocab))
        self.encoder: nn.Module = build_encoder(self.embedder.out_dim, config)
        self.proj = nn.Linear(self.encoder.out_dim, len(labels))
        self.crf: Optional[CRF] = None
        if config.use_crf:
            if config.crf_constraints:
                start, trans = labels.allowed_transitions()
                self.crf = CRF(len(labels), start, trans, labels.allowed_end())
            else:
                self.crf = CRF(len(labels))

    @classmethod
    def build(cls, config: TaggerConfig, train: Sequence[Sentence], labels: LabelVocab,
              extra_words: Sequence[str] = ()) -> "NeuralTagger":
        """A new tagger whose word/char vocabularies come from ``train`` (training text only), the
        word vocabulary extended by ``extra_words`` (e.g. frequent words of pretrained vectors, so
        a test word never seen in training still has a vector)."""
        wv = Vocab.build((s.tokens for s in train), config.min_word_freq, config.lowercase)
        for w in extra_words:
            wv.add(w)
        cv = build_char_vocab(s.tokens for s in train)
        return cls(config, wv, cv, labels)

    # ---------------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> torch.Tensor:
        """Emissions (B, L, C) per word (for a CRF model: unary scores; else logits)."""
        return self.proj(self.features(batch))  # (B, L, C)

    def features(self, batch: Batch) -> torch.Tensor:
        """Encoder output (B, L, H) per word: what hidden-state distillation matches."""
        x = self.embedder(batch.words, batch.chars, batch.shapes)  # (B, L, D)
        return self.encoder(x, batch.mask)  # (B, L, H)

    def gold_loss(self, emissions: torch.Tensor, batch: Batch, tags: Optional[torch.Tensor] = None,
                  weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Summed hard-label loss and the number of labeled words (the Trainer divides).

        CE sums over labeled words; the CRF NLL of a sentence is a sum over its words too, so both
        are averaged per word by the same division. Sentences whose tags are all -100 are skipped.

        Args:
            emissions: (B, L, C); tags: (B, L) ids or -100 (default ``batch.tags``);
            weight: (B,) per-sentence weights (default ``batch.weight``).

        Returns:
            (loss_sum scalar, n_words scalar)
        """
        tags = batch.tags if tags is None else tags
        weight = batch.weight if weight is None else weight
        labeled = (tags != -100) & batch.mask  # (B, L)
        n = labeled.sum()
        if self.crf is None:
            return ce(emissions, tags, batch.mask, weight, reduction="sum"), n
        # the CRF scores whole paths: a sentence is either fully tagged or skipped (e.g. a
        # pseudo-labeled sentence under the confidence threshold); partial tags are an error
        full = labeled.sum(1) == batch.mask.sum(1)  # (B,)
        if bool((labeled.any(1) & ~full).any()):
            raise ValueError("CRF loss needs every word of a tagged sentence tagged")
        if not bool(full.any()):
            return emissions.sum() * 0.0, n
        nll = self.crf.nll(emissions[full], tags[full], batch.mask[full])  # (B',)
        return (nll * weight[full]).sum(), labeled[full].sum()

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> List[List[int]]:
        """Label ids per sentence: Viterbi for CRF models, the best scheme-valid softmax path otherwise (``decode_rows``).

        Args:
            emissions: (B, L, C); mask: (B, L) bool, left-aligned, every sentence non-empty.
        """
        return self.decode_rows(emissions[mask], mask.sum(1).tolist())

    def decode_rows(self, rows: torch.Tensor, lengths: Sequence[int]) -> List[List[int]]:
        """Label ids per sentence from concatenated emission rows (T, C), ``lengths`` words each."""
        if self.crf is not None:
            return self.crf.viterbi_rows(rows, lengths)
        if not len(lengths):
            return []
        # softmax students: the most probable sequence the scheme allows, as the CRF's Viterbi
        return best_valid_paths(np.split(rows.float().cpu().numpy(), np.cumsum(lengths)[:-1]), self.labels)

    def encode(self, sentences: Sequence[Sentence], weights=None) -> EncodedData:
        return EncodedData(sentences, self.word_vocab, self.char_vocab, self.labels, self.config.max_word_length, weights)

    @torch.no_grad()
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> List[List[str]]:
        """Tags for token lists, e.g. ``tagger.predict([["EU", "rejects", "German", "call"]])``.

        Featurisation runs once per distinct token of a block of ``PREDICT_BLOCK`` sentences (see
        ``token_vectors``); batches are length-sorted; the tags equal running ``forward`` on
        ``encode(...).collate(...)`` batches.
        """
        return self._blocks(sentences, batch_size, with_probs=False)[0]

    @torch.no_grad()
    def predict_with_probs(self, sentences: Sequence[Sequence[str]], batch_size: int = 64
                           ) -> Tuple[List[List[str]], List[np.ndarray]]:
        """``predict``'s tags and each word's label distribution: CRF marginals
        p(y_t = c | x) for a CRF model (forward-backward), softmax of the emissions otherwise.

        Returns:
            (tags per sentence, one (n_words, C) float32 array per sentence)
        """
        return self._blocks(sentences, batch_size, with_probs=True)

    def _blocks(self, sentences: Sequence[Sequence[str]], batch_size: int, with_probs: bool):
        check_token_lists(sentences)
        was = self.training
        if was:  # toggling modes walks every submodule: 0.2 ms of a one-sentence call
            self.eval()
        try:
            sentences = [list(s) for s in sentences]
            tags: List[List[str]] = []
            probs: List[np.ndarray] = []
            for start in range(0, len(sentences), PREDICT_BLOCK):
                t, p = self._predict_block(sentences[start : start + PREDICT_BLOCK], batch_size, with_probs)
                tags.extend(t)
                probs.extend(p)
            return tags, probs
        finally:
            if was:
                self.train()

    def _predict_block(self, sentences: List[List[str]], batch_size: int, with_probs: bool = False
                       ) -> Tuple[List[List[str]], List[np.ndarray]]:
        """Tags (and with ``with_probs`` label distributions, else ``[]``) of one block."""
        table = TokenTable(sentences)
        vectors = self.token_vectors(table.tokens)  # (1 + U, D)
        out: List[List[str]] = [[] for _ in sentences]
        probs: List[np.ndarray] = [np.zeros((0, len(self.labels)), np.float32) for _ in sentences] if with_probs else []
        order: List[int] = []  # sentences in the order their emission rows are collected
        rows: List[torch.Tensor] = []
        for idx in bucket_batches(table.lengths, batch_size, shuffle=False):
            idx = [i for i in idx if table.lengths[i] > 0]
            if not idx:
                continue
            ids, mask = table.collate(idx)  # (B, L), (B, L)
            ids, mask = ids.to(vectors.device), mask.to(vectors.device)
            with self.autocast():
                emissions = self.proj(self.encoder(vectors[ids], mask)).float()  # (B, L, C)
            rows.append(emissions[mask])  # (words of the batch, C)
            order.extend(idx)
        if order:  # one decode for the block: Viterbi steps once per position of its longest sentence
            lengths = [table.lengths[i] for i in order]
            for i, tags in zip(order, self.decode_rows(torch.cat(rows), lengths)):
                out[i] = self.labels.decode(tags)
            if with_probs:
                for i, p in zip(order, self.label_probs(torch.cat(rows), lengths, batch_size)):
                    probs[i] = p
        return out, probs

    def label_probs(self, rows: torch.Tensor, lengths: Sequence[int], batch_size: int = 64) -> List[np.ndarray]:
        """Per-word label distributions from concatenated emission rows (T, C), ``lengths`` words
        each: CRF marginals (``CRF.marginals``, ``batch_size`` sentences at a time) or softmax.

        Returns:
            one (n_words, C) float32 array per sentence.
        """
        parts = list(torch.split(rows.float(), list(lengths)))
        if self.crf is None:
            return [p.softmax(-1).cpu().numpy() for p in parts]
        out: List[np.ndarray] = []
        for a in range(0, len(parts), batch_size):
            chunk = parts[a : a + batch_size]
            em = nn.utils.rnn.pad_sequence(chunk, batch_first=True)  # (B, L, C)
            mask = nn.utils.rnn.pad_sequence([torch.ones(len(p), dtype=torch.bool, device=em.device) for p in chunk],
                                             batch_first=True)  # (B, L)
            marg = self.crf.marginals(em, mask).cpu().numpy()  # (B, L, C)
            out.extend(marg[b, : len(p)] for b, p in enumerate(chunk))
        return out

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of predict's encoder where ``config.precision`` asks for it
        (``precision.autocast``); ``auto`` stays fp32 on CUDA, where bf16 students are not measured."""
        precision = self.config.precision
        if precision == "auto" and self.device.type == "cuda":
            precision = "fp32"
        if (precision != "fp32" and self.encoder.lstm_kernel
                and not bf16_lstm_runs(self.device.type)):  # bf16 asked or auto-chosen, kernel missing
            if precision == "bf16":
                warn_bf16_fallback("student precision bf16")
            precision = "fp32"
        return autocast(self.device, precision)

    def token_vectors(self, tokens: Sequence[str], chunk: int = 1024) -> torch.Tensor:
        """The embedder's output for each token (eval mode), with a zero row 0 for padding.

        Tokens go through the char encoder in chunks of similar length (a chunk's char rows are
        as wide as its longest word).

        Args:
            tokens: distinct tokens (U,).

        Returns:
            (1 + U, D) tensor on the model's device.
        """
        order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]))
        data = self.encode([Sentence([tokens[i] for i in order[c : c + chunk]]) for c in range(0, len(order), chunk)])
        out = torch.zeros(1 + len(tokens), self.embedder.out_dim, device=self.device)
        rows = torch.as_tensor(order, dtype=torch.long, device=self.device) + 1
        for k in range(len(data)):
            b = data.collate([k]).to(self.device)
            out[rows[k * chunk : (k + 1) * chunk]] = self.embedder(b.words, b.chars, b.shapes)[0]  # (chunk, D)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------- save / load
    def save_pretrained(self, folder, storage: Optional[CompactConfig] = None) -> None:
        """Folder: ``config.json`` (architecture, labels, library version), ``model.safetensors``,
        ``vocab.json`` (words + chars).

        Args:
            storage: store the weights compactly (``nlp-export compact``: product-quantised word
                table, fp16); recorded in ``config.json`` so ``from_pretrained`` restores them.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        cfg = {"model_class": "NeuralTagger", "library_version": LIBRARY_VERSION, "tagger": self.config.to_dict(),
               "labels": self.labels.labels}
        if storage is not None:
            state, cfg["storage"] = compact_state(state, storage), storage.to_dict()
        write_json(folder / "config.json", cfg)
        # one line: an indented 50k-word vocabulary is 40% spaces and newlines
        write_json(folder / "vocab.json", {"words": self.word_vocab.to_dict(), "chars": self.char_vocab.to_dict()},
                   indent=None)
        save_file(state, str(folder / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, folder, map_location: str = "cpu") -> "NeuralTagger":
        """Rebuild from ``config.json`` + ``vocab.json`` and load weights strictly (compactly
        stored weights are restored to float32 first)."""
        from safetensors.torch import load_file

        folder = resolve_model_dir(folder)
        cfg = read_json(folder / "config.json")
        if cfg.get("model_class") != "NeuralTagger":
            raise ValueError(f"{folder} holds a {cfg.get('model_class')!r}, not a NeuralTagger")
        vocab = read_json(folder / "vocab.json")
        tcfg = TaggerConfig.from_dict(cfg["tagger"])
        model = cls(tcfg, Vocab.from_dict(vocab["words"]), Vocab.from_dict(vocab["chars"]), LabelVocab(cfg["labels"]))
        state = load_file(str(folder / WEIGHTS_FILE), device=map_location)
        if "storage" in cfg:
            state = restore_state({k: v.cpu() for k, v in state.items()}, CompactConfig.from_dict(cfg["storage"]))
        model.load_state_dict(state, strict=True)
        model.eval()
        return model
