"""Analytic counts of `sit.models.sit.SiT` from its config alone: parameters (`param_count`) and
matmul FLOPs of a forward pass (`forward_flops`)."""

from __future__ import annotations

from sit.config import ModelConfig
from sit.models.embeddings import TIME_EMBED_DIM
from sit.models.modern import swiglu_hidden


def param_count(config: ModelConfig) -> int:
    """Number of parameters of SiT(config), including pos_embed, from the architecture alone."""
    D, p, C, nc = config.hidden_size, config.patch_size, config.in_channels, config.num_classes
    M = int(D * config.mlp_ratio)
    T = (config.input_size // p) ** 2
    lin = lambda i, o: i * o + o  # noqa: E731  weight + bias
    H = swiglu_hidden(D, config.mlp_ratio)
    mlp = lin(D, 2 * H) + lin(H, D) if config.swiglu else lin(D, M) + lin(M, D)
    hd = D // config.num_heads
    qk = 0 if not config.qk_norm else (2 * hd if config.rmsnorm else 4 * hd)  # q_norm, k_norm (LayerNorm: + bias)
    block = lin(D, 3 * D) + lin(D, D) + mlp + lin(D, 6 * D) + qk + (2 * D if config.rmsnorm else 0)
    return (
        (D if config.rmsnorm else 0) +                          # final_layer.norm_final
        T * D                                                   # pos_embed
        + D * C * p * p + D                                     # x_embedder.proj
        + lin(TIME_EMBED_DIM, D) + lin(D, D)                    # t_embedder.mlp
        + (nc + int(config.class_dropout_prob > 0)) * D         # y_embedder.embedding_table
        + config.depth * block
        + lin(D, p * p * config.out_channels) + lin(D, 2 * D)   # final_layer
    )


def forward_flops(config: ModelConfig, batch: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass on ``batch`` images.

    Counts the patch embedding, time MLP, every block's adaLN, q/k/v, attention scores QK^T and
    weighted sum AV, output projection, MLP, and the final layer. Elementwise work is not counted.
    A training step (forward + backward) is 3x this.
    """
    D, p = config.hidden_size, config.patch_size
    M = int(D * config.mlp_ratio)
    T = (config.input_size // p) ** 2
    N = batch * T
    per_block = 2 * N * D * (3 * D + D + 2 * M) + 2 * 2 * batch * T * T * D + 2 * batch * D * 6 * D
    return (
        2 * N * config.in_channels * p * p * D
        + 2 * batch * (TIME_EMBED_DIM * D + D * D)
        + config.depth * per_block
        + 2 * batch * D * 2 * D + 2 * N * D * p * p * config.out_channels
    )
