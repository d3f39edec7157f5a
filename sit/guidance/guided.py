"""`GuidedModel`: the torch wrapper every guidance strategy's ``wrap`` returns (`sit.guidance`,
the record and the strategy table).

    out^zeta(x, t; y) = zeta out(x, t; y) + (1 - zeta) other(x, t; y)

``other`` is the model with the null label (classifier-free guidance: conditional and null rows
in ONE batched call) or ``guide_fn(x, t, y)`` with the same labels (autoguidance: a separate call,
counted in ``guide_nfe``; a guide identical to the model gives the unguided output up to float
rounding). Because velocity, score and noise are affine in one another at fixed (x, t), the same
combination is right for any of the three predictions. zeta = 1 skips the other rows; ``channels``
and ``interval`` restrict guidance to channels 0..k-1 and to paper times t_lo <= t <= t_hi.

Math core: imports torch and `sit.guidance` only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from sit.guidance import GuidanceConfig, check_channels, check_interval, check_scale


class GuidedModel:
    """``GuidedModel(model_fn, guidance, null_class)(x, t, y)`` -> guided prediction.

    model_fn(x, t, y) is a prediction function in paper time (x (B, C, ...), t (B,), y (B,) int).
    Conditional and unconditional rows go through ONE batched call (x and t concatenated, y with
    the null label), so each call of the wrapper is one network evaluation: ``nfe`` counts them
    (``rows`` counts the rows sent to the network).

    ``guidance``: a `GuidanceConfig` (its scale, ``channels`` and ``interval``; its strategy's
    ``wrap`` makes the wrapper), or its scale zeta alone as a number (then ``channels`` /
    ``interval`` are given beside it); the scale is kept as ``scale``.
    With ``guide_fn`` (autoguidance) the second output is ``guide_fn(x, t, y)`` with the same
    labels, in a separate call counted in ``guide_nfe``; ``null_class`` is then unused (None)."""

    def __init__(
        self,
        model_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
        guidance: "float | GuidanceConfig",
        null_class: int | None = None,
        channels: int | None = None,
        interval: tuple[float, float] | None = None,
        guide_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    ):
        if isinstance(guidance, GuidanceConfig):
            if channels is not None or interval is not None:
                raise ValueError("GuidedModel: give channels / interval in the GuidanceConfig, not beside it")
            guidance, channels, interval = guidance.scale, guidance.channels, guidance.interval
        scale = check_scale(guidance, "GuidedModel")
        channels = check_channels(channels)
        interval = check_interval(interval)
        if guide_fn is None and null_class is None:
            raise ValueError("GuidedModel needs null_class (CFG) or guide_fn (autoguidance)")
        self.model_fn = model_fn
        self.guide_fn = guide_fn
        self.scale = scale
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
        if self.scale == 1.0 or not bool(active.any()):
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
        guided[:, :k] = self.scale * c[:, :k] + (1 - self.scale) * uncond[:, :k]
        if all_active:
            return guided
        res = cond.clone()
        res[idx] = guided
        return res

    def __repr__(self):
        return (
            f"GuidedModel(scale={self.scale}, null_class={self.null_class}, channels={self.channels}, "
            f"interval={self.interval}, guide={'yes' if self.guide_fn is not None else 'no'})"
        )
