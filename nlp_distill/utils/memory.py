"""Keep resident memory following live data during long runs (glibc).

glibc's malloc serves a block from its heap unless it is at least the "mmap threshold", and it
raises that threshold (up to 32 MB) each time a mapped block is freed. Training then allocates
tensors of ever-changing padded shapes between 128 KB and a few MB from the heap, which
fragments and never shrinks: a student trained from a 10k-sentence transfer store grew from 0.8
to 1.6 GB of resident memory in 3 epochs, while the same run with a fixed 1 MB threshold stayed
at 0.73-0.79 GB at the same speed (runs/rss in the 2026-11-26 session; docs/benchmarks.md "Scale").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any, Optional

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks of 1 MB and more get their own mapping, returned on free


def _glibc() -> Optional[Any]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "mallopt") else None


def limit_heap_growth(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (which also stops its
    dynamic rise). ``False`` (and nothing done) where glibc is not the allocator."""
    lib = _glibc()
    if lib is None:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, int(threshold)))
