"""Word + character (+ word-shape) embedders for the student taggers."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from nlp_distill.config import TaggerConfig
from nlp_distill.data.vocab import N_SHAPES, PAD_ID, UNK_ID

logger = logging.getLogger(__name__)


def word_dropout(words: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Replace real word ids (not padding) by UNK with probability ``p``, in training only.

    Args:
        words: (B, L) ids.
    """
    if not training or p <= 0:
        return words
    drop = (torch.rand_like(words, dtype=torch.float) < p) & (words != PAD_ID)
    return words.masked_fill(drop, UNK_ID)


class CharCNN(nn.Module):
    """Character CNN with max-pooling over the characters of each word."""

    def __init__(self, n_chars: int, emb_dim: int, out_dim: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"char_kernel must be odd, got {kernel}")
        self.emb = nn.Embedding(n_chars, emb_dim, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(emb_dim, out_dim, kernel, padding=kernel // 2)
        self.out_dim = out_dim

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars: (B, L, K) -> (B, L, out_dim)."""
        B, L, K = chars.shape
        x = self.emb(chars.view(B * L, K)).transpose(1, 2)  # (B*L, E, K)
        h = self.conv(x)  # (B*L, D, K)
        pad = (chars.view(B * L, 1, K) == PAD_ID)
        h = h.masked_fill(pad, -1e4).max(dim=2).values  # (B*L, D)
        h = torch.where(pad.all(dim=2), torch.zeros_like(h), h)  # padding words -> 0
        return h.view(B, L, -1)


class CharLSTM(nn.Module):
    """Character BiLSTM; a word is the concatenation of the final forward/backward states."""

    def __init__(self, n_chars: int, emb_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError("char_hidden must be even for a char BiLSTM")
        self.emb = nn.Embedding(n_chars, emb_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(emb_dim, out_dim // 2, batch_first=True, bidirectional=True)
        self.out_dim = out_dim

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars: (B, L, K) -> (B, L, out_dim)."""
        B, L, K = chars.shape
        flat = chars.view(B * L, K)
        lens = (flat != PAD_ID).sum(1)  # (B*L,)
        out = torch.zeros(B * L, self.out_dim, device=chars.device, dtype=self.emb.weight.dtype)
        real = lens > 0
        if real.any():
            x = self.emb(flat[real])
            packed = pack_padded_sequence(x, lens[real].cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)  # h: (2, N, H)
            out[real] = torch.cat([h[0], h[1]], dim=-1)
        return out.view(B, L, -1)


class WordCharEmbedder(nn.Module):
    """word embedding (+ char encoder) (+ word shape) -> concatenated word representations.

    Args:
        config: tagger config.
        n_words, n_chars: vocabulary sizes.
    """

    def __init__(self, config: TaggerConfig, n_words: int, n_chars: int) -> None:
        super().__init__()
        self.config = config
        self.words = nn.Embedding(n_words, config.word_emb_dim, padding_idx=PAD_ID)
        dim = config.word_emb_dim
        if config.char_encoder == "cnn":
            self.chars: Optional[nn.Module] = CharCNN(n_chars, config.char_emb_dim, config.char_hidden, config.char_kernel)
        elif config.char_encoder == "lstm":
            self.chars = CharLSTM(n_chars, config.char_emb_dim, config.char_hidden)
        elif config.char_encoder == "none":
            self.chars = None
        else:
            raise ValueError(f"unknown char_encoder {config.char_encoder!r}; expected cnn | lstm | none")
        if self.chars is not None:
            dim += config.char_hidden
        # frozen teacher features, looked up by the same word ids (teacher_features.py)
        self.features = nn.Embedding(n_words, config.teacher_feature_dim, padding_idx=PAD_ID) \
            if config.teacher_feature_dim else None
        if self.features is not None:
            self.features.weight.requires_grad_(False)
            dim += config.teacher_feature_dim
        self.shapes = nn.Embedding(N_SHAPES, 8, padding_idx=0) if config.use_word_shape else None
        if self.shapes is not None:
            dim += 8
        self.out_dim = dim
        self.dropout = nn.Dropout(config.dropout)

    def load_vectors(self, vectors: np.ndarray, found: np.ndarray) -> None:
        """Initialise word rows from pretrained vectors where ``found`` (bool per vocab id)."""
        w = torch.as_tensor(vectors, dtype=self.words.weight.dtype)
        if w.shape != self.words.weight.shape:
            raise ValueError(f"vectors {tuple(w.shape)} do not match the embedding {tuple(self.words.weight.shape)}")
        with torch.no_grad():
            f = torch.as_tensor(found, dtype=torch.bool)
            self.words.weight[f] = w[f]
            self.words.weight[PAD_ID].zero_()

    def load_features(self, table: np.ndarray) -> None:
        """Set the frozen teacher-feature table (V, teacher_feature_dim); padding/unknown rows zero."""
        if self.features is None:
            raise ValueError("this embedder has no teacher features (teacher_feature_dim 0)")
        t = torch.as_tensor(table, dtype=self.features.weight.dtype)
        if t.shape != self.features.weight.shape:
            raise ValueError(f"features {tuple(t.shape)} do not match the table {tuple(self.features.weight.shape)}")
        with torch.no_grad():
            self.features.weight.copy_(t)
            self.features.weight[PAD_ID].zero_()

    def forward(self, words: torch.Tensor, chars: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        """words (B, L), chars (B, L, K), shapes (B, L) -> (B, L, out_dim)."""
        words = word_dropout(words, self.config.word_dropout, self.training)
        parts = [self.words(words)]
        if self.features is not None:
            parts.append(self.features(words))
        if self.chars is not None:
            parts.append(self.chars(chars))
        if self.shapes is not None:
            parts.append(self.shapes(shapes))
        return self.dropout(torch.cat(parts, dim=-1))
