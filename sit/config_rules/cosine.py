"""TrainConfig's rules of LightningDiT's cosine velocity term (sit.train.terms)."""

from __future__ import annotations

from typing import Any

from sit.field_errors import ConfigError


def check_cosine_coeff(cfg: Any) -> None:
    """The cosine velocity term (LightningDiT): its coefficient is a number >= 0."""
    if not (isinstance(cfg.cosine_coeff, (int, float)) and cfg.cosine_coeff >= 0):
        raise ConfigError("TrainConfig", "cosine_coeff", f"must be >= 0 (got {cfg.cosine_coeff!r})")


def check_cosine_needs_velocity(cfg: Any) -> None:
    """The cosine velocity term compares velocities: velocity prediction in continuous time."""
    if cfg.cosine_coeff and (cfg.prediction != "velocity" or cfg.time_input != "continuous"):
        raise ConfigError("TrainConfig", "cosine_coeff", "needs prediction 'velocity' in continuous time (it compares velocities)")
