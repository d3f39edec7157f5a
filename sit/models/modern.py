"""The modern transformer block's parts (LightningDiT, hustvl/LightningDiT; `ModelConfig` fields
``swiglu``, ``rmsnorm``, ``rope``, ``qk_norm``, each independent, all off by default so the network
is the official SiT bit for bit). Used by `sit.models.sit`; imports torch and nothing of sit.

  SwiGLU   mlp.w12: Linear(D, 2H) -> [a | b], mlp.w3: Linear(H, D); out = w3(SiLU(a) * b) with
           H = int(2/3 * mlp_ratio * D) (LightningDiT's width: about the GELU MLP's parameters).
  RMSNorm  x / sqrt(mean(x^2) + 1e-6) * weight (weight initialised to 1) in place of the
           affine-free LayerNorm before attention, MLP and the final layer (norm1 / norm2 /
           final_layer.norm_final keys).
  RoPE     2-D rotary position embedding on q and k of every head: the first half of the head
           dimension rotates with the token's row, the second half with its column, pairs
           (j, j + d/2) of each half at frequencies 10000^(-2j/d) (d = head_dim / 2). Relative
           positions enter the attention logits; the absolute sin-cos pos_embed stays (as in
           LightningDiT).
  QK-norm  q and k normalised per head over the head dimension (attn.q_norm / attn.k_norm:
           RMSNorm when ``rmsnorm``, else LayerNorm, both with a learnable weight) before RoPE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

NORM_EPS = 1e-6
ROPE_THETA = 10000.0


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2, -1) + eps) * weight, computed in float32 (float64 for float64 x), returned in x's dtype."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dt = torch.promote_types(x.dtype, torch.float32)
        u = x.to(dt)
        u = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + self.eps)
        return (u * self.weight.to(dt)).to(x.dtype)


class SwiGLU(nn.Module):
    """w3(SiLU(a) * b) with [a | b] = w12(x) (LightningDiT's SwiGLUFFN)."""

    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.w12 = nn.Linear(hidden_size, 2 * mlp_hidden, bias=True)
        self.w3 = nn.Linear(mlp_hidden, hidden_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
    """LightningDiT's SwiGLU width: int(2/3 * int(hidden_size * mlp_ratio))."""
    return int(2 / 3 * int(hidden_size * mlp_ratio))


def rope_tables(grid_size: int, head_dim: int, device=None) -> tuple[Tensor, Tensor]:
    """(cos, sin) of shape (T, head_dim) for T = grid_size^2 tokens in row-major order, float32:
    the first head_dim/2 features at the token's row, the last head_dim/2 at its column; within
    each half, feature j and j + d/2 (d = head_dim / 2) share the frequency theta^(-2j/d)."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4 (got {head_dim})")
    d = head_dim // 2
    freqs = ROPE_THETA ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    pos = torch.arange(grid_size, dtype=torch.float64)
    row = pos.repeat_interleave(grid_size)   # token n = i * g + j: row i
    col = pos.repeat(grid_size)               # column j
    ang_r, ang_c = row[:, None] * freqs[None], col[:, None] * freqs[None]  # (T, d/2)
    ang = torch.cat([ang_r, ang_r, ang_c, ang_c], dim=1)  # (T, head_dim)
    return ang.cos().float().to(device), ang.sin().float().to(device)


def _rotate_half(x: Tensor) -> Tensor:
    """Per half of the head dim: (x1, x2) -> (-x2, x1) with x1, x2 its two quarters."""
    a1, a2, b1, b2 = x.chunk(4, dim=-1)
    return torch.cat([-a2, a1, -b2, b1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, heads, T, head_dim) rotated by the tables of `rope_tables` (in x's dtype)."""
    return x * cos.to(x.dtype) + _rotate_half(x) * sin.to(x.dtype)
