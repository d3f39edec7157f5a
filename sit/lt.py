"""Monte-Carlo estimate of a trained model's per-time velocity loss L_t, for w_KL,eta (eq. 14).

Paper time (see `sit.timegrid`): t = 0 data, t = 1 noise. At each t of a grid,

    L_t = E || v_theta(x_t, t) - alpha_dot_t x* - sigma_dot_t eps ||^2,   x_t = alpha_t x* + sigma_t eps (1),

over held-out x* and eps ~ N(0, I) (math.md section 6). Score and noise models are converted
to velocity by eq. (9) first (``sit.objectives.to_velocity``), so L_t is always in velocity
units. The norm is reduced per sample by the **mean over the D dimensions** by default (the
official ``mean_flat``, the scale of the training loss) or by their sum; the reduction and D are
stored in the ``LossTable`` so that eta keeps its meaning (``LossTable.with_reduction``).
The standard error at each t is the sample standard deviation over the ``samples_per_t``
per-sample losses divided by sqrt(samples_per_t).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sit.diffusion_coef import LossTable
from sit.likelihood import iterate_batches
from sit.objectives import check_prediction, to_velocity
from sit.paths import Path, coef_dtype
from sit.sampler_kinds import REDUCTIONS


def estimate_loss_table(
    model_fn: Callable[..., Tensor],
    path: Path,
    prediction: str,
    batches: Tensor | Iterable,
    t_grid: Sequence[float] | Tensor,
    *,
    samples_per_t: int = 1024,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    batch_size: int = 256,
    progress: bool = False,
) -> LossTable:
    """L_t on ``t_grid`` with standard errors, as a ``LossTable`` (sit.diffusion_coef).

    model_fn: prediction function in paper time, ``model_fn(x_t, t)`` with x_t (B, ...) and t (B,),
        called as ``model_fn(x_t, t, y)`` when the batches are (x*, y) pairs; returns the
        ``prediction`` ("velocity", "score" or "noise"), same shape as x_t.
    batches: held-out x*: a tensor (split into ``batch_size`` rows, cycled) or a re-iterable of
        tensors or (x*, y) pairs (a DataLoader); restarted when exhausted.
    t_grid: increasing times in [0, 1]. Score/noise models are singular where eq. (9) is (t = 0,
        and t = 1 for Linear/GVP): a non-finite loss there raises ValueError naming t.
    samples_per_t: Monte-Carlo samples (x*, eps) per grid point.
    reduction: "mean" (per-dimension mean, official mean_flat; default) or "sum" over dims.
    progress: a tqdm bar over the grid points. Runs without gradients."""
    grid = _checked_grid(prediction, reduction, samples_per_t, t_grid)
    stream = iterate_batches(batches, batch_size)
    losses, stderrs, dim = [], [], None
    with torch.no_grad():
        for t_value in tqdm(grid, desc="L_t", unit="t", disable=not progress):
            per_sample, dim = _losses_at(model_fn, path, prediction, stream, t_value, samples_per_t, generator, reduction)
            if not torch.isfinite(per_sample).all():
                raise ValueError(
                    f"non-finite loss at t = {t_value} for a {prediction!r} model on {path!r} "
                    "(eq. 9 is singular there); choose a t_grid inside the open interval"
                )
            losses.append(float(per_sample.mean()))
            stderrs.append(float(per_sample.std() / math.sqrt(per_sample.numel())))
    return LossTable(
        t=tuple(grid),
        loss=tuple(losses),
        stderr=tuple(stderrs),
        reduction=reduction,
        dim=int(dim),
        num_samples=samples_per_t,
        path=getattr(path, "name", type(path).__name__),
        prediction=prediction,
    )


def _checked_grid(prediction: str, reduction: str, samples_per_t: int, t_grid) -> list[float]:
    """The arguments of `estimate_loss_table` checked (ValueError naming the bad one); the grid as floats."""
    check_prediction(prediction)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(REDUCTIONS)}")
    if not isinstance(samples_per_t, int) or isinstance(samples_per_t, bool) or samples_per_t < 2:
        raise ValueError(f"samples_per_t must be an integer >= 2 (got {samples_per_t!r})")
    grid = [float(v) for v in torch.as_tensor(t_grid, dtype=torch.float64).flatten().tolist()]
    if not grid:
        raise ValueError("t_grid must hold at least one time")
    if any(not (0.0 <= v <= 1.0) for v in grid):
        raise ValueError(f"t_grid must lie in [0, 1] (t = 0 data, t = 1 noise); got {grid[:4]}...")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError("t_grid must be strictly increasing")
    return grid


def _losses_at(model_fn, path: Path, prediction: str, stream, t_value: float, samples_per_t: int,
               generator, reduction: str) -> tuple[Tensor, int]:
    """The ``samples_per_t`` per-sample squared velocity errors at ``t_value`` (float64), drawing
    x* from ``stream`` and eps from ``generator``; and D, the dimensions per sample."""
    vals, n, dim = [], 0, None
    while n < samples_per_t:
        x_star, y = next(stream)
        x_star = x_star[: samples_per_t - n]
        B = x_star.shape[0]
        if y is not None:
            y = y[:B]
        dim = x_star[0].numel()
        tdt = coef_dtype(x_star)
        t = torch.full((B,), t_value, dtype=tdt, device=x_star.device)
        eps = torch.randn(x_star.shape, generator=generator, device=x_star.device, dtype=x_star.dtype)
        x_t = path.x_t(x_star, eps, t)
        out = model_fn(x_t, t) if y is None else model_fn(x_t, t, y)
        v = to_velocity(path, prediction, out, x_t, t)
        target = path.velocity_target(x_star, eps, t)
        sq = (v.double() - target.double()).reshape(B, -1).pow(2)
        vals.append(sq.mean(1) if reduction == "mean" else sq.sum(1))
        n += B
    return torch.cat(vals), dim
