"""Samplers for a velocity field in paper time (t = 1 noise -> t = 0 data; see `sit.timegrid`).

Low level (explicit grid, no hidden state): `sample_euler`, `sample_heun`, `sample_torchdiffeq`
(probability-flow ODE, eq. 2), `sample_dpmpp_2m` (the same ODE, few-step multistep solver) and
`sample_euler_maruyama`, `sample_sde_heun` (reverse SDE, eq. 4) and `sample_meanflow` (average-velocity
jumps of a MeanFlow network, `sit.samplers.average`). They are the rows of the sampler
table `SAMPLERS` (torch-free, `sit.sampler_kinds`: run function, NFE per step, kind; re-exported
here), which validation, `sample`, the NFE counts, the CLI and `sit sweep` read: adding a sampler =
one module + one row. A built-in row names its run function (``"sit.samplers:run_euler"``);
`run_function` imports it when `sample` runs the row.
High level: ``sample(field, x, SampleConfig(...), path) -> (x, info)`` builds the grid from the
config, the path and the prediction type, counts network evaluations and returns them in
``info["nfe"]`` with the grid.

``num_steps`` counts steps (grid intervals), never grid points:
  euler N NFE; dpmpp_2m N; meanflow N (one average-velocity jump per step); heun 2N (2N - 1 with heun_final_euler and t_end = 0); euler_maruyama N (the last
  of them the last step when last_step is set: N - 1 EM steps from t_start to last_step_size,
  then one last step to 0); sde_heun 2(N - 1) + 1 with a last step, 2N without;
  fixed-step torchdiffeq methods: midpoint, heun2 2N, heun3 3N, rk4 4N (explicit/implicit Adams
  vary); adaptive torchdiffeq methods (dopri5, ...) decide their own steps: num_steps only sets
  the output grid, and NFE is whatever the solver used (set by atol/rtol).
`nfe_per_step`, `steps_for_nfe` and `SampleConfig.expected_nfe` give these counts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from sit.diffusion_coef import LossTable
from sit.paths import Path
from sit.sampler_config import (
    ADAPTIVE_FIELDS,
    SDE_FIELDS,
    SampleConfig,
    check_method_fields,
    saves_last,
)
from sit.sampler_kinds import (
    ADAPTIVE_METHODS,
    SAMPLER_KINDS,
    SAMPLERS,
    SamplerKind,
    SamplerRow,
    TorchdiffeqMethod,
    continuous_names,
    methods_help,
    sampler_row,
)
from sit.samplers._common import NFECounter, check_grid
from sit.samplers.average import sample_meanflow
from sit.samplers.multistep import sample_dpmpp_2m
from sit.samplers.ode import sample_euler, sample_heun, sample_torchdiffeq
from sit.samplers.sde import sample_euler_maruyama, sample_sde_heun

__all__ = [
    "SampleConfig",
    "sample",
    "NFECounter",
    "Method",
    "METHODS",
    "nfe_per_step",
    "steps_for_nfe",
    "sample_euler",
    "sample_heun",
    "sample_torchdiffeq",
    "sample_euler_maruyama",
    "sample_sde_heun",
    "sample_dpmpp_2m",
    "sample_meanflow",
    "check_grid",
    "SAMPLERS",
    "SamplerRow",
    "CallContext",
    "continuous_methods",
    "sampler_row",
    "methods_help",
    "check_method_fields",
    "run_function",
    "SDE_FIELDS",
    "ADAPTIVE_FIELDS",
    "ADAPTIVE_METHODS",
    "SAMPLER_KINDS",
    "SamplerKind",
    "TorchdiffeqMethod",
]

# the built-in continuous rows' names, read from the table (rows added later are rows of SAMPLERS too)
METHODS: tuple[str, ...] = continuous_names()
Method = Literal[METHODS]


@dataclass(frozen=True)
class CallContext:
    """What a sampler row's ``run`` receives besides (field, x, grid, cfg, path)."""

    generator: torch.Generator | None = None
    noise_fn: Callable[[Tensor], Tensor] | None = None  # SDE step noise shaped like x
    w: Callable[[Tensor], Tensor] | None = None         # SDE rows: the diffusion coefficient w_t
    progress: bool = False
    callback: Callable[[dict], None] | None = None
    return_trajectory: bool = False

    @property
    def common(self) -> dict:
        return dict(generator=self.generator, progress=self.progress, callback=self.callback,
                    return_trajectory=self.return_trajectory)


# the run functions of the built-in rows (`sit.sampler_kinds.SAMPLERS` names them "sit.samplers:run_...")
def run_euler(field, x, grid, cfg, path, ctx: CallContext):
    return sample_euler(field, x, grid, **ctx.common)


def run_heun(field, x, grid, cfg, path, ctx: CallContext):
    return sample_heun(field, x, grid, final_euler=cfg.heun_final_euler, **ctx.common)


