"""Guidance as a wrapper around a prediction function: classifier-free guidance (paper section
3.3) and autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

    CFG:          out^zeta(x, t; y) = zeta out(x, t; y) + (1 - zeta) out(x, t; null)
    autoguidance: out^zeta(x, t; y) = zeta out(x, t; y) + (1 - zeta) guide(x, t; y)

where ``guide`` is a weaker network (fewer training steps, or smaller) of the same data, path,
prediction and conditioning, called with the SAME label. The guide costs a second network
evaluation per step (its rows cannot share the main network's batch); ``GuidedModel.guide_nfe``
counts them. A guide identical to the model gives the unguided output (up to float rounding).

with zeta = ``cfg_scale``: zeta = 1 is no guidance (and skips the unconditional rows), zeta = 0
is the unconditional model. (Some codebases scale by 1 + w; here w = zeta - 1.) Because velocity,
score and noise are affine in one another at fixed (x, t), the same combination is right for any
of the three predictions. The null label is ``null_class`` (= num_classes for SiT/DiT).

Options beyond the plain rule:
  channels=k   guide only channels 0..k-1 (the official SiT/DiT ``forward_with_cfg`` guides 3 of
               the 4 latent channels; the others keep the conditional output). Off by default.
  interval=(t_lo, t_hi)  guide only for paper times t_lo <= t <= t_hi (0 <= t_lo < t_hi <= 1, the
               one rule, checked here for every caller); elsewhere the conditional output (one
               network call on the conditional rows only).
Both options apply to either strategy. `GuidanceConfig` holds the settings; ``guide`` (the guide
checkpoint's identity, `sit.checkpoints.identity`) selects autoguidance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import Tensor

from sit.config import ConfigError, added_later


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"cfg_scale (guidance scale zeta) must be a finite number (got {scale!r})")
    return float(scale)


def _check_channels(channels) -> int | None:
    if channels is not None and (not isinstance(channels, int) or isinstance(channels, bool) or channels < 1):
        raise ValueError(f"channels must be None (guide all) or an integer >= 1 (got {channels!r})")
    return channels


def check_interval(interval) -> tuple[float, float] | None:
    """The one rule for a guidance interval: None, or a pair 0 <= t_lo < t_hi <= 1 (paper time)."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance interval must be a pair (t_lo, t_hi) (got {interval!r})") from None
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"guidance interval must satisfy 0 <= t_lo < t_hi <= 1 (got {interval!r})")
    return (lo, hi)


@dataclasses.dataclass(frozen=True)
class GuidanceConfig:
    """Guidance settings: ``scale`` zeta (1 = off), ``channels`` (None = all, k = guide channels
    0..k-1 only), ``interval`` (None = all t, else guide only for t_lo <= t <= t_hi in paper
    time), ``guide`` (None = classifier-free guidance with the null label; a string = autoguidance
    by the guide network whose `sit.checkpoints.identity` it is, "" until the guide is resolved)."""

    scale: float = 1.0
    channels: int | None = None
    interval: tuple[float, float] | None = None
    guide: str | None = added_later(None)  # CFG's sets keep the identity they had before autoguidance

    def __post_init__(self):
        object.__setattr__(self, "scale", _check_scale(self.scale))
        _check_channels(self.channels)
        object.__setattr__(self, "interval", check_interval(self.interval))
        if self.guide is not None and not isinstance(self.guide, str):
            raise ValueError(f"guide must be None (CFG) or the guide checkpoint's identity (got {self.guide!r})")

    @property
    def active(self) -> bool:
        """False when guidance is off (zeta = 1): no unconditional or guide rows at all."""
        return self.scale != 1.0

    @property
    def strategy(self) -> str:
        """"off", "cfg" or "autoguidance"."""
        return "off" if not self.active else ("cfg" if self.guide is None else "autoguidance")

    def wrap(self, model_fn: Callable[[Tensor, Tensor, Tensor], Tensor], null_class: int | None,
             guide_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None):
        """``model_fn`` guided by this config, or ``model_fn`` itself when guidance is off.
        CFG needs ``null_class`` (a model trained with label dropout); autoguidance needs ``guide_fn``."""
        if (self.guide is not None) != (guide_fn is not None):
            raise ValueError("autoguidance needs both the guide's identity (GuidanceConfig.guide) and its network"
                             if guide_fn is None else "a guide network was given but GuidanceConfig.guide is None (CFG)")
        if not self.active:
            return model_fn
        if guide_fn is not None:
            return GuidedModel(model_fn, self, None, guide_fn=guide_fn)
        if null_class is None:
            raise ConfigError("GuidanceConfig", "scale", f"{self.scale} needs a class-conditional model trained with "
                              "label dropout (it has no null label); use {guide} for autoguidance")
        return GuidedModel(model_fn, self, null_class)


