"""The time convention of sit, stated once.

Paper convention (SiT eq. 1): t in [0, 1], **t = 0 is data x*, t = 1 is noise eps**,
x_t = alpha_t x* + sigma_t eps. Samplers integrate from t = 1 (noise) down to t_end ~ 0 (data),
so every sampling grid here is *decreasing*. Training times are drawn in [t_min, t_max].

The official SiT code runs time the other way (tau = 1 - t); only `sit/models/field.py`
knows about that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sit.config import TimeDist, check_steps
from sit.sampler_kinds import GRIDS, GridKind  # noqa: F401


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
    log_snr=None,
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
      - ``logsnr``: equal steps in ell_t = log(alpha_t / sigma_t) (DPM-Solver's grid); needs
        ``log_snr``, a decreasing callable t -> ell_t on float64 tensors (the path's; default
        Linear's log((1 - t) / t)). An endpoint where ell is infinite or more than 1 beyond
        ell(1 - 1e-3) / ell(1e-3) (t = 0; t = 1 with alpha_1 ~ 0) stays in the grid as its own
        point, and the others are equally spaced in ell from ell(1 - 1e-3) / to ell(1e-3).
    """
    check_steps(num_steps, "num_steps")  # before the grid is allocated
    check_t(torch.tensor([t_start, t_end], dtype=torch.float64), "grid endpoints (t_start, t_end)")
    if not t_start > t_end:
        raise ValueError(f"t_start must be greater than t_end (got t_start={t_start}, t_end={t_end})")
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; expected one of {list(GRIDS)}")
    if kind == "logsnr":
        return _logsnr_grid(num_steps, t_start, t_end, log_snr).to(dtype=dtype, device=device)
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


LOGSNR_CLIP = 1e-3  # ell is evaluated no closer than this to t = 0 or t = 1 when an end is infinite


def _logsnr_grid(num_steps: int, t_start: float, t_end: float, log_snr) -> Tensor:
    if log_snr is None:  # Linear's: alpha = 1 - t, sigma = t
        def log_snr(t: Tensor) -> Tensor:
            return torch.log1p(-t) - torch.log(t)

    def ell(t: float) -> float:
        return float(log_snr(torch.tensor([t], dtype=torch.float64))[0])

    # an end is its own point when ell there is infinite or far beyond ell at the clip time
    # (t = 0; t = 1 on Linear; GVP's alpha_1 = cos(pi/2) ~ 6e-17 gives ell ~ -37)
    l_start, l_end = ell(t_start), ell(t_end)
    c_start, c_end = ell(min(t_start, 1 - LOGSNR_CLIP)), ell(max(t_end, LOGSNR_CLIP))
    inf_start = not (math.isfinite(l_start) and l_start > c_start - 1.0)
    inf_end = not (math.isfinite(l_end) and l_end < c_end + 1.0)
    lo = c_start if inf_start else l_start
    hi = c_end if inf_end else l_end
    m = num_steps + 1 - int(inf_start) - int(inf_end)  # points equally spaced in ell
    if m <= 0:
        return torch.tensor([t_start, t_end], dtype=torch.float64)
    ells = torch.linspace(lo, hi, m, dtype=torch.float64) if m > 1 else torch.tensor([(lo + hi) / 2], dtype=torch.float64)
    # invert the decreasing map t -> ell by bisection on [t_end, t_start] (float64, to ~1e-16)
    a = torch.full_like(ells, t_end)
    b = torch.full_like(ells, t_start)
    for _ in range(64):
        mid = (a + b) / 2
        above = log_snr(mid) > ells  # ell(mid) too large: mid is too close to data, move towards noise
        a, b = torch.where(above, mid, a), torch.where(above, b, mid)
    ts = (a + b) / 2
    t = torch.cat([torch.tensor([t_start] * int(inf_start), dtype=torch.float64), ts,
                   torch.tensor([t_end] * int(inf_end), dtype=torch.float64)])
    t[0], t[-1] = t_start, t_end
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"time grid 'logsnr' with {num_steps} steps on [{t_end}, {t_start}] is not strictly decreasing")
    return t


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
