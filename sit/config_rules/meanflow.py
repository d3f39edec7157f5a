"""TrainConfig's MeanFlow rules (sit.train.meanflow)."""

from __future__ import annotations

import math
from typing import Any

from sit.field_errors import ConfigError


def check_meanflow(cfg: Any) -> None:
    """MeanFlow: its numbers are finite and in range; the objective needs continuous-time velocity."""
    for name in ("meanflow_ratio", "meanflow_p_mean", "meanflow_p_std", "meanflow_norm_p", "meanflow_norm_eps",
                 "meanflow_omega", "meanflow_kappa"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise ConfigError("TrainConfig", name, f"must be a finite number (got {v!r})")
    if not 0.0 <= cfg.meanflow_ratio <= 1.0:
        raise ConfigError("TrainConfig", "meanflow_ratio", f"must lie in [0, 1] (got {cfg.meanflow_ratio})")
    for name in ("meanflow_p_std", "meanflow_norm_eps"):
        if not getattr(cfg, name) > 0:
            raise ConfigError("TrainConfig", name, f"must be > 0 (got {getattr(cfg, name)})")
    if cfg.meanflow_norm_p < 0:
        raise ConfigError("TrainConfig", "meanflow_norm_p", f"must be >= 0 (got {cfg.meanflow_norm_p})")
    if cfg.objective == "meanflow":
        if cfg.time_input != "continuous" or cfg.prediction != "velocity":
            raise ConfigError("TrainConfig", "objective", "'meanflow' learns an average velocity: it needs "
                              "{prediction} 'velocity' and {time_input} 'continuous'")
