"""Few-step multistep solver for the probability-flow ODE (2): DPM-Solver++(2M) in data-prediction
form (Lu et al. 2022, "DPM-Solver++", Algorithm 2), derived for any path x_t = alpha_t x* + sigma_t eps
(Linear, GVP, VP) from its alpha_t, sigma_t; the derivation is in docs/sampling.md.

With the half log-SNR ell_t = log(alpha_t / sigma_t) (increasing as t goes 1 -> 0) and
x_hat*(x, t) = E[x* | x_t = x] (from the velocity by eqs. 1, 3), the ODE (2) is solved exactly by
    x_t = (sigma_t / sigma_s) x_s + sigma_t * integral_{ell_s}^{ell_t} e^ell x_hat*(ell) d ell,
so the linear part is exact and only x_hat* is approximated: constant on the step (first order,
= DDIM), or linear in ell through the previous step's x_hat* (2M, second order):
    h = ell_t - ell_s, r = h_prev / h, D = (1 + 1/(2r)) x_hat*_s - 1/(2r) x_hat*_prev,
    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D.
One network evaluation per step. The first step is first order (no history); a step that starts
at alpha_s = 0 (t = 1 on Linear/GVP, ell = -inf) or ends at sigma_t = 0 (t = 0, ell = +inf) is
first order too: the second-order correction has no meaning over an infinite ell-interval, and
the first-order step is then exact in the limit (x_t = sigma_t x_s + alpha_t x_hat*_s from pure
noise; x_0 = x_hat*_s at the data end). (alpha_t (1 - e^-h) is computed as
alpha_t - sigma_t alpha_s / sigma_s, finite at both ends.)

Exact whenever x_hat* is constant along the path, e.g. data concentrated on one point, for any
grid; second order in the step size otherwise (tests/test_multistep.py). Pair it with the
``logsnr`` or ``shifted`` time grid (`sit.timegrid.sampling_grid`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sit.objectives import x_star_from_velocity
from sit.paths import Path
from sit.samplers._common import check_grid, run_steps, t_vec

Field = Callable[[Tensor, Tensor], Tensor]


def _coef(path: Path, t: float) -> tuple[float, float]:
    tt = torch.tensor([t], dtype=torch.float64)
    return float(path.alpha(tt)[0]), float(path.sigma(tt)[0])


def log_snr(alpha: float, sigma: float) -> float:
    """ell = log(alpha / sigma): -inf where alpha = 0, +inf where sigma = 0."""
    if alpha <= 0.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log(alpha) - math.log(sigma)


def sample_dpmpp_2m(
    field: Field,
    x: Tensor,
    grid: Tensor,
    *,
    path: Path,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) on eq. (2) for ``path`` (module docstring): N steps, N NFE (the field is
    evaluated at t_0 ... t_{N-1}, never at t_N). ``field(x, t) -> v`` in paper time; x (B, ...)
    at t_0. Coefficients in float64 Python floats; the state keeps x's dtype. Returns x at t_N or
    the trajectory (N + 1, B, ...). ``generator`` is unused (deterministic)."""
    g = check_grid(grid)
    coefs = [_coef(path, float(t)) for t in g]
    ells = [log_snr(a, s) for a, s in coefs]
    prev: dict = {}

    def step(i: int, t: float, tn: float, x: Tensor) -> tuple[Tensor, Tensor]:
        (a_s, s_s), (a_t, s_t) = coefs[i], coefs[i + 1]
        tv = t_vec(t, x)
        v = field(x, tv).to(x.dtype)
        x0 = x_star_from_velocity(path, v, x, tv).to(x.dtype)
        h = ells[i + 1] - ells[i]
        h_prev = prev.get("h")
        d = x0
        if h_prev is not None and math.isfinite(h) and math.isfinite(h_prev) and h > 0:
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * prev["x0"]
        prev["x0"], prev["h"] = x0, h
        ratio = s_t / s_s  # sigma_s > 0 on every grid point but t = 0, which is never a step's start
        return ratio * x + (a_t - ratio * a_s) * d, v

    return run_steps(g, x, step, progress=progress, desc="dpmpp_2m", callback=callback,
                     return_trajectory=return_trajectory)
