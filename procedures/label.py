"""``nlp-train label_unlabeled``: score an unlabeled file into a resumable transfer store."""
from __future__ import annotations

import logging
from itertools import islice
from pathlib import Path
from typing import Any, Dict

from nlp_distill.config import KDConfig, LabelConfig
from nlp_distill.distill.transfer_store import TransferStore
from nlp_distill.data.unlabeled import count_sentences, detect_format, iter_unlabeled
from nlp_distill.errors import ConfigError
from procedures.common import RunOptions, pick_device, setup_logging, start_distributed
from procedures.tagger_kd import load_teacher

logger = logging.getLogger(__name__)


def do_label(output_dir, label: LabelConfig = LabelConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Label ``label.unlabeled_filename`` into ``output_dir``; a rerun keeps finished chunks."""
    setup_logging()
    start_distributed(run)  # under torchrun: each rank labels its share of the chunks
    if not label.unlabeled_filename or not Path(label.unlabeled_filename).is_file():
        raise ConfigError(f"--unlabeled_filename {label.unlabeled_filename!r}: no such file")
    teacher = load_teacher(KDConfig(teacher_model_path=label.teacher_model_path), pick_device(run.device))
    fmt = detect_format(label.unlabeled_filename, run.encoding) if label.input_format == "auto" else label.input_format
    total = count_sentences(label.unlabeled_filename, fmt, run.encoding, label.max_unlabeled)
    sents = (s.tokens for s in iter_unlabeled(label.unlabeled_filename, fmt, encoding=run.encoding))
    store = TransferStore.label(teacher, islice(sents, label.max_unlabeled), output_dir, label.chunk_sentences,
                                label.teacher_batch_size, total=total)
    return {"sentences": len(store), "folder": str(store.folder)}
