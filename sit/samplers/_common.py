"""Helpers shared by the ODE and SDE samplers (grid checks, time vectors, progress, NFE)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from sit.paths import coef_dtype
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


def t_vec(t: float, x: Tensor) -> Tensor:
    """The time t as a (B,) tensor for the field, on x's device, in `sit.paths.coef_dtype` of x."""
    return torch.full((x.shape[0],), float(t), dtype=coef_dtype(x), device=x.device)


def steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import trange

    return trange(n, desc=desc, leave=False)


def run_steps(
    grid: Tensor,
    x: Tensor,
    step: Callable[[int, float, float, Tensor], tuple[Tensor, Tensor]],
    *,
    progress: bool,
    desc: str,
    callback: Callable[[dict], None] | None,
    return_trajectory: bool,
) -> Tensor:
    """The step loop of the grid samplers: for i = 0 .. N-1, ``x, v = step(i, t_i, t_{i+1}, x)``
    (times as Python floats; v the velocity reported to ``callback``), then the trajectory and
    ``callback({"i", "t", "t_next", "x", "velocity"})``. Returns x at grid[-1], or the trajectory
    (N + 1, B, ...) starting with the input."""
    traj = [x] if return_trajectory else None
    for i in steps(len(grid) - 1, progress, desc):
        t, tn = float(grid[i]), float(grid[i + 1])
        x, v = step(i, t, tn, x)
        if traj is not None:
            traj.append(x)
        if callback is not None:
            callback({"i": i, "t": t, "t_next": tn, "x": x, "velocity": v})
    return torch.stack(traj) if traj is not None else x


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class NFECounter:
    """Wrap a field or prediction function (any callable whose first argument is the batch x)
    and count its calls in ``nfe`` (network evaluations per sample: a guided call that sends the
    conditional and unconditional rows in one batch is one evaluation) and the rows it was sent
    in ``rows``. ``reset()`` zeroes both; ``calls`` is another name for ``nfe``. The one call
    counter of sit: sampling and guidance wrap their functions in it."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn = fn
        self.nfe = 0
        self.rows = 0

    def __call__(self, *args, **kwargs) -> Tensor:
        self.nfe += 1
        if args and isinstance(args[0], Tensor) and args[0].ndim > 0:
            self.rows += int(args[0].shape[0])
        return self.fn(*args, **kwargs)

    def reset(self) -> None:
        self.nfe = 0
        self.rows = 0

    @property
    def calls(self) -> int:
        return self.nfe

    @calls.setter
    def calls(self, value: int) -> None:
        self.nfe = int(value)

    def __getattr__(self, name):  # forward attributes such as .path of a velocity_field
        if name == "fn":
            raise AttributeError(name)
        return getattr(self.fn, name)
