"""Reverse-time SDE samplers, eq. (4): dX = [v(X, t) - (1/2) w_t s(X, t)] dt + sqrt(w_t) dW,
run backwards from t = 1 (X ~ N(0, I)) towards t = 0 (data), in paper time (`sit.timegrid`).

The score comes from the velocity by eq. (9) (`sit.objectives.score_from_velocity`), so one
network evaluation gives both: Euler-Maruyama costs ONE evaluation per step. ``w`` is any
callable t -> w_t (`sit.diffusion_coef.get_w`), chosen at sampling time.

The grid t_0 > ... > t_N is explicit. The first N - 1 intervals are stochastic steps; the final
interval [t_{N-1}, t_N] is the *last step* (official SiT options, math.md section 6):
  "mean"     X <- X - h (v - (1/2) w s)      (the EM mean, no noise)
  "tweedie"  X <- (X + sigma^2 s) / alpha = x_hat*   (needs t_N = 0; computed as x_hat* from v,
             which is the same number and finite everywhere)
  "euler"    X <- X - h v                    (probability-flow Euler step)
  None       an ordinary stochastic step like the others.
So NFE = N for Euler-Maruyama. The official default runs EM to t = 0.04 (``last_step_size``)
and then one "mean" step to 0; `sit.samplers.sample` builds that grid.

w_t must be finite and >= 0 where it is evaluated (t_0 ... t_{N-1}): w_KL is infinite at t = 1
for Linear and GVP, so such a grid must start at 1 - eps; this is checked before the first
network call and reported as a ValueError (never NaN samples).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sit.objectives import score_from_velocity, x_star_from_velocity
from sit.paths import Path, expand_like
from sit.sampler_kinds import LAST_STEPS, W_MAX, LastStep  # noqa: F401
from sit.samplers._common import check_grid, randn_like, run_steps, t_vec

Field = Callable[[Tensor, Tensor], Tensor]


def _check_last_step(last_step, g: Tensor) -> None:
    if last_step not in LAST_STEPS:
        raise ValueError(f"unknown last_step {last_step!r}; expected one of {list(LAST_STEPS)}")
    if last_step == "tweedie" and float(g[-1]) != 0.0:
        raise ValueError(f"last_step 'tweedie' jumps to t = 0 (x_hat*), so the grid must end at 0 (got {float(g[-1])})")


def _check_w(w: Callable[[Tensor], Tensor], times: Tensor, path: Path) -> None:
    if times.numel() == 0:
        return
    vals = torch.as_tensor(w(times.to(torch.float64)), dtype=torch.float64)
    bad = ~torch.isfinite(vals) | (vals < 0) | (vals > W_MAX)
    if bool(bad.any()):
        tb = float(times[bad.nonzero()[0, 0]])
        name = getattr(w, "name", "w")
        raise ValueError(
            f"diffusion coefficient w={name!r} is {float(vals[bad][0])} at t = {tb:g} on path {path!r}; "
            f"w must be finite (<= {W_MAX:g}) and >= 0 wherever it is used. w_KL is infinite at t = 1 for Linear/GVP "
            "(alpha_1 = 0): start the grid at t_start = 1 - eps (e.g. SampleConfig(t_start=1 - 1e-3)) "
            "or use w='kl_eta' with eta > 0"
        )


def _xi(x: Tensor, generator, noise_fn) -> Tensor:
    """Step noise xi ~ N(0, I) shaped like x: from ``noise_fn(x)`` when given (e.g. per-sample
    seeded streams, so a sample does not depend on its batch), else from ``generator``."""
    if noise_fn is not None:
        return noise_fn(x).to(device=x.device, dtype=x.dtype)
    return randn_like(x, generator)


def _drift(path: Path, w: Callable, v: Tensor, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(v - (1/2) w_t s, w_t) with s from v by eq. (9); coefficient math in float32 or wider."""
    s = score_from_velocity(path, v, x, t)
    wt = expand_like(torch.as_tensor(w(t), device=x.device), x)
    drift = v.to(wt.dtype) - 0.5 * wt * s.to(wt.dtype)
    return drift, wt


def _last_step(kind: str, path: Path, w, v: Tensor, x: Tensor, tv: Tensor, h: float) -> Tensor:
    if kind == "euler":
        return x - h * v
    if kind == "tweedie":
        return x_star_from_velocity(path, v, x, tv).to(x.dtype)
    drift, _ = _drift(path, w, v, x, tv)  # "mean"
    return (x - h * drift).to(x.dtype)


