"""The SiT backbone: a DiT transformer with adaLN-Zero conditioning (paper section 2.5): blocks and network here,
the embedders in ``sit.models.embeddings``, analytic counts in ``sit.models.counts``, inference compile in
``sit.models.compiled`` (re-exported here).

The structure, parameter names and shapes equal the official SiT/DiT ``models.py`` so that the
released checkpoints load unchanged (keys and shapes listed in ``tests/data/sit_state_dict/``):

    x_embedder.proj            Conv2d(C, D, p, stride p): patches -> tokens, row-major (h, w) order
    pos_embed                  (1, T, D) fixed 2-D sin-cos table (a frozen Parameter, as officially)
    t_embedder.mlp.{0,2}       Linear(256, D), SiLU, Linear(D, D) on a 256-dim [cos, sin] embedding
    y_embedder.embedding_table (num_classes + 1, D) when label dropout > 0; row num_classes = null label
    blocks.N.attn.{qkv,proj}   fused q/k/v projection (rows q | k | v, heads contiguous), output proj
    blocks.N.mlp.{fc1,fc2}     D -> mlp_ratio*D -> D with tanh-GELU
    blocks.N.adaLN_modulation.1  Linear(D, 6D) after SiLU: shift/scale/gate for attention and MLP
    final_layer.adaLN_modulation.1, final_layer.linear  Linear(D, 2D) and Linear(D, p*p*out_channels)

``SiT.forward(x, t_net, y)`` returns all ``out_channels`` = 2C channels when ``learn_sigma`` (the
official SiT drops the second half inside forward; DiT keeps it; here the caller decides, see
``sit.models.field.ModelField``). ``t_net`` is the *network* time of math.md section 1 (the official
one, 1 - t in paper time, for SiT checkpoints; the integer DDPM step for DiT ones); this module
never interprets it: ``sit.models.field`` is the only place that converts paper time.

Speed notes: q/k/v is one matmul, attention is ``F.scaled_dot_product_attention``, modulation and
gated residuals are single fused ``addcmul`` kernels, and SiLU(c) is computed once for all blocks. The module runs in fp32, under ``torch.autocast`` (CPU or CUDA,
bf16), or with bf16 parameters (``net.to(torch.bfloat16)``; inputs are cast to the parameter
dtype). ``grad_checkpointing`` recomputes each block in the backward pass (less memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from sit.config import ModelConfig
from sit.models.compiled import FrozenCompiled, compile_for_inference  # noqa: F401  (re-exported)
from sit.models.counts import forward_flops, param_count  # noqa: F401  (re-exported)
from sit.models.embeddings import (  # noqa: F401  (re-exported)
    TIME_EMBED_DIM,
    LabelEmbedder,
    PatchEmbed,
    TimestepEmbedder,
    sincos_pos_embed_2d,
    timestep_embedding,
)
from sit.models.modern import RMSNorm, SwiGLU, apply_rope, rope_tables, swiglu_hidden

LN_EPS = 1e-6


# ------------------------------------------------------------------------------------------------
# blocks (names mirror the official state_dict; the embedders are in sit.models.embeddings)
# ------------------------------------------------------------------------------------------------
ATTN_IMPLS = ("auto", "sdpa", "matmul")


class Attention(nn.Module):
    """Multi-head self-attention. ``impl="sdpa"`` calls F.scaled_dot_product_attention;
    ``impl="matmul"`` spells it out as softmax(q k^T / sqrt(d)) v with two batched matmuls, which
    is about twice as fast as SDPA's CPU flash kernel for fwd+bwd in bf16 at T = 256 tokens, and
    faster in fp32 too (benchmarks/bench_model.py; docs/benchmarks.md "Network").
    ``impl="auto"`` (default) uses the matmul form for bf16/fp16 attention on CPUs and SDPA
    otherwise (GPUs; fp32 on CPUs, where the two measured on par). Same result up to rounding."""

    def __init__(self, hidden_size: int, num_heads: int, impl: str = "auto", qk_norm: str | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=True)
        self.proj = nn.Linear(hidden_size, hidden_size, bias=True)
        if qk_norm is not None:  # the modern block (sit.models.modern): "rms" or "layer", per head
            hd = hidden_size // num_heads
            norm = (lambda: RMSNorm(hd)) if qk_norm == "rms" else (lambda: nn.LayerNorm(hd, eps=LN_EPS))
            self.q_norm, self.k_norm = norm(), norm()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        B, T, D = x.shape
        hd = D // self.num_heads
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hd)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        # auto: SDPA's CPU kernel is ~2x slower than two matmuls in bf16 (fp32: on par; GPUs: SDPA)
        if self.impl == "matmul" or (self.impl == "auto" and q.device.type == "cpu" and q.dtype != torch.float32):
            # contiguous heads first (batched matmuls on the strided views ran ~1.5x slower on CPU);
            # the scale rides on q's copy
            q, k, v = q * hd**-0.5, k.contiguous(), v.contiguous()
            att = torch.matmul(q, k.transpose(-2, -1))  # (B, nh, T, T)
            h = torch.matmul(att.softmax(dim=-1), v)
        else:
            h = F.scaled_dot_product_attention(q, k, v)
        return self.proj(h.transpose(1, 2).reshape(B, T, D))


def _fused_linear_gelu_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


FUSED_CPU_GELU = _fused_linear_gelu_available()  # inference: oneDNN linear with a tanh-GELU epilogue


_GELU_TANH_K = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh_sigmoid(h: Tensor) -> Tensor:
    """The tanh-approximated GELU of the official MLP, 0.5 h (1 + tanh(z)) with
    z = sqrt(2/pi) (h + 0.044715 h^3), written as h * sigmoid(2z) (the same function:
    0.5 (1 + tanh z) = sigmoid(2z)) and computed in float32 whatever h's dtype. Used where
    torch.compile generates the CPU kernels of a training step: there inductor's vectorised tanh
    made the GELU forward+backward ~2x the cost of this exp-based form (SiT-S/2 bf16 step: GELU
    ~10 % of the compiled step; docs/benchmarks.md). Equal to F.gelu(h, approximate="tanh") to
    float rounding (tests/test_models.py)."""
    u = h.float()
    return (u * torch.sigmoid(_GELU_TANH_K * u * (1.0 + 0.044715 * u * u))).to(h.dtype)


class Mlp(nn.Module):
    """fc2(GELU_tanh(fc1(x))). On CPU without autograd, fc1 and the GELU run as one oneDNN kernel
    (the GELU is applied while the matmul result is in registers: no extra pass over memory);
    under autocast that kernel gets bf16 inputs, as autocast would give the linear."""

    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden, bias=True)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.fc1.weight, self.fc1.bias
        if (
            FUSED_CPU_GELU
            and x.device.type == "cpu"
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and not torch.compiler.is_compiling()  # inductor fuses the GELU itself
        ):
            if torch.is_autocast_enabled("cpu"):
                dt = torch.get_autocast_dtype("cpu")
                x, w, b = x.to(dt), w.to(dt), b.to(dt)
            if x.dtype == w.dtype and x.dtype in (torch.float32, torch.bfloat16):
                return self.fc2(torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh"))
        if torch.compiler.is_compiling() and x.device.type == "cpu" and torch.is_grad_enabled():
            return self.fc2(gelu_tanh_sigmoid(self.fc1(x)))  # compiled CPU training: the cheaper kernel
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=LN_EPS)


class SiTBlock(nn.Module):
    """x <- x + g_a * Attn(LN(x)(1 + s_a) + b_a);  x <- x + g_m * MLP(LN(x)(1 + s_m) + b_m).
    ``config``'s modern options (sit.models.modern) swap in SwiGLU, RMSNorm (norm1 / norm2), QK-norm;
    RoPE tables come with the call."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, config: ModelConfig | None = None):
        super().__init__()
        swiglu, rms, qk = (False, False, False) if config is None else (config.swiglu, config.rmsnorm, config.qk_norm)
        self.attn = Attention(hidden_size, num_heads, qk_norm=("rms" if rms else "layer") if qk else None)
        if swiglu:
            self.mlp = SwiGLU(hidden_size, swiglu_hidden(hidden_size, mlp_ratio))
        else:
            self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        if rms:
            self.norm1, self.norm2 = RMSNorm(hidden_size), RMSNorm(hidden_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x: Tensor, mod: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (B, T, D) tokens; mod: (B, 6D) = adaLN_modulation(c), precomputed by the caller."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.to(x.dtype).unsqueeze(1).chunk(6, dim=2)
        if hasattr(self, "norm1"):
            x = torch.addcmul(x, gate_a, self.attn(torch.addcmul(shift_a, self.norm1(x), 1 + scale_a), rope))
            return torch.addcmul(x, gate_m, self.mlp(torch.addcmul(shift_m, self.norm2(x), 1 + scale_m)))
        x = torch.addcmul(x, gate_a, self.attn(torch.addcmul(shift_a, _layer_norm(x), 1 + scale_a), rope))
        x = torch.addcmul(x, gate_m, self.mlp(torch.addcmul(shift_m, _layer_norm(x), 1 + scale_m)))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, rmsnorm: bool = False):
        super().__init__()
        if rmsnorm:
            self.norm_final = RMSNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).to(x.dtype).unsqueeze(1).chunk(2, dim=2)
        xn = self.norm_final(x) if hasattr(self, "norm_final") else _layer_norm(x)
        return self.linear(torch.addcmul(shift, xn, 1 + scale))


