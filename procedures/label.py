"""``nlp-train label_unlabeled``: score an unlabeled file into a resumable transfer store
(Parquet shards), in this process, under torchrun, or with Ray Data (``--engine ray``);
``nlp-train convert_store``: rewrite an older chunk store as shards."""
from __future__ import annotations

import logging
from typing import Any, Dict

from nlp_distill.config import LabelConfig
from nlp_distill.distill.teachers import data_labels, load_teacher
from nlp_distill.distill.transfer_set import label_text
from nlp_distill.distill.transfer_store import convert_chunk_store
from nlp_distill.errors import ConfigError
from nlp_distill.utils import distributed as ddp
from procedures.common import RunOptions, pick_device, setup_logging, start_distributed

logger = logging.getLogger(__name__)


def do_label(output_dir, label: LabelConfig = LabelConfig(), run: RunOptions = RunOptions()) -> Dict[str, Any]:
    """Label ``label.unlabeled_filename`` into ``output_dir``; a rerun keeps finished shards."""
    setup_logging()
    if label.engine == "ray":
        if ddp.env_world_size() > 1:
            raise ConfigError("--engine ray runs its own workers: start it once, not under torchrun")
        from nlp_distill.engines.ray_label import label_with_ray

        store = label_with_ray(label, output_dir, run.device, run.encoding)
        return {"sentences": len(store), "folder": str(store.folder), "engine": "ray"}
    if label.workers:
        raise ConfigError("--workers sets the number of Ray actors: add --engine ray (under torchrun, "
                          "--nproc_per_node sets the processes)")
    start_distributed(run)  # under torchrun: each rank labels its share of the shards
    labels = data_labels(label.data_dir, label.teacher_model_path, run.encoding) if label.data_dir else None
    teacher = load_teacher(label.teacher_model_path, pick_device(run.device), labels)
    store = label_text(teacher, label.unlabeled_filename, output_dir, label.input_format, run.encoding,
                       label.max_unlabeled, label.chunk_sentences, label.teacher_batch_size)
    return {"sentences": len(store), "folder": str(store.folder), "engine": "local"}


def do_convert_store(old_dir, new_dir) -> Dict[str, Any]:
    """Rewrite the chunk store ``old_dir`` (an earlier version's format) as Parquet shards in ``new_dir``."""
    setup_logging()
    store = convert_chunk_store(old_dir, new_dir)
    return {"sentences": len(store), "folder": str(store.folder)}
