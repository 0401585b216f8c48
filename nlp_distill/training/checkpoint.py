"""Atomic save / resume of training state: optimiser, scheduler, RNG, epoch, best score."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch


def rng_state() -> Dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_state(path, state: Dict[str, Any]) -> None:
    """``torch.save`` a dict of plain state (tensors, numbers, RNG tuples; never modules) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path) -> Dict[str, Any]:
    # weights_only=False: the file holds RNG tuples/numpy state written by us, not modules
    return torch.load(path, map_location="cpu", weights_only=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
