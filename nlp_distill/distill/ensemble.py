"""Several teachers as one: word-level log-probabilities averaged over members.

Each member's columns are mapped to the first member's label order *by name*; the ensemble's
"logits" are the mean of the members' log-softmax (a normalised geometric mean once softmaxed),
so it can stand wherever one teacher does (cache, KD losses, pseudo-labels, ``predict``).
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from nlp_distill.data.labels import LabelVocab
from nlp_distill.errors import ConfigError, LabelMismatchError
from nlp_distill.modules.label_probs import log_softmax
from nlp_distill.modules.viterbi import best_valid_paths


class TeacherEnsemble(nn.Module):
    """Mean of log-probabilities of ``members`` (``TransformerTokenClassifier``-like objects).

    Args:
        members: teachers with ``labels`` and ``word_logits(sentences, batch_size)``; all must
            hold the same label set (any order).
    """

    routed = False  # every member scores every sentence

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one teacher")
        self.members = nn.ModuleList(members)
        self.labels: LabelVocab = members[0].labels
        self.columns: List[Optional[List[int]]] = []
        for k, m in enumerate(members):
            if set(m.labels.labels) != set(self.labels.labels):
                raise LabelMismatchError(f"teacher {k + 1} labels {m.labels.labels} differ from teacher 1's "
                                         f"{self.labels.labels}")
            same = m.labels.labels == self.labels.labels
            self.columns.append(None if same else [m.labels.label2id[l] for l in self.labels.labels])

    @property
    def config(self):
        """The first member's settings (window length etc.), for logs."""
        return self.members[0].config

    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                    show_progress: bool = False) -> List[np.ndarray]:
        """One float32 array (n_words, C) of mean member log-probabilities per sentence."""
        return self.word_outputs(sentences, batch_size, show_progress, hidden=False)[0]

    def word_outputs(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                     show_progress: bool = False, hidden: bool = True
                     ) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]]]:
        """Mean member log-probabilities and, with ``hidden``, the *first* member's word-pooled
        hidden states (members' hidden spaces differ, so they are not averaged)."""
        total: Optional[List[np.ndarray]] = None
        states = None
        for k, (m, cols) in enumerate(zip(self.members, self.columns)):
            if hidden and k == 0:
                arrays, states = m.word_outputs(sentences, batch_size, show_progress, hidden=True)
            else:
                arrays = m.word_logits(sentences, batch_size, show_progress)
            arrays = [log_softmax(a if cols is None else a[:, cols]) for a in arrays]
            total = arrays if total is None else [t + a for t, a in zip(total, arrays)]
        n = len(self.members)
        return [(t / n).astype(np.float32) for t in total], states  # type: ignore[union-attr]

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None) -> List[List[str]]:
        """Tags: the most probable valid sequence under the mean log-probabilities (``best_valid_paths``)."""
        return [self.labels.decode(p) for p in best_valid_paths(self.word_logits(sentences, batch_size), self.labels)]


class OutOfFoldTeachers(TeacherEnsemble):
    """K teachers, teacher k trained without fold k of train (``--holdout_fold K,k``).

    A routed sentence (a training sentence, or an augmented copy of one) is scored by the one
    teacher that never saw its source, so its soft targets are a judgment, not a memory; any other
    sentence (dev, test, unlabeled text) by the mean of all K. Logits are log-probabilities in
    both cases, like ``TeacherEnsemble``'s. Hidden states come from the first member for every
    sentence (members' hidden spaces differ; one space keeps the projection meaningful).

    Args:
        members: the K fold teachers, any order; their ``config.holdout_fold`` must be
            ``[K, 0] .. [K, K-1]``, each once.
    """

    routed = True  # each training sentence goes to the member that never saw it

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__(members)
        folds = [tuple(m.config.holdout_fold) for m in members]
        K = folds[0][0]
        if sorted(folds) != [(K, k) for k in range(K)]:
            raise ConfigError(f"out-of-fold teachers need folds 0..{K - 1} of {K}, each once; got "
                              f"{', '.join(f'{k} of {n}' for n, k in folds)}")
        self.num_folds = K
        self.member_of_fold = {k: i for i, (_, k) in enumerate(folds)}
        self.route: Dict[Tuple[str, ...], int] = {}
        self.route_key = ""

    def set_route(self, sentences: Sequence[Sequence[str]], sources: Sequence[int]) -> None:
        """Route ``sentences[j]`` to the teacher that held out train sentence ``sources[j]``
        (fold ``sources[j] % K``, the rule of ``TransformerConfig.in_training_fold``)."""
        self.route = {tuple(s): i % self.num_folds for s, i in zip(sentences, sources)}
        h = hashlib.sha1(repr(sorted(self.route.items())).encode("utf-8"))
        self.route_key = f"out-of-fold:{h.hexdigest()}"  # enters the teacher fingerprint (cache key)

    def word_outputs(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                     show_progress: bool = False, hidden: bool = True
                     ) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]]]:
        groups: Dict[Optional[int], List[int]] = {}
        for j, s in enumerate(sentences):
            groups.setdefault(self.route.get(tuple(s)), []).append(j)
        out: List[Optional[np.ndarray]] = [None] * len(sentences)
        for fold, idx in groups.items():
            sub = [sentences[j] for j in idx]
            if fold is None:
                arrays = super().word_outputs(sub, batch_size, show_progress, hidden=False)[0]
            else:
                k = self.member_of_fold[fold]
                cols = self.columns[k]
                arrays = [log_softmax(a if cols is None else a[:, cols]).astype(np.float32)
                          for a in self.members[k].word_logits(sub, batch_size, show_progress)]
            for j, a in zip(idx, arrays):
                out[j] = a
        states = self.members[0].word_outputs(sentences, batch_size, show_progress, hidden=True)[1] if hidden else None
        return out, states  # type: ignore[return-value]
