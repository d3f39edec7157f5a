"""TrainConfig's post-hoc EMA rules (sit.train.phema, `sit ema`): the lengths' range, the fit's error
bound, sigmas and cadence given together."""

from __future__ import annotations

from typing import Any

from sit.field_errors import ConfigError

# post-hoc EMA lengths sigma_rel (sit.train.phema): below 1e-4 a power-function EMA averages less than
# 0.01 % of training (no averaging at all for runs under 10,000 steps) and sigma^-2 overflows below
# 1e-154; 12^-1/2 is gamma = 0, the uniform average of the whole run
PHEMA_SIGMA_RANGE = (1e-4, 12 ** -0.5)
# the largest relative L2 error of a reconstructed averaging profile `sit ema` accepts: 0.05, below the
# 0.067-0.085 that separates the profile of sigma_rel from that of 1.1 sigma_rel (sigma_rel 0.01-0.10),
# so an accepted reconstruction is nearer the requested EMA than a 10 % longer or shorter EMA is.
# Snapshots of sigma_rel 0.05 / 0.10 every 25 steps of 1,200 reach 0.014-0.26 within it; every 100
# steps of 600 only 0.04-0.14 (sit.train.phema.fit_error)
PHEMA_MAX_FIT_ERROR = 0.05


def check_phema(cfg: Any) -> None:
    """Post-hoc EMA: sigmas and cadence given together, every sigma in range."""
    if bool(cfg.phema_sigmas) != (cfg.phema_every > 0) or cfg.phema_every < 0:
        raise ConfigError("TrainConfig", "phema_every", f"goes with phema_sigmas: sigmas {list(cfg.phema_sigmas)}, "
                          f"every {cfg.phema_every} (give both, every >= 1, or neither)")
    lo, hi = PHEMA_SIGMA_RANGE
    for s in cfg.phema_sigmas:
        if not lo <= s < hi:
            raise ConfigError("TrainConfig", "phema_sigmas", f"value {s} is outside [{lo:g}, {hi:.4f})")
