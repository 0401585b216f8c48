"""Atomic save / resume of training state: optimiser, scheduler, RNG, epoch, best score."""
from __future__ import annotations

import pickle
import random
from typing import Any, Dict

import numpy as np
import torch

from nlp_distill.errors import ConfigError
from nlp_distill.io import atomic_path


def rng_state() -> Dict[str, Any]:
    """RNG states as tensors and plain values only (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_initialized():  # dropout on a GPU draws from the CUDA generators, not the CPU one
        state["cuda"] = torch.cuda.get_rng_state_all()  # CPU byte tensors, one per device
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_state(path, state: Dict[str, Any]) -> None:
    """``torch.save`` a dict of tensors and plain values (never modules or numpy objects) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path) -> Dict[str, Any]:
    """Load a training state with ``weights_only=True``: a file holding anything but tensors and
    plain values (e.g. a planted pickle payload) is refused before any of it runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"{path}: refusing to load: it holds objects other than tensors and plain values, "
                          f"which could run code ({str(e).splitlines()[0][:200]})") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
