"""The official SiT forward, op by op: an oracle for tests/test_models.py and the "official"
baseline of benchmarks/bench_model.py (which imports this file by path). Not part of `sit`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sit.models.sit import LN_EPS, SiT, timestep_embedding


def reference_forward(net: SiT, x: Tensor, t: Tensor, y: Tensor, attn: str = "explicit") -> Tensor:
    """The official forward, op by op and unfused (``modulate`` as x * (1 + scale) + shift, one
    adaLN matmul per block inside the block, einsum unpatchify), on ``net``'s weights. An oracle for
    tests and the "official" baseline of the benchmarks; eval-mode semantics (no label dropout).
    ``attn="explicit"``: softmax(q k^T / sqrt(d)) v spelled out (timm's Attention without fused
    attention); ``attn="sdpa"``: F.scaled_dot_product_attention, which timm >= 0.9 uses by default
    (the fair baseline on GPUs). Returns (B, out_channels, H, W).
    """
    if attn not in ("explicit", "sdpa"):
        raise ValueError(f"reference_forward: attn must be 'explicit' or 'sdpa' (got {attn!r})")
    D, nh = net.config.hidden_size, net.num_heads

    def modulate(v, shift, scale):
        return v * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    def ln(v):
        return F.layer_norm(v, (D,), eps=LN_EPS)

    h = net.x_embedder(x) + net.pos_embed
    c = net.t_embedder.mlp(timestep_embedding(t)) + net.y_embedder.embedding_table(y)
    for blk in net.blocks:
        sa, ca, ga, sm, cm, gm = blk.adaLN_modulation(c).chunk(6, dim=1)
        a = modulate(ln(h), sa, ca)
        B, T, _ = a.shape
        qkv = blk.attn.qkv(a).reshape(B, T, 3, nh, D // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if attn == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            att = (q * (D // nh) ** -0.5) @ k.transpose(-2, -1)
            a = att.softmax(dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, D)
        h = h + ga.unsqueeze(1) * blk.attn.proj(a)
        m = modulate(ln(h), sm, cm)
        h = h + gm.unsqueeze(1) * blk.mlp.fc2(F.gelu(blk.mlp.fc1(m), approximate="tanh"))
    shift, scale = net.final_layer.adaLN_modulation(c).chunk(2, dim=1)
    h = net.final_layer.linear(modulate(ln(h), shift, scale))
    p, co, g = net.patch_size, net.out_channels, net.grid_size
    h = h.reshape(h.shape[0], g, g, p, p, co)
    h = torch.einsum("nhwpqc->nchpwq", h)
    return h.reshape(h.shape[0], co, g * p, g * p)
