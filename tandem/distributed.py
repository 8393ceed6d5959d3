"""Data parallelism across the processes that ``torchrun`` starts (one per core or per node: gloo on CPU, NCCL where
every process has a CUDA device), for Tandem's own epoch loop (:func:`tandem.train_state.fit_epochs`) and for what the
Trainer-based runs must agree on (AdaPO's reward statistics, :func:`gather_objects`).

In the epoch loop each process takes its share of every batch and the gradients are summed over processes, each
process's loss weighted by its share of the batch's rows: for a loss that is a mean over rows every process then takes
the step one process would take on the whole batch, up to float rounding. Only the first process (rank 0) writes
files. Under plain ``python`` (no ``WORLD_SIZE``, no process group) everything here is a no-op. torch is imported on
first use, so that importing this module (as AdaPO's reward does) costs nothing.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> tuple[int, int]:
    """``(rank, world size)``, joining torchrun's process group on first use."""
    if world_size() <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True in the process that writes: rank 0, or the only process."""
    return init()[0] == 0


def broadcast_module(module) -> None:
    """Every process starts from rank 0's parameters and buffers."""
    import torch.distributed as dist

    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sum_gradients(module) -> None:
    """Sum every parameter's gradient over processes (a missing gradient counts as zero)."""
    import torch
    import torch.distributed as dist

    for p in module.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def rank() -> int:
    """This process's rank in a running process group; 0 without one."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_objects(obj) -> list:
    """``obj`` of every process in a running process group (a collective call), in rank order; ``[obj]`` without
    one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
