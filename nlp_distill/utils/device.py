"""The device a run uses, and a record of the machine it ran on."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict, Optional

import torch

from nlp_distill.errors import ConfigError
from nlp_distill.utils import distributed as ddp


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` (checked: a CUDA device must exist), or cuda when available, else cpu. Under
    torchrun, ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``, round-robin when there are
    more processes than GPUs).

    Raises:
        ConfigError: ``device`` is not a device name, or names a CUDA device this machine lacks.
    """
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and dev.index is None and ddp.env_world_size() > 1:
        dev = torch.device("cuda", ddp.local_cuda_index(torch.cuda.device_count()))
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {device}: no such CUDA device on this machine (use --device cpu)")
    return dev


def environment() -> Dict[str, Any]:
    """Python and torch versions, threads, CPU and GPU of this process: written beside every
    run's metrics so timings can be compared only where they are comparable."""
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "world_size": ddp.world()[1]}
