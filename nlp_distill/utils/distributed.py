"""Data parallelism under ``torchrun``: one process per GPU (NCCL) or per CPU share (gloo).

Without torchrun (``WORLD_SIZE`` unset or 1) every helper is a no-op, so a single process runs
exactly as before. Gradients are synchronised by hand (one flat all-reduce per optimiser step)
rather than through ``DistributedDataParallel``: our loss functions call into models and teachers
freely, and a summed loss divided by the *global* item count makes N processes with batch B the
same optimiser step as one process accumulating N batches of B.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn


def env_world_size() -> int:
    """Processes torchrun started for this job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_cuda_index(device_count: int) -> int:
    """This process's GPU under torchrun: ``LOCAL_RANK`` round-robin over the visible GPUs, so
    more processes than GPUs share them (labeling is bound by per-sentence Python on the CPU, and
    several processes feeding one GPU multiply its throughput)."""
    return int(os.environ.get("LOCAL_RANK", "0")) % max(device_count, 1)


def backend_for(device_type: str, device_count: int) -> str:
    """NCCL when each process has a GPU of its own; gloo on CPU or when processes share a GPU
    (NCCL refuses two ranks on one device)."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return "nccl" if device_type == "cuda" and per_node <= device_count else "gloo"


def init_from_env(device_type: str) -> bool:
    """Join the torchrun process group once (see ``backend_for``); False when not under
    torchrun. Idempotent."""
    if env_world_size() <= 1:
        return False
    if not dist.is_initialized():
        count = torch.cuda.device_count() if device_type == "cuda" else 0
        if device_type == "cuda":
            torch.cuda.set_device(local_cuda_index(count))
        dist.init_process_group(backend_for(device_type, count))
        atexit.register(_leave)
    return True


def _leave() -> None:
    """Leave the process group before the interpreter exits: a gloo group left to static
    destructors can abort a rank that finished first ("terminate called without an active
    exception", seen on a loaded 2-core machine)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> Tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and logs."""
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the other ranks run it after (and find
    the cache built)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (identical starting points)."""
    if world()[1] > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)  # state_dict tensors share storage with the module's


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable values only)."""
    if world()[1] <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_grads(params: Sequence[torch.Tensor], n_items: float) -> float:
    """Sum every parameter's gradient and ``n_items`` over ranks, in one flat all-reduce.

    A parameter without a gradient on this rank (a batch that did not reach it, or a rank with no
    batch left this step) takes part as zeros, so all ranks issue the same collective; it keeps
    ``grad = None`` when no rank produced one (as in one process, the optimiser then skips it).

    Returns:
        the item count summed over ranks (the step's divisor).
    """
    if world()[1] <= 1:
        return n_items
    device = params[0].device if params else torch.device("cpu")
    had = torch.tensor([p.grad is not None for p in params] + [False], dtype=torch.float32, device=device)
    had[-1] = float(n_items)  # the item count travels in the flags' last slot
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
                     + [had])
    dist.all_reduce(flat)
    offset = 0
    for p, flag in zip(params, flat[-len(had):-1].tolist()):
        n = p.numel()
        if flag > 0:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        else:
            p.grad = None
        offset += n
    return float(flat[-1])


def all_reduce_sums(values: Dict[str, float]) -> Dict[str, float]:
    """Per-key sums of floats over ranks (for epoch logs); a key missing on a rank counts 0."""
    if world()[1] <= 1:
        return values
    key_sets: List[Any] = [None] * world()[1]
    dist.all_gather_object(key_sets, sorted(values))
    keys = sorted(set().union(*key_sets))
    t = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))
