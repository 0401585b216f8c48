"""Console and run-folder logging of the commands (no torch: the torch-free doors use it too)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from nlp_distill.utils.progress import progress_enabled, set_progress


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
    set_progress(progress_enabled())  # off a terminal, the HF libraries' bars go too
