"""Average-velocity samplers (MeanFlow, Geng et al. 2025) in paper time (t = 1 noise -> 0 data).

A MeanFlow network predicts the average velocity over [r, t] of the probability-flow ODE,
u(x_t, r, t) = (1 / (t - r)) int_r^t v(x_s, s) ds, so one evaluation jumps exactly from t to r:

    x_r = x_t - (t - r) u(x_t, r, t)

`sample_meanflow` walks a grid t_0 > t_1 > ... > t_N with one such jump per interval: N steps,
N network evaluations (``--num-steps 1``: the 1-NFE sampler, x_0 = x_1 - u(x_1, 0, 1)). The
field is called as ``field(x, t, r=r)`` (`sit.objectives.velocity_field` of a network with
ModelConfig.second_time).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from sit.samplers._common import check_grid, run_steps, t_vec


def sample_meanflow(
    field: Callable[..., Tensor],
    x: Tensor,
    grid: Tensor,
    *,
    generator=None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> Tensor:
    """x at grid[-1] from x at grid[0] by average-velocity jumps (module docstring); the callback's
    "velocity" is the average velocity of the step."""
    grid = check_grid(grid)

    def step(i: int, t: float, tn: float, x: Tensor) -> tuple[Tensor, Tensor]:
        u = field(x, t_vec(t, x), r=t_vec(tn, x))
        return x - (t - tn) * u, u

    return run_steps(grid, x, step, progress=progress, desc="meanflow", callback=callback,
                     return_trajectory=return_trajectory)
