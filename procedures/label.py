"""``nlp-train label_unlabeled``: score an unlabeled file into a resumable transfer store."""
from __future__ import annotations

import logging
from typing import Any, Dict

from nlp_distill.config import LabelConfig
from nlp_distill.data.dataset_dir import load_data_dir
from nlp_distill.distill.teachers import load_teacher
from nlp_distill.distill.transfer_set import label_text
from procedures.common import RunOptions, pick_device, setup_logging, start_distributed

logger = logging.getLogger(__name__)


def do_label(output_dir, label: LabelConfig = LabelConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Label ``label.unlabeled_filename`` into ``output_dir``; a rerun keeps finished chunks."""
    setup_logging()
    start_distributed(run)  # under torchrun: each rank labels its share of the chunks
    labels = load_data_dir(label.data_dir, encoding=run.encoding).labels if label.data_dir else None
    teacher = load_teacher(label.teacher_model_path, pick_device(run.device), labels)
    store = label_text(teacher, label.unlabeled_filename, output_dir, label.input_format, run.encoding,
                       label.max_unlabeled, label.chunk_sentences, label.teacher_batch_size)
    return {"sentences": len(store), "folder": str(store.folder)}
