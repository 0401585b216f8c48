"""Run-folder helpers shared by the procedures."""
from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Sequence

import torch

from nlp_distill.io import write_json
from nlp_distill.metrics import tagging_metrics

logger = logging.getLogger("procedures")


def setup_logging(output_dir=None, level: int = logging.INFO) -> None:
    """Log to stderr (and ``output_dir/run.log``), idempotently."""
    root = logging.getLogger()
    if not any(getattr(h, "_nlp_distill", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        h._nlp_distill = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        log_file = os.path.abspath(str(Path(output_dir) / "run.log"))
        for h in [h for h in root.handlers if getattr(h, "_nlp_distill_run", False)]:
            if h.baseFilename == log_file:
                return
            root.removeHandler(h)  # one run.log at a time: a new run must not write into the last one's
            h.close()
        fh = logging.FileHandler(log_file)
        fh._nlp_distill_run = True  # type: ignore[attr-defined]
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    logging.getLogger("transformers").setLevel(logging.ERROR)


def environment() -> Dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_run_config(output_dir, **sections: Any) -> None:
    """``config.json`` of the run: every config section as a dict (the ``--config`` format)."""
    write_json(Path(output_dir) / "config.json",
               {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in sections.items()})


def evaluate_split(predict, sentences: Sequence) -> Dict[str, Any]:
    """Predict and score a tagged split; adds sentences/s."""
    t = time.perf_counter()
    pred = predict([s.tokens for s in sentences])
    dt = time.perf_counter() - t
    m = tagging_metrics([s.tags for s in sentences], pred)
    m["sentences_per_second"] = len(sentences) / max(dt, 1e-9)
    return m


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
