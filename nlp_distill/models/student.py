"""A new student from its configs: vocabularies from training text, initial word vectors from a
vectors file and/or from a teacher's input embeddings."""
from __future__ import annotations

from typing import Sequence

from nlp_distill.config import StudentDataConfig, TaggerConfig
from nlp_distill.data.conll import Sentence
from nlp_distill.data.labels import LabelVocab
from nlp_distill.errors import ConfigError
from nlp_distill.models.neural_tagger import NeuralTagger
from nlp_distill.models.packaged_encoders import resolve_encoder
from nlp_distill.modules.pretrained import (frequent_words, load_vectors_file, resolve_word_vectors,
                                           vectors_from_teacher, vocab_rows)
from nlp_distill.modules.product_quantization import pq_decode, pq_encode


DEFAULT_FEATURE_DIM = 64  # teacher features without --teacher_feature_dim


def wants_teacher_features(data: StudentDataConfig) -> bool:
    return bool(data.teacher_features) and data.teacher_features != "none"


def resolve_feature_dim(tagger: TaggerConfig, data: StudentDataConfig) -> TaggerConfig:
    """``teacher_feature_dim`` None -> 64 with ``--teacher_features``, else 0; a size without a
    source is an error (it would train a table of zeros)."""
    if tagger.teacher_feature_dim is None:
        return tagger.replace(teacher_feature_dim=DEFAULT_FEATURE_DIM if wants_teacher_features(data) else 0)
    if tagger.teacher_feature_dim and not wants_teacher_features(data):
        raise ConfigError(f"--teacher_feature_dim {tagger.teacher_feature_dim} needs --teacher_features "
                          "(teacher, a model folder, minilm or mpnet)")
    return tagger


def build_student(tagger: TaggerConfig, data: StudentDataConfig, vocab_sentences: Sequence[Sentence],
                  labels: LabelVocab) -> NeuralTagger:
    """A new, untrained ``NeuralTagger`` with its initial word vectors (its teacher-feature table,
    if ``tagger.teacher_feature_dim``, is filled by ``distill.teacher_features.load_teacher_features``).

    Args:
        tagger: the architecture.
        data: ``embedding_file`` (a GloVe/word2vec file or a packaged set: the vocabulary gains its
            ``embedding_vocab`` most frequent words and their rows), ``embedding_pq_dims`` (those
            rows replaced by their product quantisation, as ``nlp-export compact`` will store
            them), ``init_embeddings_from_teacher`` (a teacher folder: mean sub-token embeddings,
            PCA-projected).
        vocab_sentences: the text the word/char vocabularies come from (training text, never
            dev/test).
        labels: output labels, in order.

    Raises:
        ConfigError: when ``embedding_pq_dims`` does not divide ``tagger.word_emb_dim``.
    """
    tagger, data = resolve_word_vectors(tagger, data)  # a no-op when the caller resolved them already
    tagger = resolve_feature_dim(tagger, data)
    if not data.embedding_file:
        model = NeuralTagger.build(tagger, vocab_sentences, labels)
    else:
        words, vecs = load_vectors_file(data.embedding_file)  # read once: the vocabulary and the rows use it
        extra = frequent_words(words, data.embedding_vocab, tagger.lowercase)
        model = NeuralTagger.build(tagger, vocab_sentences, labels, extra_words=extra)
        mat, found = vocab_rows(words, vecs, model.word_vocab, tagger.word_emb_dim, data.embedding_file)
        if data.embedding_pq_dims:  # the vectors compact will ship: their rows for unseen words stay as trained
            if tagger.word_emb_dim % data.embedding_pq_dims:
                raise ConfigError(f"--embedding_pq_dims {data.embedding_pq_dims} does not divide --word_embedding_dims "
                                  f"{tagger.word_emb_dim}")
            mat[found] = pq_decode(*pq_encode(mat[found], data.embedding_pq_dims))
        model.embedder.load_vectors(mat, found)
    if data.init_embeddings_from_teacher:
        teacher = resolve_encoder(data.init_embeddings_from_teacher)  # a folder, or minilm / mpnet
        mat, found = vectors_from_teacher(teacher, model.word_vocab, tagger.word_emb_dim)
        model.embedder.load_vectors(mat, found)
    return model