class GuidedModel:
    """``GuidedModel(model_fn, guidance, null_class)(x, t, y)`` -> guided prediction.

    model_fn(x, t, y) is a prediction function in paper time (x (B, C, ...), t (B,), y (B,) int).
    Conditional and unconditional rows go through ONE batched call (x and t concatenated, y with
    the null label), so each call of the wrapper is one network evaluation: ``nfe`` counts them
    (``rows`` counts the rows sent to the network).

    ``guidance`` is the scale zeta (a number) or a `GuidanceConfig` (then ``channels`` / ``interval``
    come from it); the scale is kept as ``cfg_scale``.
    With ``guide_fn`` (autoguidance) the second output is ``guide_fn(x, t, y)`` with the same
    labels, in a separate call counted in ``guide_nfe``; ``null_class`` is then unused (None)."""

    def __init__(
        self,
        model_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
        guidance: "float | GuidanceConfig",
        null_class: int | None,
        channels: int | None = None,
        interval: tuple[float, float] | None = None,
        guide_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    ):
        if isinstance(guidance, GuidanceConfig):
            if channels is not None or interval is not None:
                raise ValueError("GuidedModel: give channels / interval in the GuidanceConfig, not beside it")
            guidance, channels, interval = guidance.scale, guidance.channels, guidance.interval
        cfg_scale = _check_scale(guidance)
        channels = _check_channels(channels)
        interval = check_interval(interval)
        if guide_fn is None and null_class is None:
            raise ValueError("GuidedModel needs null_class (CFG) or guide_fn (autoguidance)")
        self.model_fn = model_fn
        self.guide_fn = guide_fn
        self.cfg_scale = cfg_scale
        self.null_class = int(null_class) if null_class is not None else None
        self.channels = channels
        self.interval = interval
        self.nfe = 0
        self.guide_nfe = 0
        self.rows = 0

    def _active(self, t: Tensor) -> Tensor:
        """(B,) bool: rows whose time lies in the guidance interval."""
        if self.interval is None:
            return torch.ones(t.shape[0], dtype=torch.bool, device=t.device)
        lo, hi = self.interval
        return (t >= lo) & (t <= hi)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor, r: Tensor | None = None) -> Tensor:
        """The guided prediction at (x, t) for labels y; ``r`` (B,): the start time of an
        average-velocity (MeanFlow) network, passed through to every call alongside t."""
        if y is None and self.guide_fn is None:
            raise ValueError("GuidedModel needs class labels y (B,); the null label is added internally")
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)

        def call(fn, xx, tt, yy, rr):
            return fn(xx, tt, yy) if rr is None else fn(xx, tt, yy, r=rr)

        self.nfe += 1
        active = self._active(t)
        if self.cfg_scale == 1.0 or not bool(active.any()):
            self.rows += B
            return call(self.model_fn, x, t, y, r)
        idx = active.nonzero().squeeze(1)
        all_active = idx.numel() == B
        xu, tu = (x, t) if all_active else (x[idx], t[idx])
        ru = r if (r is None or all_active) else r[idx]
        if self.guide_fn is not None:
            cond = call(self.model_fn, x, t, y, r)
            uncond = call(self.guide_fn, xu, tu, y if (all_active or y is None) else y[idx], ru)
            self.guide_nfe += 1
        else:
            null = torch.full_like(y[idx] if not all_active else y, self.null_class)
            out = call(self.model_fn, torch.cat([x, xu]), torch.cat([t, tu]), torch.cat([y, null]),
                       None if r is None else torch.cat([r, ru]))
            cond, uncond = out[:B], out[B:]
        self.rows += B + idx.numel()
        c = cond if all_active else cond[idx]
        k = c.shape[1] if self.channels is None else min(self.channels, c.shape[1])
        guided = c.clone()
        guided[:, :k] = self.cfg_scale * c[:, :k] + (1 - self.cfg_scale) * uncond[:, :k]
        if all_active:
            return guided
        res = cond.clone()
        res[idx] = guided
        return res

    def __repr__(self):
        return (
            f"GuidedModel(cfg_scale={self.cfg_scale}, null_class={self.null_class}, channels={self.channels}, "
            f"interval={self.interval}, guide={'yes' if self.guide_fn is not None else 'no'})"
        )
