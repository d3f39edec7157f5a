"""The SiT backbone's embeddings, with the official key names: the sinusoidal time features, the
fixed 2-D sin-cos position table, and the patch / time / label embedders (``x_embedder``,
``t_embedder``, ``y_embedder`` of `sit.models.sit.SiT`). Computed exactly as the official code does."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

TIME_EMBED_DIM = 256  # width of the sinusoidal time features fed to t_embedder.mlp.0


def timestep_embedding(t: Tensor, dim: int = TIME_EMBED_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/half), k = 0..half-1.

    t: (B,) network time, any real value (fed unscaled). Returns (B, dim) float32 (zero-padded
    when dim is odd). Computed in float32 exactly as the official code does.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """(M,) positions -> (M, dim) [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-k/(dim/2)), float64."""
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """The fixed 2-D sin-cos position table of the official code, shape (grid_size**2, dim), float64.

    Token n = i * grid_size + j sits at row i, column j (the order of ``x_embedder``). The
    official table is built from ``np.meshgrid(w, h)`` (column coordinate first), so the first
    dim/2 features encode the *column* j and the last dim/2 the *row* i:
        emb[n] = [sin(j w), cos(j w), sin(i w), cos(i w)],  w_k = 10000^(-k/(dim/4)), k < dim/4.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs hidden_size divisible by 4 (got {dim})")
    coords = torch.arange(grid_size, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")  # row[i, j] = i, col[i, j] = j
    return torch.cat([_sincos_1d(dim // 2, col.reshape(-1)), _sincos_1d(dim // 2, row.reshape(-1))], dim=1)


# the embedders (names mirror the official state_dict)
class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, T, D) with T = (H/p)(W/p) tokens in row-major order."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_EMBED_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, TIME_EMBED_DIM)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding with label dropout for classifier-free guidance (null label = num_classes)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: Tensor, force_drop_ids: Tensor | None = None) -> Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor, train: bool, force_drop_ids: Tensor | None = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)

