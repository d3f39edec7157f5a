"""A network as a prediction function in paper time: the single adapter between t and tau.

Paper time (``sit/timegrid.py``): t = 0 data, t = 1 noise. Official SiT checkpoints were trained
on tau = 1 - t (tau = 0 noise, tau = 1 data), fed unscaled to the time embedding, and their
velocity output is dx/dtau = -v (for Linear: data - noise). ``ModelField`` maps

    velocity:  v(x, t)      = -net(x, 1 - t, y)[:, :C]
    score:     s(x, t)      =  net(x, 1 - t, y)[:, :C]     (not a time derivative: no sign change)
    noise:     eps_hat(x, t) = net(x, 1 - t, y)[:, :C]

so the math core (objectives, samplers) never sees tau. With ``time_input="discrete"`` (DiT
checkpoints, ``sit.discrete``) the time argument is the integer DDPM step k in {0..999}, passed
unchanged, and the output is the noise prediction; ``raw`` returns all 2C channels (eps and the
variance interpolation v) for the learned-variance sampler.

Precision: ``dtype=torch.bfloat16`` runs the network under autocast on the input's device and
returns float32 (or the input dtype), so sampler coefficients stay in full precision.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from sit.config import PREDICTIONS, TIME_INPUTS, Prediction, TimeInput

__all__ = ["ModelField", "PREDICTIONS", "TIME_INPUTS", "TimeInput"]


class ModelField:
    """Prediction function ``(x, t, y) -> prediction`` in paper time around a SiT-like network.

    net: module with forward(x, t_net, y) -> (B, out_channels, H, W) and attributes
         ``in_channels``, ``out_channels`` (``sit.models.sit.SiT``).
    prediction: what the network predicts ("velocity", "score" or "noise").
    time_input: "continuous" (net gets tau = 1 - t, float) or "discrete" (net gets the integer
        DDPM step, given as t).
    learn_sigma_drop: drop the learned-sigma half of the output (channels C..2C-1) when the net
        has out_channels = 2 * in_channels.
    dtype: None (run in the network's dtype) or e.g. torch.bfloat16 (autocast).
    """

    def __init__(
        self,
        net: nn.Module,
        prediction: Prediction = "velocity",
        time_input: TimeInput = "continuous",
        learn_sigma_drop: bool = True,
        dtype: torch.dtype | None = None,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {list(PREDICTIONS)}")
        if time_input not in TIME_INPUTS:
            raise ValueError(f"unknown time_input {time_input!r}; expected one of {list(TIME_INPUTS)}")
        self.net = net
        self.prediction = prediction
        self.time_input = time_input
        self.learn_sigma_drop = learn_sigma_drop
        self.dtype = dtype
        self.in_channels = int(getattr(net, "in_channels"))
        self.out_channels = int(getattr(net, "out_channels", self.in_channels))

    def _net_time(self, t: Tensor, batch: int) -> Tensor:
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(f"t must have shape ({batch},) or be a scalar (got {tuple(t.shape)})")
        if self.time_input == "discrete":
            return t  # integer DDPM step k, unchanged (original numbering, no rescaling)
        return 1.0 - t  # tau, the official network time

    def _autocast(self, x: Tensor):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.dtype)

    def raw(self, x: Tensor, t: Tensor, y: Tensor | None = None, r: Tensor | None = None) -> Tensor:
        """The network's full output (B, out_channels, H, W) for time ``t`` (paper time t, or
        the integer step when time_input="discrete"), in x's dtype; no sign change, nothing dropped.
        ``r`` (B,): an average-velocity (MeanFlow) network's start time; it gets t - r as its second
        time (`sit.models.sit.SiT` with ModelConfig.second_time)."""
        with self._autocast(x):
            if r is None:
                out = self.net(x, self._net_time(t, x.shape[0]), y)
            else:
                t2 = torch.as_tensor(t, device=x.device) - torch.as_tensor(r, device=x.device)
                out = self.net(x, self._net_time(t, x.shape[0]), y, t2=t2.expand(x.shape[0]) if t2.ndim == 0 else t2)
        return out.to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None, r: Tensor | None = None) -> Tensor:
        """Prediction in paper convention, same shape as x: (B, C, H, W) from x (B, C, H, W), t (B,).
        With ``r`` (a MeanFlow network): the average velocity u(x, r, t) over [r, t]."""
        out = self.raw(x, t, y, r)
        if self.learn_sigma_drop and out.shape[1] != self.in_channels:
            out = out[:, : self.in_channels]
        if self.prediction == "velocity" and self.time_input == "continuous":
            out = -out  # dx/dtau = -dx/dt
        return out

    def __repr__(self) -> str:
        return (
            f"ModelField({type(self.net).__name__}, prediction={self.prediction!r}, "
            f"time_input={self.time_input!r}, dtype={self.dtype})"
        )
