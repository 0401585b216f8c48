"""A NeuralTagger's weights on disk in compact form (``CompactConfig``) and back.

The word table (nearly all of a GloVe student's bytes) is stored in three parts: the ``<pad>`` /
``<unk>`` rows exactly, the ``pq_head`` most frequent words as int8 rows with one scale each (more
for a student trained on quantised vectors: every row training moved), the rest as
product-quantisation codes. A student's frozen teacher-feature table is stored the same way.
Every other float tensor is stored in ``weights`` precision. Loading returns the float32 state
dict of an ordinary NeuralTagger.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from nlp_distill.config import CompactConfig
from nlp_distill.errors import ConfigError
from nlp_distill.modules.product_quantization import pq_decode, pq_encode

WORD_TABLE = "embedder.words.weight"
FEATURE_TABLE = "embedder.features.weight"  # frozen teacher features (distill/teacher_features.py)
TABLES = (WORD_TABLE, FEATURE_TABLE)
N_SPECIAL = 2  # <pad>, <unk>: kept exactly


def _int8_rows(rows: torch.Tensor):
    """(N, D) float -> (N, D) int8 and (N, 1) scales (symmetric, per row)."""
    scale = rows.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127.0
    return torch.round(rows / scale).to(torch.int8), scale


def trained_prefix_end(table: torch.Tensor, storage: CompactConfig) -> int:
    """For a student trained with ``--embedding_pq_dims`` (its rows still on a product-quantisation
    codebook, except those of the words training moved, which come first): the smallest ``r`` such
    that rows ``r:`` hold at most ``pq_centroids`` distinct parts in every subspace, so they get
    exact codes and rows before ``r`` go to the int8 head. 0 when that suffix is not most of the
    table (any other student).
    """
    rows = table.numpy()
    r = 0
    for s in range(rows.shape[1] // storage.pq_dims):
        part = rows[::-1, s * storage.pq_dims : (s + 1) * storage.pq_dims]
        _, first_from_end = np.unique(part, axis=0, return_index=True)
        last = np.sort(len(rows) - 1 - first_from_end)[::-1]  # each distinct part's last row, latest first
        if len(last) > storage.pq_centroids:
            r = max(r, int(last[storage.pq_centroids]) + 1)
    return r if r <= len(rows) // 2 else 0


def table_pq_dims(width: int, pq_dims: int) -> int:
    """Subspace size for a table ``width`` columns wide: ``pq_dims``, or for a table it does not
    divide (the teacher-feature table), its largest divisor below ``pq_dims``."""
    return max(d for d in range(1, pq_dims + 1) if width % d == 0)


def _compact_table(out: Dict[str, torch.Tensor], name: str, table: torch.Tensor, storage: CompactConfig,
                   pq_dims: int, dtype: torch.dtype) -> None:
    """``table`` (V, D) into ``out`` as ``name``'s parts: special rows, an int8 head, PQ codes.
    Only the word table can have been trained on PQ vectors; the frozen feature table never was."""
    trained = trained_prefix_end(table, storage) if name == WORD_TABLE else 0
    head_end = max(min(N_SPECIAL + storage.pq_head, table.size(0)), trained)
    out[name + ".special"] = table[:N_SPECIAL].to(dtype)
    if head_end > N_SPECIAL:
        out[name + ".head_int8"], scale = _int8_rows(table[N_SPECIAL:head_end])
        out[name + ".head_scale"] = scale.to(dtype)
    if head_end < table.size(0):
        codes, books = pq_encode(table[head_end:].numpy(), pq_dims, storage.pq_centroids)
        out[name + ".pq_codes"] = torch.from_numpy(codes)
        out[name + ".pq_codebooks"] = torch.from_numpy(books).to(dtype)


def compact_state(state: Dict[str, torch.Tensor], storage: CompactConfig) -> Dict[str, torch.Tensor]:
    """The tensors to save for ``state`` under ``storage``: the word table (and the frozen
    teacher-feature table, with ``table_pq_dims`` of its width) in parts, the rest in ``weights``
    precision."""
    dtype = getattr(torch, storage.weights)
    out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if not storage.pq_dims:
        return out
    table = state[WORD_TABLE].float()
    if table.size(1) % storage.pq_dims:
        raise ConfigError(f"--pq_dims {storage.pq_dims} does not divide the word vector size {table.size(1)}: "
                          "pick a divisor, or --pq_dims 0 to keep the table as a tensor")
    for name in TABLES:
        if name in state:
            del out[name]
            t = state[name].float()
            _compact_table(out, name, t, storage, table_pq_dims(t.size(1), storage.pq_dims), dtype)
    return out


def _restore_table(saved: Dict[str, torch.Tensor], name: str) -> torch.Tensor:
    parts = [saved[name + ".special"].float()]
    if name + ".head_int8" in saved:
        parts.append(saved[name + ".head_int8"].float() * saved[name + ".head_scale"].float())
    if name + ".pq_codes" in saved:
        codes, books = saved[name + ".pq_codes"].numpy(), saved[name + ".pq_codebooks"].float().numpy()
        parts.append(torch.from_numpy(pq_decode(codes, books)))
    return torch.cat(parts)


def restore_state(saved: Dict[str, torch.Tensor], storage: CompactConfig) -> Dict[str, torch.Tensor]:
    """The float32 state dict of a model saved by ``compact_state``."""
    parted = [n for n in TABLES if n + ".special" in saved]
    out = {k: v.float() if v.is_floating_point() else v for k, v in saved.items()
           if not any(k.startswith(n + ".") for n in parted)}
    for name in parted:
        out[name] = _restore_table(saved, name)
    return out
