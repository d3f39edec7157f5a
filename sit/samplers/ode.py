"""Probability-flow ODE samplers, eq. (2): dX/dt = v(X, t), integrated from t = 1 (X ~ N(0, I))
down to t_end ~ 0 in paper time (t = 0 data; see `sit.timegrid`).

Every sampler is ``sample_<method>(field, x, grid, *, ...) -> Tensor`` with ``field(x, t) -> v``
(t a (B,) tensor) and an explicit decreasing ``grid`` t_0 > ... > t_N (N steps, N + 1 points;
build it with `sit.timegrid.sampling_grid`). ``x`` is the initial state (the noise) at t_0.
Network evaluations (NFE): Euler N, Heun 2N (2N - 1 with ``final_euler`` and t_N = 0),
torchdiffeq as the solver decides (wrap the field in `NFECounter` or pass ``stats``).

dtypes: the state keeps x's dtype (fp32/bf16/fp16/fp64); times passed to the field are float32
(float64 for a float64 state), step sizes are Python floats. The torchdiffeq path integrates a
half-precision state in float32 and returns it in x's dtype.
"""

from __future__ import annotations

from typing import Callable, get_args

import torch
from torch import Tensor

from sit.sampler_kinds import (  # the names are torch-free (sit.config reads them)
    ADAPTIVE_METHODS,
    TORCHDIFFEQ_METHODS,
    AdaptiveMethod,
    FixedTorchdiffeqMethod,
    TorchdiffeqMethod,
)
from sit.samplers._common import check_grid, run_steps, t_vec

Field = Callable[[Tensor, Tensor], Tensor]

FIXED_TORCHDIFFEQ_METHODS: tuple[str, ...] = get_args(FixedTorchdiffeqMethod)
__all__ = ["ADAPTIVE_METHODS", "TORCHDIFFEQ_METHODS", "FIXED_TORCHDIFFEQ_METHODS", "AdaptiveMethod",
           "TorchdiffeqMethod", "sample_euler", "sample_heun", "sample_torchdiffeq"]


def sample_euler(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """Explicit Euler on eq. (2): x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i). First order; N NFE.
    Returns x at t_N (B, ...), or the trajectory (N + 1, B, ...). ``generator`` is unused (the ODE
    is deterministic) and accepted for a uniform signature."""
    def step(i: int, t: float, tn: float, x: Tensor) -> tuple[Tensor, Tensor]:
        v = field(x, t_vec(t, x)).to(x.dtype)
        return x + (tn - t) * v, v

    return run_steps(check_grid(grid), x, step, progress=progress, desc="euler", callback=callback,
                     return_trajectory=return_trajectory)


def sample_heun(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    final_euler: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """Heun (explicit trapezoid) on eq. (2), the paper's ODE sampler: with h = t_{i+1} - t_i,
    d = v(x_i, t_i), x~ = x_i + h d, x_{i+1} = x_i + h (d + v(x~, t_{i+1})) / 2. Second order;
    2 NFE per step. With ``final_euler=True`` a last step that ends exactly at t = 0 is an Euler
    step (as in EDM; useful when the field is not finite at t = 0, e.g. VP or a score model), so
    NFE = 2N - 1. Returns x at t_N (B, ...) or the trajectory (N + 1, B, ...)."""
    g = check_grid(grid)
    n = len(g) - 1

    def step(i: int, t: float, tn: float, x: Tensor) -> tuple[Tensor, Tensor]:
        h = tn - t
        d = field(x, t_vec(t, x)).to(x.dtype)
        x_e = x + h * d
        if final_euler and i == n - 1 and tn == 0.0:
            return x_e, d
        d2 = field(x_e, t_vec(tn, x)).to(x.dtype)
        return x + (0.5 * h) * (d + d2), d

    return run_steps(g, x, step, progress=progress, desc="heun", callback=callback,
                     return_trajectory=return_trajectory)


def sample_torchdiffeq(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    method: str = "dopri5",
    atol: float = 1e-6,
    rtol: float = 1e-3,
    options: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    stats: dict | None = None,
) -> Tensor:
    """Eq. (2) with torchdiffeq's ``odeint`` (the official sampler: dopri5, atol 1e-6, rtol 1e-3).
    Adaptive methods (``ADAPTIVE_METHODS``) integrate from grid[0] to grid[-1] with their own
    steps (the last one clipped to land on grid[-1], so the field is never evaluated outside the
    grid's range), so only the grid endpoints matter (all grid points are output times when
    ``return_trajectory``); fixed-step methods (rk4, midpoint, ...) step on the grid. ``stats``, if
    given, receives ``nfe``. Returns x at t_N, or the trajectory at the grid points."""
    try:
        from torchdiffeq import odeint
    except ImportError as e:  # pragma: no cover - torchdiffeq is a dependency
        raise ImportError("sample_torchdiffeq needs torchdiffeq: pip install torchdiffeq") from e
    if method not in TORCHDIFFEQ_METHODS:
        raise ValueError(f"unknown torchdiffeq method {method!r}; expected one of {list(TORCHDIFFEQ_METHODS)}")
    g = check_grid(grid)
    adaptive = method in ADAPTIVE_METHODS
    ts = g if (return_trajectory or not adaptive) else g[[0, -1]]
    work_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    nfe = [0]

    def f(t: Tensor, y: Tensor) -> Tensor:
        nfe[0] += 1
        v = field(y.to(x.dtype), t_vec(float(t), y)).to(work_dtype)
        if callback is not None:
            callback({"i": nfe[0] - 1, "t": float(t), "x": y, "velocity": v})
        return v

    kw = {} if not adaptive else {"atol": atol, "rtol": rtol}
    if adaptive:
        # land the last step exactly on t_end: otherwise the solver steps past it and interpolates
        # back, evaluating the field outside [t_end, t_start] (t < 0 is NaN on VP)
        options = dict(options or {})
        options.setdefault("step_t", g[-1:].to(device=x.device, dtype=work_dtype))
    out = odeint(f, x.to(work_dtype), ts.to(device=x.device, dtype=work_dtype), method=method, options=options, **kw)
    if stats is not None:
        stats["nfe"] = nfe[0]
    out = out.to(x.dtype)
    return out if return_trajectory else out[-1]
