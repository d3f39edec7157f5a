"""Distributed helpers: the only module of `sit` that calls `torch.distributed`.

Every function falls back to a single process when nothing is initialised (``rank() == 0``,
``world_size() == 1``), so every program runs unchanged on one CPU. Under ``torchrun`` the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) selects the process group:
NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as _td

from sit.config import ConfigError


def is_initialized() -> bool:
    return _td.is_available() and _td.is_initialized()


def rank() -> int:
    return _td.get_rank() if is_initialized() else 0


def world_size() -> int:
    return _td.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when RANK and WORLD_SIZE are in the environment (torchrun, or a manual launch)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch.device (None: cuda if available, else cpu). A CUDA device on a torch
    without CUDA, or with no visible GPU, is a ValueError with one line saying what to use."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {str(device)!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise ConfigError("", "device", f"{device}: this torch has no CUDA; use {{device}} cpu")
        raise ConfigError("", "device", f"{device}: no CUDA GPU is visible to this torch (CUDA {torch.version.cuda}); "
                          "use {device} cpu")
    return dev


def init(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Initialise the process group from the torchrun environment and return this process's device.

    Without torchrun variables this is a no-op and returns ``device`` (default: cuda if available,
    else cpu). Backend: NCCL when the device is CUDA, gloo otherwise.
    """
    device = resolve_device(device)
    if not launched_by_torchrun() or is_initialized():
        if is_initialized() and device.type == "cuda":
            device = torch.device("cuda", local_rank())
        return device
    lr = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(lr)
        device = torch.device("cuda", lr)
        backend = "nccl"
    else:
        backend = "gloo"
    _td.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return device


@contextlib.contextmanager
def tf32(on: bool):
    """Allow (or forbid) TF32 tensor-core math for float32 matmuls and convolutions on CUDA inside
    the block, restoring the previous setting after. The official SiT train.py and sample.py turn
    it on; float32 work on GPUs then runs at the TF32 rate (about 8x float32 on an H100)."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(on)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def init_process_group(backend: str, rank_: int, world_size_: int, init_method: str) -> None:
    """Explicit initialisation (used by tests that spawn processes without torchrun)."""
    _td.init_process_group(backend=backend, rank=rank_, world_size=world_size_, init_method=init_method)


def barrier() -> None:
    if is_initialized():
        _td.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (in place when distributed; returned either way)."""
    if is_initialized() and world_size() > 1:
        _td.all_reduce(x, op=_td.ReduceOp.SUM)
        x /= world_size()
    return x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (in place when distributed; returned either way)."""
    if is_initialized() and world_size() > 1:
        _td.all_reduce(x, op=_td.ReduceOp.SUM)
    return x


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_initialized() and world_size() > 1:
        _td.broadcast(x, src=src)
    return x


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shape tensors of all ranks along dim 0 (rank order)."""
    if not (is_initialized() and world_size() > 1):
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    _td.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def print0(*args, **kwargs) -> None:
    """print on rank 0 only (flushes)."""
    if is_main():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def eprint0(*args, **kwargs) -> None:
    """print to stderr on rank 0 only."""
    if is_main():
        print(*args, file=sys.stderr, flush=True, **kwargs)


def cleanup() -> None:
    """Leave the process group: every rank first meets the others (a barrier), so none tears down
    its gloo connections while a peer is still using them (a rank then aborted under heavy CPU load:
    "terminate called without an active exception")."""
    if is_initialized():
        _td.barrier()
        _td.destroy_process_group()
