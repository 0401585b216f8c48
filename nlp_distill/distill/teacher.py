"""The Teacher protocol: what the distillation code may ask of any teacher. One
``TransformerTokenClassifier``, a ``TeacherEnsemble`` and ``OutOfFoldTeachers`` all satisfy it, so
code asks ``teacher.members`` and ``teacher.routed`` instead of testing which kind it holds."""
from __future__ import annotations

from typing import Any, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from nlp_distill.data.labels import LabelVocab


@runtime_checkable
class Teacher(Protocol):
    """A frozen tagger that labels words.

    Attributes:
        labels: its label list (the column order of its logits).
        members: the single models it is made of (itself for one teacher), in order.
        routed: whether each training sentence goes to one member only (out-of-fold teachers: the
            member that never saw it), which needs the sentences' origins (``set_route``) and keeps
            its targets in memory.
    """

    labels: LabelVocab
    routed: bool

    @property
    def members(self) -> Sequence[Any]: ...

    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                    show_progress: bool = False) -> List[np.ndarray]:
        """One (n_words, C) float32 array of logits per sentence."""

    def word_outputs(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None,
                     show_progress: bool = False, hidden: bool = False
                     ) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]]]:
        """(logits per sentence, the last hidden state per word of each sentence or ``None``)."""

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: Optional[int] = None) -> List[List[str]]:
        """The most probable scheme-valid tags of each sentence."""