def run_euler_maruyama(field, x, grid, cfg, path, ctx: CallContext):
    return sample_euler_maruyama(field, x, grid, path=path, w=ctx.w, last_step=cfg.last_step, noise_fn=ctx.noise_fn,
                                 **ctx.common)


def run_sde_heun(field, x, grid, cfg, path, ctx: CallContext):
    return sample_sde_heun(field, x, grid, path=path, w=ctx.w, last_step=cfg.last_step, noise_fn=ctx.noise_fn,
                           **ctx.common)


def run_dpmpp_2m(field, x, grid, cfg, path, ctx: CallContext):
    return sample_dpmpp_2m(field, x, grid, path=path, **ctx.common)


def run_meanflow(field, x, grid, cfg, path, ctx: CallContext):
    return sample_meanflow(field, x, grid, **ctx.common)


def run_torchdiffeq(field, x, grid, cfg, path, ctx: CallContext):
    """torchdiffeq's method named by the row (``cfg.method``)."""
    return sample_torchdiffeq(field, x, grid, method=cfg.method, atol=cfg.atol, rtol=cfg.rtol, **ctx.common)


def run_function(row: SamplerRow) -> Callable[..., Tensor]:
    """The run function of ``row``: given directly, or named ``"module:function"`` (imported here)."""
    if not isinstance(row.run, str):
        return row.run
    module, _, name = row.run.partition(":")
    return getattr(importlib.import_module(module), name)


def continuous_methods() -> tuple[str, ...]:
    """The names of the continuous-time rows of `SAMPLERS` (read at call time)."""
    return continuous_names()


def nfe_per_step(method: str) -> int | None:
    """Network evaluations per step of ``method`` (from `SAMPLERS`), None where the solver decides
    (adaptive torchdiffeq methods, Adams). Heun-type last steps may save one (see `SampleConfig.expected_nfe`)."""
    return sampler_row(method).nfe_per_step


def steps_for_nfe(method: str, nfe: int, last_step: str | None = "mean") -> int:
    """The most steps whose NFE does not exceed ``nfe`` (0 if even one step costs more):
    nfe // per-step, or (nfe + 1) // per-step where the row's ``saves_last`` says the last step
    of a run with ``last_step`` costs one less (sde_heun with a last step: 2 (N - 1) + 1 NFE).
    ValueError for methods whose NFE is not set by the step count (use atol/rtol for those)."""
    row = sampler_row(method)
    per = row.nfe_per_step
    if per is None:
        raise ValueError(f"the NFE of {method!r} is chosen by the solver, not by num_steps; set atol/rtol instead")
    saves = row.kind != "discrete" and saves_last(row, SampleConfig(method=method, last_step=last_step), False)
    return (nfe + saves) // per


def sample(
    field: Callable[[Tensor, Tensor], Tensor],
    x: Tensor | tuple[int, ...],
    cfg: SampleConfig,
    path: Path,
    *,
    generator: torch.Generator | None = None,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
    table: LossTable | None = None,
    prediction: str = "velocity",
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
) -> tuple[Tensor, dict]:
    """Sample with ``cfg`` from the velocity field ``field(x, t)`` (paper time) starting at the
    noise ``x`` (B, ...) (or a shape, then x ~ N(0, I) is drawn with ``generator`` in float32).
    ``prediction`` names what the underlying network predicts; it only changes the default time
    range (score/noise models are singular at t = 1 on Linear/GVP). SDE step noise comes from
    ``noise_fn(x)`` (a standard normal tensor shaped like x) when given, else from ``generator``;
    ODE methods ignore both. ``table`` is the L_t table for
    w = "kl_eta". Returns (x at t_end, or the trajectory (N + 1, B, ...)) and info with "nfe",
    "grid" (float64), "method", "t_start", "t_end" and "w" (None for ODE methods)."""
    if not isinstance(cfg, SampleConfig):
        raise TypeError(f"cfg must be a SampleConfig (got {type(cfg).__name__})")
    if not isinstance(x, Tensor):
        dev = generator.device if generator is not None else None
        x = torch.randn(tuple(x), generator=generator, device=dev, dtype=torch.float32)
    grid = cfg.make_grid(path, prediction, table)
    counter = NFECounter(field)
    w = cfg.w_fn(path, table) if cfg.is_sde else None
    ctx = CallContext(generator=generator, noise_fn=noise_fn, w=w, progress=progress, callback=callback,
                      return_trajectory=return_trajectory)
    out = run_function(SAMPLERS[cfg.method])(counter, x, grid, cfg, path, ctx)
    w_name = w.name if w is not None else None
    info = {
        "nfe": counter.nfe,
        "grid": grid,
        "method": cfg.method,
        "t_start": float(grid[0]),
        "t_end": float(grid[-1]),
        "w": w_name,
        "adaptive": SAMPLERS[cfg.method].adaptive,
    }
    return out, info
