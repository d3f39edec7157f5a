"""Model configs from weight shapes: `infer_config` (what an official file does not state),
`preset_name`, and the checks of a saved or given config against the weights
(`check_config_against_weights`, before anything is built; `check_state_dict`, key by key).

Split from `sit.models.checkpoint` (which re-exports every name here).

Must not import: ``sit.checkpoints`` (the store), ``sit.train``, ``sit.generate``, ``sit.commands``.
"""

from __future__ import annotations

import math
import re

from torch import Tensor, nn

from sit.config import MODEL_PRESETS, ConfigError, ModelConfig
from sit.models.modern import swiglu_hidden


def preset_name(config: ModelConfig) -> str | None:
    """'SiT-XL/2' when (depth, hidden, heads, patch, mlp_ratio) match a paper preset, else None."""
    for name, p in MODEL_PRESETS.items():
        if (p.depth, p.hidden_size, p.num_heads, p.patch_size, p.mlp_ratio) == (
            config.depth, config.hidden_size, config.num_heads, config.patch_size, config.mlp_ratio,
        ):
            return name
    return None


def infer_config(state_dict: dict[str, Tensor], args: dict | None = None, num_heads: int | None = None) -> ModelConfig:
    """ModelConfig from state_dict shapes (and official train.py args when given).

    Shapes give hidden size, in-channels, patch, input size (pos_embed), depth, MLP ratio,
    learn_sigma (output = 2 * in-channels) and the class table size. Not in the shapes: the
    number of heads (``num_heads`` when given, else the paper preset with the same depth and width,
    or args.model) and whether the table has a null row (assumed yes, dropout 0.1, as officially).
    """
    needed = ("x_embedder.proj.weight", "pos_embed", "final_layer.linear.weight", "y_embedder.embedding_table.weight")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ValueError(f"not a SiT/DiT state_dict: missing key(s) {missing}")
    D, C, p, _ = state_dict["x_embedder.proj.weight"].shape
    T = state_dict["pos_embed"].shape[1]
    grid = math.isqrt(T)
    if grid * grid != T:
        raise ValueError(f"pos_embed has {T} tokens, not a square grid")
    depth = 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    swiglu = "blocks.0.mlp.w12.weight" in state_dict  # the modern block's keys (sit.models.modern; RoPE has none)
    if swiglu:  # H = int(2/3 * D * ratio): the ratio to a quarter
        mlp_hidden = round(1.5 * state_dict["blocks.0.mlp.w12.weight"].shape[0] / 2 / D * 4) / 4 * D
    else:
        mlp_hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0] if depth else int(4 * D)
    out = state_dict["final_layer.linear.weight"].shape[0] // (p * p)
    if out not in (C, 2 * C):
        raise ValueError(f"final_layer.linear.weight has {out * p * p} rows; expected p*p*C or p*p*2C for C={C}, p={p}")
    rows = state_dict["y_embedder.embedding_table.weight"].shape[0]
    args = args or {}
    heads = _infer_heads(D, depth, num_heads, args)
    num_classes = int(args.get("num_classes", rows - 1))
    if num_classes == rows:
        dropout = 0.0
    elif num_classes == rows - 1:
        dropout = 0.1
    else:
        raise ValueError(f"y_embedder.embedding_table.weight has {rows} rows but args.num_classes = {num_classes}")
    return ModelConfig(
        input_size=grid * p,
        patch_size=p,
        in_channels=C,
        hidden_size=D,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_hidden / D,
        class_dropout_prob=dropout,
        num_classes=num_classes,
        learn_sigma=out == 2 * C,
        swiglu=swiglu, rmsnorm="blocks.0.norm1.weight" in state_dict, qk_norm="blocks.0.attn.q_norm.weight" in state_dict,
    )


def _infer_heads(D: int, depth: int, num_heads: int | None, args: dict) -> int:
    """The number of heads (not in the shapes): ``num_heads`` when given, checked against the one a
    sit export records in ``args``; else the recorded one, args.model's preset, or the paper preset
    with the same depth and width."""
    heads = None
    if num_heads is not None:
        if int(num_heads) < 1 or D % int(num_heads):
            raise ValueError(f"num_heads must be a positive divisor of the hidden size {D} (got {num_heads})")
        heads = int(num_heads)
    recorded = args.get("num_heads") if args else None  # written by sit's export_official (official_args)
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        if heads is not None and heads != recorded:
            raise ConfigError("", "num_heads", f"{heads} contradicts it: the checkpoint records num_heads={recorded}")
        heads = recorded
    model_name = args.get("model")
    if heads is None and isinstance(model_name, str):
        key = model_name.replace("DiT-", "SiT-")
        if key in MODEL_PRESETS and MODEL_PRESETS[key].hidden_size == D:
            heads = MODEL_PRESETS[key].num_heads
    if heads is None:
        for pr in MODEL_PRESETS.values():
            if (pr.depth, pr.hidden_size) == (depth, D):
                heads = pr.num_heads
                break
    if heads is None:
        raise ConfigError("", "num_heads",
            f"cannot be inferred for depth {depth}, hidden size {D} (not a paper preset; the weights' shapes "
            "do not depend on it): give it (or config=ModelConfig(...))"
        )
    return heads


def check_config_against_weights(config: ModelConfig, state_dict: dict[str, Tensor], source: str) -> None:
    """ValueError naming the first size of ``config`` (a saved or given config: depth, hidden size,
    patch, input size, channels, MLP width) that the weights' shapes contradict, and
    any weight that is not floating point; checked before the network is built, so a corrupt or
    hostile config cannot allocate without end."""
    for k, v in state_dict.items():
        if not v.is_floating_point():
            raise ValueError(f"{source}: weight {k!r} has dtype {str(v.dtype).replace('torch.', '')}; "
                             "SiT weights are floating point")
    shapes = infer_config(state_dict, num_heads=config.num_heads)
    mlp_key = "blocks.0.mlp.w12.weight" if config.swiglu else "blocks.0.mlp.fc1.weight"
    mlp = int(state_dict[mlp_key].shape[0]) if shapes.depth and mlp_key in state_dict else None
    checks = [("depth", config.depth, shapes.depth), ("hidden_size", config.hidden_size, shapes.hidden_size),
              ("patch_size", config.patch_size, shapes.patch_size), ("input_size", config.input_size, shapes.input_size),
              ("in_channels", config.in_channels, shapes.in_channels)]  # the sizes that scale the build
    if mlp is not None:
        width = 2 * swiglu_hidden(config.hidden_size, config.mlp_ratio) if config.swiglu else int(config.hidden_size * config.mlp_ratio)
        checks.append(("MLP width (hidden_size * mlp_ratio)", width, mlp))
    for name, said, found in checks:
        if name == "depth" and said != found:
            gap = (f"missing keys blocks.{found}.* to blocks.{said - 1}.*" if said > found
                   else f"unexpected keys blocks.{said}.* to blocks.{found - 1}.*")
            raise ValueError(f"{source}: its config says depth={said} but the weights hold {found} blocks ({gap})")
        if said != found:
            raise ValueError(f"{source}: its config says {name}={said} but the weights hold {name}={found}")


def check_state_dict(net: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Raise ValueError naming missing/unexpected keys, or the first key whose shapes differ."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match the model: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{source}: shape mismatch for key {k!r}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            )


def config_summary(config: ModelConfig) -> dict:
    from sit.config import to_dict

    return {"preset": preset_name(config), **to_dict(config)}
