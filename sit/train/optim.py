"""The optimiser side of a training step: AdamW (`make_adamw`: torch's fused kernel; `load_adamw_state`),
gradient clipping (`clip_grad_norm`), the learning-rate schedule (`lr_at`) and the EMA (`ema_update`,
`ema_decay_at`). Used by `sit.train.loop`, which re-exports them."""

from __future__ import annotations

import math

import torch
from torch import nn

from sit.config import TrainConfig


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, for every trainable parameter."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - decay)


def make_adamw(params: list, lr: float, weight_decay: float = 0.0, betas: tuple = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over ``params``, as the official train.py builds it (same update, eq. of Loshchilov &
    Hutter), but with torch's fused kernel where it exists: one pass per tensor for the moments,
    the decay and the step instead of about a dozen per-tensor ops (SiT-S/2 on a 2-core CPU:
    ~80 -> ~13 ms per step; benchmarks/bench_train.py). Its state dict is the same as the
    unfused optimizer's, so checkpoints load either way."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=True)
    except RuntimeError:  # torch refuses the fused kernel for these parameters' device or dtype
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)


def load_adamw_state(opt: torch.optim.AdamW, state_dict: dict) -> None:
    """Load a saved AdamW state (fused or not) and keep ``opt``'s own kernel choice: torch's
    load_state_dict would take the saved groups' fused/foreach flags, so a run resumed from a
    checkpoint of the unfused optimizer would silently lose the fused kernel."""
    kernel = {k: opt.defaults.get(k) for k in ("fused", "foreach")}
    opt.load_state_dict(state_dict)
    for group in opt.param_groups:
        group.update(kernel)
        if kernel["fused"]:
            for q in group["params"]:
                st = opt.state.get(q, {})
                if "step" in st:  # the fused kernel wants its step counts as float32 beside the weights
                    st["step"] = st["step"].to(device=q.device, dtype=torch.float32)


def clip_grad_norm(params: list, max_norm: float) -> float:
    """The total gradient norm (float); gradients scaled by max_norm / (norm + 1e-6) when it exceeds
    max_norm, as torch.nn.utils.clip_grad_norm_ does, which also multiplies by a clamped 1.0
    every step: skipping that no-op saves a pass over every gradient (bit-identical result)."""
    if not hasattr(torch.nn.utils, "get_total_norm"):  # torch < 2.6
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [q.grad for q in params if q.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    value = float(norm)
    if value > max_norm and math.isfinite(value):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return value


def ema_decay_at(cfg: TrainConfig, updates: int) -> float:
    return min(cfg.ema_decay, (1.0 + updates) / (10.0 + updates)) if cfg.ema_warmup else cfg.ema_decay


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up over ``warmup_steps``, then constant."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr
