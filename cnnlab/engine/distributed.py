"""Where a run executes: the device, and data-parallel training across processes.

`torchrun --nproc-per-node N -m cnnlab train ...` starts N processes and tells each its place
through environment variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, ...), as
torchvision's references read them. `DistributedContext.from_environment` joins the process
group (NCCL on CUDA, Gloo on CPU); without those variables it is a one-process context whose
collectives do nothing, so the trainer has a single code path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cnnlab.errors import OptionError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device for `name` (`auto` picks cuda, then mps, then cpu); `local_rank` picks the GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device 'cuda' is not available here; use --device cpu (or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise OptionError("device 'mps' is not available here; use --device cpu (or auto)")
    return torch.device(name)


@dataclass
class DistributedContext:
    """This process's place among the data-parallel processes, and its device."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_process_group: bool = False

    @classmethod
    def from_environment(cls, device: str) -> DistributedContext:
        """Join the process group torchrun set up, if any, and pick this process's device."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        context = cls(resolve_device(device, local_rank), rank, local_rank, world_size)
        if context.enabled and not dist.is_initialized():
            if context.device.type == "cuda":
                torch.cuda.set_device(context.device)
            backend = "nccl" if context.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=rank, world_size=world_size)
            context.owns_process_group = True
        return context

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the logs and checkpoints (rank 0)."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` in DistributedDataParallel when there are several processes, else as is."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, values: Sequence[float]) -> list[float]:
        """`values` summed element-wise over the processes (one all-reduce)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def any(self, flag: Tensor) -> bool:
        """Whether `flag` is set in any process (one host synchronization)."""
        flag = flag.to(torch.int32)
        if self.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's buffers (BN running statistics) to every process before evaluating."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this context joined it."""
        if self.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
