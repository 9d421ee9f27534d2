"""Single process or DDP under ``torchrun``: one context object says which, and who writes.

``torchrun --nproc_per_node=K`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; then the same
loop trains with DistributedDataParallel (gloo on the CPU, nccl on CUDA). Rank 0 alone
simulates, builds the cohort, writes checkpoints, shows progress, evaluates and exports;
the other ranks wait at barriers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model_training.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group when launched by ``torchrun`` with more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if world_size == 1:
        return DistContext(0, 1, torch.device(device))
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), torch_device)
    if ctx.is_main:
        log.info("DistributedDataParallel: %d processes, backend %s", ctx.world_size, dist.get_backend())
    return ctx


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """``module`` itself, or wrapped in DDP when distributed (gradients averaged across ranks)."""
    if not ctx.distributed:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
