"""The time convention of sit, stated once.

Paper convention (SiT eq. 1): t in [0, 1], **t = 0 is data x*, t = 1 is noise eps**,
x_t = alpha_t x* + sigma_t eps. Samplers integrate from t = 1 (noise) down to t_end ~ 0 (data),
so every sampling grid here is *decreasing*. Training times are drawn in [t_min, t_max].

The official SiT code runs time the other way (tau = 1 - t); only `sit/models/field.py`
knows about that.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from sit.config import TimeDist, check_steps

GridKind = Literal["uniform", "shifted", "edm", "cosine"]
GRIDS: tuple[str, ...] = get_args(GridKind)


def check_t(t: Tensor | float, name: str = "t") -> None:
    """Raise ValueError when any time lies outside [0, 1] or is not finite."""
    tt = torch.as_tensor(t)
    if not torch.isfinite(tt).all():
        raise ValueError(f"{name} must be finite; got {tt.flatten()[:4].tolist()}")
    if (tt < 0).any() or (tt > 1).any():
        raise ValueError(
            f"{name} must lie in [0, 1] (t = 0 data, t = 1 noise); got min {float(tt.min()):.6g}, "
            f"max {float(tt.max()):.6g}"
        )


def sampling_grid(
    num_steps: int,
    t_start: float = 1.0,
    t_end: float = 0.0,
    kind: GridKind = "uniform",
    shift: float = 1.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Decreasing grid t_start = t_0 > t_1 > ... > t_N = t_end with N = ``num_steps`` steps
    (N + 1 points; t = 1 noise, t = 0 data).

    kinds:
      - ``uniform``: equal steps.
      - ``shifted``: u uniform, t = shift*u / (1 + (shift - 1) u) (shift > 1 spends more steps
        near noise, as in SD3 / rectified-flow time shifting; shift = 1 is uniform).
      - ``edm``: steps spaced as Karras et al. (2022) eq. 5 in t with exponent ``rho``
        (more steps near data).
      - ``cosine``: t = t_end + (t_start - t_end) * (1 - cos(pi u / 2)) ... concentrated near data.
    """
    check_steps(num_steps, "num_steps")  # before the grid is allocated
    check_t(torch.tensor([t_start, t_end], dtype=torch.float64), "grid endpoints (t_start, t_end)")
    if not t_start > t_end:
        raise ValueError(f"t_start must be greater than t_end (got t_start={t_start}, t_end={t_end})")
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; expected one of {list(GRIDS)}")
    u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)  # 1 -> 0
    if kind == "uniform":
        s = u
    elif kind == "shifted":
        if not (shift > 0 and math.isfinite(shift)):
            raise ValueError(f"shift must be a finite number > 0 (got {shift})")
        s = shift * u / (1 + (shift - 1) * u)
    elif kind == "edm":
        if not rho > 0:
            raise ValueError(f"rho must be > 0 (got {rho})")
        # interpolate t^(1/rho) linearly between the endpoints, then raise to rho
        a, b = t_start ** (1 / rho), t_end ** (1 / rho)
        t = (b + u * (a - b)) ** rho
        t[0], t[-1] = t_start, t_end
        return t.to(dtype=dtype, device=device)
    else:  # cosine
        s = 1 - torch.cos(u * math.pi / 2)
    t = t_end + s * (t_start - t_end)
    t[0], t[-1] = t_start, t_end
    return t.to(dtype=dtype, device=device)


def sample_training_t(
    batch_size: int,
    t_min: float = 0.0,
    t_max: float = 1.0,
    dist: TimeDist = "uniform",
    loc: float = 0.0,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Training times t ~ U[t_min, t_max] (paper), or a logit-normal (Esser et al. 2024)
    mapped into [t_min, t_max]. Shape (batch_size,)."""
    check_t(torch.tensor([t_min, t_max], dtype=torch.float64), "training time range (t_min, t_max)")
    if not t_min < t_max:
        raise ValueError(f"t_min must be < t_max (got {t_min}, {t_max})")
    if dist == "uniform":
        u = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float32)
    elif dist == "logit_normal":
        if not scale > 0:
            raise ValueError(f"logit-normal scale must be > 0 (got {scale})")
        n = torch.randn(batch_size, generator=generator, device=device, dtype=torch.float32)
        u = torch.sigmoid(loc + scale * n)
    else:
        raise ValueError(f"unknown time distribution {dist!r}; expected 'uniform' or 'logit_normal'")
    return (t_min + (t_max - t_min) * u).to(dtype)