def _sde_step(field: Field, path: Path, w, last_step: str | None, n: int, move):
    """The step of `run_steps` for the SDE samplers: v = field(X, t), then the ``last_step`` on the
    final of the n intervals, else ``move(x, v, t_vec, t_next, h)`` (h = t - t_next > 0)."""

    def step(i: int, t: float, tn: float, x: Tensor) -> tuple[Tensor, Tensor]:
        h = t - tn
        tv = t_vec(t, x)
        v = field(x, tv).to(x.dtype)
        if i == n - 1 and last_step is not None:
            return _last_step(last_step, path, w, v, x, tv, h), v
        return move(x, v, tv, tn, h), v

    return step


def sample_euler_maruyama(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    path: Path,
    w: Callable[[Tensor], Tensor],
    last_step: str | None = "mean",
    generator: torch.Generator | None = None,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """Euler-Maruyama for eq. (4): from t to t - h (h > 0),
        X <- X - h (v - (1/2) w_t s) + sqrt(w_t h) xi,   xi ~ N(0, I) from ``generator``,
    with v = field(X, t) and s from v by eq. (9) (one network call per step; xi from ``noise_fn(x)``
    instead when given, e.g. per-sample seeded streams); the final grid
    interval is the ``last_step`` (see the module docstring). x (B, ...) is the state at grid[0].
    Returns the state at grid[-1], or the trajectory (N + 1, B, ...). Weak order 1."""
    g = check_grid(grid)
    _check_last_step(last_step, g)
    n = len(g) - 1
    _check_w(w, g[:-1] if last_step in (None, "mean") else g[:-2], path)

    def move(x: Tensor, v: Tensor, tv: Tensor, tn: float, h: float) -> Tensor:
        drift, wt = _drift(path, w, v, x, tv)
        return (x - h * drift + torch.sqrt(wt * h) * _xi(x, generator, noise_fn)).to(x.dtype)

    step = _sde_step(field, path, w, last_step, n, move)
    return run_steps(g, x, step, progress=progress, desc="euler-maruyama", callback=callback,
                     return_trajectory=return_trajectory)


def sample_sde_heun(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    path: Path,
    w: Callable[[Tensor], Tensor],
    last_step: str | None = "mean",
    generator: torch.Generator | None = None,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """Stochastic Heun (predictor-corrector for additive noise) for eq. (4): with f = v - w s / 2,
    h = t_i - t_{i+1} > 0 and one xi ~ N(0, I) per step,
        X~      = X - h f(X, t_i) + sqrt(w_{t_i} h) xi
        X_{i+1} = X - (h/2) (f(X, t_i) + f(X~, t_{i+1})) + (sqrt(w_{t_i}) + sqrt(w_{t_{i+1}}))/2 sqrt(h) xi.
    2 NFE per step. The final interval is the ``last_step`` (1 NFE); with last_step=None it is a
    Heun step too, except that a step ending at t = 0 is an Euler-Maruyama step (the score is
    singular at t = 0, sigma_0 = 0). Returns the state at grid[-1] or the trajectory."""
    g = check_grid(grid)
    _check_last_step(last_step, g)
    n = len(g) - 1
    final_is_heun = last_step is None and float(g[-1]) > 0.0
    _check_w(w, g if final_is_heun else g[:-1], path)

    def move(x: Tensor, v: Tensor, tv: Tensor, tn: float, h: float) -> Tensor:
        d1, w1 = _drift(path, w, v, x, tv)
        xi = _xi(x, generator, noise_fn)
        x_p = (x - h * d1 + torch.sqrt(w1 * h) * xi).to(x.dtype)
        if tn == 0.0:
            return x_p
        tnv = t_vec(tn, x)
        d2, w2 = _drift(path, w, field(x_p, tnv).to(x.dtype), x_p, tnv)
        noise = 0.5 * (torch.sqrt(w1) + torch.sqrt(w2)) * math.sqrt(h) * xi
        return (x - (0.5 * h) * (d1 + d2) + noise).to(x.dtype)

    step = _sde_step(field, path, w, last_step, n, move)
    return run_steps(g, x, step, progress=progress, desc="sde-heun", callback=callback,
                     return_trajectory=return_trajectory)