# ------------------------------------------------------------------------------------------------
# the network
# ------------------------------------------------------------------------------------------------
class SiT(nn.Module):
    """SiT / DiT backbone for ``config`` (any size, patch, input size, channels, classes).

    forward(x (B, C, H, W), t_net (B,), y (B,) long or None) -> (B, out_channels, H, W).
    ``y=None`` means unconditional (the null label num_classes, needs class_dropout_prob > 0).
    In train mode labels are dropped with probability class_dropout_prob; ``force_drop_ids``
    (B,) with 1 = drop overrides the random choice in any mode (official semantics).
    A freshly initialised model outputs exactly zero (adaLN-Zero).
    grad_checkpointing: recompute each block in the backward pass (activation memory ~ 1 block).
    attn_impl: "auto" (explicit matmuls for bf16 on CPUs, SDPA otherwise), "sdpa" or "matmul" (see
        ``Attention``; ``set_attn_impl`` changes it later).
    """

    def __init__(self, config: ModelConfig, grad_checkpointing: bool = False, attn_impl: str = "auto"):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"SiT needs a sit.config.ModelConfig (got {type(config).__name__})")
        if config.hidden_size % 4:
            raise ValueError(f"ModelConfig.hidden_size must be divisible by 4 for the 2-D sin-cos table (got {config.hidden_size})")
        self.config = config
        self.grad_checkpointing = grad_checkpointing
        D, p = config.hidden_size, config.patch_size
        self.in_channels = config.in_channels
        self.out_channels = config.out_channels
        self.patch_size = p
        self.num_heads = config.num_heads
        self.num_classes = config.num_classes
        self.grid_size = config.input_size // p

        self.x_embedder = PatchEmbed(p, config.in_channels, D)
        self.t_embedder = TimestepEmbedder(D)
        # MeanFlow's second time (t - r, the interval of the average velocity): only with
        # config.second_time, zero-initialised output so the network starts as the plain SiT
        self.t2_embedder = TimestepEmbedder(D) if config.second_time else None
        self.y_embedder = LabelEmbedder(config.num_classes, D, config.class_dropout_prob)
        # a frozen Parameter (not a buffer) like the official model: it is in the state_dict and
        # counts towards the published parameter numbers
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, D), requires_grad=False)
        self.blocks = nn.ModuleList([SiTBlock(D, config.num_heads, config.mlp_ratio, config) for _ in range(config.depth)])
        self.final_layer = FinalLayer(D, p, self.out_channels, config.rmsnorm)
        if config.rope:  # not in the state_dict: rebuilt from the config (`rebuild_buffers`)
            cos, sin = rope_tables(self.grid_size, D // config.num_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.initialize_weights()
        self.set_attn_impl(attn_impl)

    def rebuild_buffers(self) -> "SiT":
        """Recompute the buffers that are not in the state_dict (the RoPE tables), e.g. after a
        network built on the meta device was materialised with ``to_empty``."""
        if self.config.rope:
            cos, sin = rope_tables(self.grid_size, self.config.hidden_size // self.config.num_heads,
                                   device=self.rope_cos.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        return self

    def set_attn_impl(self, impl: str) -> "SiT":
        """Attention kernel of every block: "auto" (default: matmul for bf16 on CPUs, else SDPA), "sdpa"
        (F.scaled_dot_product_attention) or "matmul" (explicit softmax attention, faster on CPUs)."""
        if impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; expected one of {list(ATTN_IMPLS)}")
        for blk in self.blocks:
            blk.attn.impl = impl
        self.attn_impl = impl
        return self

    # -- initialisation (official): xavier-uniform linears, zero biases, N(0, 0.02) embeddings,
    #    zero adaLN modulations and output layer (adaLN-Zero) --------------------------------------
    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            table = sincos_pos_embed_2d(self.config.hidden_size, self.grid_size)
            self.pos_embed.copy_(table.float().unsqueeze(0))
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # like a Linear on flattened patches
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.t2_embedder is not None:
            nn.init.normal_(self.t2_embedder.mlp[0].weight, std=0.02)
            nn.init.zeros_(self.t2_embedder.mlp[2].weight)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    # -- helpers ---------------------------------------------------------------------------------
    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, p*p*c) -> (B, c, H, W); features per token ordered (p_row, p_col, channel)."""
        B, T, _ = x.shape
        p, c, g = self.patch_size, self.out_channels, self.grid_size
        x = x.reshape(B, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, c, g, p, g, p)
        return x.reshape(B, c, g * p, g * p)

    def _modulations(self, c: Tensor) -> list[Tensor]:
        """Every block's adaLN modulation Linear(SiLU(c)): list of (B, 6D); SiLU computed once."""
        s = F.silu(c)
        return [blk.adaLN_modulation[1](s) for blk in self.blocks]

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, force_drop_ids: Tensor | None = None,
                t2: Tensor | None = None, hidden: tuple[int, ...] = ()):
        """x (B, C, H, W), t (B,) network time, y (B,) labels -> (B, out_channels, H, W).
        ``t2`` (B,): the second time of a ``config.second_time`` network (MeanFlow: t - r; None = 0).
        ``hidden``: blocks (1-based) whose output tokens (B, N, D) are returned too, as
        (output, {block: tokens}) (the objective seam's `sit.train.seam.Outputs.hidden`)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.config.input_size or x.shape[3] != self.config.input_size:
            raise ValueError(
                f"SiT expects x of shape (B, {self.in_channels}, {self.config.input_size}, {self.config.input_size}) "
                f"(got {tuple(x.shape)})"
            )
        B = x.shape[0]
        if t.ndim == 0:
            t = t.expand(B)
        if y is None:
            if self.y_embedder.dropout_prob <= 0:
                raise ValueError("y=None (unconditional) needs a null label row: class_dropout_prob > 0")
            y = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
        wdtype = self.x_embedder.proj.weight.dtype
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(wdtype)
        # pos_embed first: the sum then takes its contiguous (B, T, D) layout. The patch embedding
        # is a transposed view of the conv output, and with it first every residual add, LayerNorm
        # (one copy each) and modulate ran on a token-strided stream (SiT-S/2 bf16 forward 8-10 % slower)
        h = self.pos_embed.to(wdtype) + self.x_embedder(x)  # (B, T, D), contiguous
        c = self.t_embedder(t) + self.y_embedder(y, self.training, force_drop_ids)  # (B, D)
        if self.t2_embedder is not None:
            c = c + self.t2_embedder(torch.zeros_like(t) if t2 is None else (t2.expand(B) if t2.ndim == 0 else t2))
        elif t2 is not None:
            raise ValueError("t2 (a second time) needs a network with ModelConfig.second_time (MeanFlow)")
        kept: dict[int, Tensor] = {}
        mods = self._modulations(c)
        rope = (self.rope_cos, self.rope_sin) if self.config.rope else None
        for i, (block, mod) in enumerate(zip(self.blocks, mods), 1):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(block, h, mod, rope, use_reentrant=False)
            else:
                h = block(h, mod, rope)
            if i in hidden:
                kept[i] = h
        h = self.final_layer(h, c)  # (B, T, p*p*out_channels)
        out = self.unpatchify(h)
        if hidden:
            missing = sorted(set(hidden) - set(kept))
            if missing:
                raise ValueError(f"hidden: blocks {missing} are not among the network's 1..{len(self.blocks)}")
            return out, kept
        return out

    def num_params(self) -> int:
        """All parameters including the frozen pos_embed (how the published counts are made)."""
        return sum(p.numel() for p in self.parameters())
