"""Helpers shared by the ODE and SDE samplers (grid checks, time vectors, progress, NFE)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from sit.timegrid import check_t


def check_grid(grid: Tensor | list, min_points: int = 2) -> Tensor:
    """A 1-D strictly decreasing float64 time grid in [0, 1] with at least ``min_points`` points."""
    g = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    if g.ndim != 1 or g.numel() < min_points:
        raise ValueError(f"grid must be a 1-D tensor of at least {min_points} times (got shape {tuple(g.shape)})")
    check_t(g, "grid")
    if not bool((g[1:] < g[:-1]).all()):
        raise ValueError("grid must be strictly decreasing (t = 1 noise -> t = 0 data)")
    return g


def time_dtype(x: Tensor) -> torch.dtype:
    """Times and coefficients are float32, or float64 when the state is float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def t_vec(t: float, x: Tensor) -> Tensor:
    """The time t as a (B,) tensor for the field, on x's device."""
    return torch.full((x.shape[0],), float(t), dtype=time_dtype(x), device=x.device)


def steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import trange

    return trange(n, desc=desc, leave=False)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class NFECounter:
    """Wrap a field (or any callable) and count its calls in ``nfe``."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn = fn
        self.nfe = 0

    def __call__(self, *args, **kwargs) -> Tensor:
        self.nfe += 1
        return self.fn(*args, **kwargs)

    def __getattr__(self, name):  # forward attributes such as .path of a velocity_field
        if name == "fn":
            raise AttributeError(name)
        return getattr(self.fn, name)
