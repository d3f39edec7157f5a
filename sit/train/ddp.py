"""What `torchrun` (DDP) adds to the training loop: the wrapped network (`wrap`, also compiled with
``cfg.compile``), the loss terms' gradients averaged over ranks (`average_grads`), and the check that
every rank ends with bit-identical weights (`check_ranks_agree`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from sit import dist
from sit.config import TrainConfig


def average_grads(params: list, device) -> None:
    """DDP for the loss terms' own parameters (outside the DDP-wrapped network): gradients
    averaged over ranks with one all-reduce, as DDP does for the network."""
    grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in params]
    flat = dist.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]).to(device)) / dist.world_size()
    i = 0
    for q, g in zip(params, grads):
        q.grad = flat[i : i + g.numel()].view_as(q).to(q.dtype)
        i += g.numel()


def wrap(net: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    train_net = torch.compile(net) if cfg.compile else net
    if dist.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(train_net, device_ids=[device.index] if device.type == "cuda" else None)
    return train_net


def _params_digest(module: nn.Module) -> bytes:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.digest()


def check_ranks_agree(net: nn.Module, ema: nn.Module, run_dir: Path, device) -> None:
    """DDP: every rank must hold bit-identical weights; write RUN/ddp_check.json, raise if not."""
    d = torch.tensor(list(_params_digest(net) + _params_digest(ema)), dtype=torch.int32, device=device).view(1, -1)
    allr = dist.all_gather_cat(d).cpu()
    same = bool((allr == allr[0:1]).all())
    if dist.is_main():
        from sit.io import write_text_atomic

        write_text_atomic(run_dir / "ddp_check.json", json.dumps({"world_size": dist.world_size(), "ranks_identical": same}) + "\n")
    if not same:
        raise RuntimeError("DDP ranks ended with different weights (sha256 of model/EMA differ between ranks)")
