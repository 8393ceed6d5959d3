"""Data parallelism for Tandem's own epoch loop (:func:`tandem.train_state.fit_epochs`) across the processes that
``torchrun`` starts, one per core or per node: gloo on CPU, NCCL where every process has a CUDA device.

Each process takes its share of every batch; the gradients are summed over processes (each process's loss weighted by
its share of the batch), so every process takes the same optimizer step as one process on the whole batch would, up
to float rounding. Only the first process (rank 0) writes files. Under plain ``python`` (no ``WORLD_SIZE``) everything
here is a no-op.
"""

from __future__ import annotations

import os

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> tuple[int, int]:
    """``(rank, world size)``, joining torchrun's process group on first use."""
    if world_size() <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True in the process that writes: rank 0, or the only process."""
    return init()[0] == 0


def broadcast_module(module: torch.nn.Module) -> None:
    """Every process starts from rank 0's parameters and buffers."""
    import torch.distributed as dist

    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sum_gradients(module: torch.nn.Module) -> None:
    """Sum every parameter's gradient over processes (a missing gradient counts as zero)."""
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
