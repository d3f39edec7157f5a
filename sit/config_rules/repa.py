"""TrainConfig's REPA rules (representation alignment, sit.train.repa): depth, projector width,
coefficient, encoder names."""

from __future__ import annotations

import math
from typing import Any

from sit.field_errors import ConfigError

REPA_MAX_PROJ_DIM = 16384    # --repa-proj-dim bound (REPA: 2048; 16384 is a 0.3 GB projector on SiT-XL/2 in float32)


def check_repa_fields(cfg: Any) -> None:
    """REPA (representation alignment): depth, projector width, coefficient, encoder names (what
    needs the model config and the encoders themselves: `sit.train.repa.check_repa`)."""
    if cfg.repa_depth is not None and (not isinstance(cfg.repa_depth, int) or isinstance(cfg.repa_depth, bool)
                                        or cfg.repa_depth < 1):
        raise ConfigError("TrainConfig", "repa_depth", f"must be a positive integer or None (got {cfg.repa_depth!r})")
    if (not isinstance(cfg.repa_proj_dim, int) or isinstance(cfg.repa_proj_dim, bool)
            or not 1 <= cfg.repa_proj_dim <= REPA_MAX_PROJ_DIM):
        raise ConfigError("TrainConfig", "repa_proj_dim", f"must be an integer in [1, {REPA_MAX_PROJ_DIM}] "
                          f"(got {cfg.repa_proj_dim!r})")
    if not (isinstance(cfg.repa_coeff, (int, float)) and not isinstance(cfg.repa_coeff, bool)
            and math.isfinite(cfg.repa_coeff) and cfg.repa_coeff >= 0):
        raise ConfigError("TrainConfig", "repa_coeff", f"must be a finite number >= 0 (got {cfg.repa_coeff!r})")
    if cfg.repa_encoder is not None and not all(e.strip() for e in cfg.repa_encoder.split(",")):
        raise ConfigError("TrainConfig", "repa_encoder", f"names an empty encoder in {cfg.repa_encoder!r} "
                          "(one encoder, or several separated by commas)")
