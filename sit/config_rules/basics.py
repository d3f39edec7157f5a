"""TrainConfig's basic rules: choice fields, counts, the optimiser, the loss weight, the batch."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, get_args, get_origin, get_type_hints

from sit.bounds import check_steps
from sit.field_errors import ConfigError


@functools.cache
def literal_choices(cls: type) -> dict[str, tuple]:
    """The allowed values of every choice field of dataclass ``cls``, read from its ``Literal``
    annotation (the one place they are written), in field order."""
    hints = get_type_hints(cls)
    return {f.name: get_args(hints[f.name]) for f in dataclasses.fields(cls) if get_origin(hints[f.name]) is Literal}


def check_choices(cfg: Any) -> None:
    """Every choice field is one of its Literal values; one data source (images or latents)."""
    for name, allowed in literal_choices(type(cfg)).items():
        v = getattr(cfg, name)
        if v not in allowed:
            raise ValueError(f"TrainConfig.{name}: unknown value {v!r}; expected one of {list(allowed)}")
    if cfg.data is not None and cfg.latents is not None:
        raise ValueError("TrainConfig: give either data (images) or latents (pre-extracted), not both")


def check_counts(cfg: Any) -> None:
    """Step, batch and cadence counts, thread and worker numbers, the image size."""
    for name in ("steps", "global_batch", "grad_accum", "log_every", "ckpt_every", "keep_last",
                 "sample_steps", "samples_per_class", "max_nonfinite", "quality_samples_per_class"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"TrainConfig.{name} must be a positive integer (got {v!r})")
    check_steps(cfg.sample_steps, "TrainConfig.sample_steps")
    for name in ("warmup_steps", "sample_every", "num_workers", "seed", "threads"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"TrainConfig.{name} must be an integer >= 0 (got {v!r})")
    if cfg.image_size is not None and (not isinstance(cfg.image_size, int) or cfg.image_size < 1):
        raise ValueError(f"TrainConfig.image_size must be a positive integer or None (got {cfg.image_size!r})")


def check_optimiser(cfg: Any) -> None:
    """AdamW (lr, weight decay, betas), gradient clipping and the EMA decay."""
    if not cfg.lr > 0:
        raise ValueError(f"TrainConfig.lr must be > 0 (got {cfg.lr})")
    if cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ValueError(f"TrainConfig.weight_decay and grad_clip must be >= 0 (got {cfg.weight_decay}, {cfg.grad_clip})")
    for name in ("beta1", "beta2", "ema_decay"):
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"TrainConfig.{name} must be in [0, 1) (got {v})")


def check_loss_weight(cfg: Any) -> None:
    """The loss weight weights the score / noise residual only."""
    if cfg.prediction == "velocity" and cfg.loss_weight is not None and cfg.time_input == "continuous":
        raise ValueError(
            f"TrainConfig.loss_weight={cfg.loss_weight!r} needs prediction 'score' or 'noise'; the velocity loss (7) is unweighted"
        )
    if cfg.loss_weight is not None and cfg.time_input == "continuous" and (
            cfg.prediction == "data" or cfg.loss_space is not None):
        raise ConfigError("TrainConfig", "loss_weight", "weights the score/noise residual; it does not combine with "
                          "prediction 'data' or a {loss_space} (the space's squared error is unweighted)")


def check_batch_and_cfg(cfg: Any) -> None:
    """Gradient accumulation divides the batch; the preview CFG scale is >= 0."""
    if cfg.global_batch % cfg.grad_accum:
        raise ValueError(
            f"TrainConfig.global_batch ({cfg.global_batch}) must be divisible by grad_accum ({cfg.grad_accum})"
        )
    if not cfg.cfg_scale >= 0:
        raise ValueError(f"TrainConfig.cfg_scale must be >= 0 (got {cfg.cfg_scale})")
