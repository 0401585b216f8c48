"""Quiet loading of Hugging Face models (used by the transformer model and by teacher-vector
initialisation of students)."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Silence transformers' weight-loading bars and load report (MISSING/UNEXPECTED keys are
    expected when a new head goes on an encoder) unless ``NLP_DISTILL_VERBOSE`` is set."""
    if os.environ.get("NLP_DISTILL_VERBOSE"):
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
