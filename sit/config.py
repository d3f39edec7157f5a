"""Frozen dataclass configs, presets and their JSON round trip (stdlib only).

Every resolved config is saved as JSON beside a checkpoint; ``from_dict`` refuses unknown keys
so a typo in a config file is an error, not a silently ignored field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict[str, Any]):
    """Build dataclass ``cls`` from a dict, naming any unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**kwargs)


def to_json(cfg) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


@dataclass(frozen=True)
class ModelConfig:
    """The SiT / DiT backbone (paper section 2.5). Defaults: SiT-XL/2 on 32x32x4 SD-VAE latents."""

    input_size: int = 32          # latent height = width (pixels / 8 for the SD VAE)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1   # label dropout for classifier-free guidance
    num_classes: int = 1000           # the null (unconditional) label is index num_classes
    learn_sigma: bool = True          # official checkpoints carry 2*in_channels output channels

    def __post_init__(self):
        for name in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer (got {v!r})")
        if self.input_size % self.patch_size:
            raise ValueError(
                f"ModelConfig.input_size ({self.input_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.class_dropout_prob < 1.0:
            raise ValueError(f"ModelConfig.class_dropout_prob must be in [0, 1) (got {self.class_dropout_prob})")
        if not self.mlp_ratio > 0:
            raise ValueError(f"ModelConfig.mlp_ratio must be > 0 (got {self.mlp_ratio})")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels


# (depth, hidden_size, num_heads) of the paper's sizes (Table in section 2.5; same as DiT)
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

MODEL_PRESETS: dict[str, ModelConfig] = {
    f"SiT-{size}/{p}": ModelConfig(patch_size=p, depth=d, hidden_size=h, num_heads=nh)
    for size, (d, h, nh) in MODEL_SIZES.items()
    for p in (2, 4, 8)
}


def model_preset(name: str, **overrides) -> ModelConfig:
    """A named preset ('SiT-XL/2', 'SiT-S/4', ...; 'DiT-' is accepted as an alias, '-' for '/'),
    with field overrides (e.g. input_size=64, num_classes=10)."""
    key = name.replace("DiT-", "SiT-")
    if key.count("-") == 2:  # SiT-XL-2
        head, _, p = key.rpartition("-")
        key = f"{head}/{p}"
    if key not in MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODEL_PRESETS)}")
    return dataclasses.replace(MODEL_PRESETS[key], **overrides)
