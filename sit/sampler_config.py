"""The sampler's records, torch-free at import: `SampleConfig` (continuous time), `DiscreteSampleConfig`
(DiT's DDPM / DDIM), the one rule of which options a sampler reads (`check_method_fields`), and
the network precisions a sample set may use.

Each field's metadata gives its command-line flag (`sit.commands.flags`: help, metavar, flag,
choices), so `sit sample` / `sit sweep` generate their sampler flags from the records and answer
``--help`` without torch. Validation reads the sampler table (`sit.sampler_kinds`, torch-free);
the methods that build grids and coefficients import torch when called. `sit.samplers` and
`sit.discrete` re-export the records. Imports `sit.config` and `sit.sampler_kinds` only (torch,
`sit.timegrid`, `sit.diffusion_coef` inside the methods that compute); never `sit.samplers`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Literal

from sit.config import ConfigError, check_steps
from sit.sampler_kinds import (
    GRIDS,
    LAST_STEPS,
    SAMPLERS,
    W_MAX,
    GridKind,
    LastStep,
    SamplerRow,
    WName,
    canonical_w,
    continuous_names,
    methods_help,
    sampler_row,
)

if TYPE_CHECKING:
    from torch import Tensor

    from sit.diffusion_coef import LossTable
    from sit.paths import Path

PRECISIONS = ("fp32", "bf16", "bf16-weights")   # the network's precision (sit.network_sampler)
DISCRETE_METHODS = ("ddpm", "ddim")
SDE_FIELDS: tuple[str, ...] = ("w", "w_scale", "eta", "last_step", "last_step_size")  # read by sde rows only
ADAPTIVE_FIELDS: tuple[str, ...] = ("atol", "rtol")  # read by adaptive solvers only


def _f(default, help: str | Callable[[], str], **extra):
    """A record field: its default and its flag's metadata (`sit.commands.flags`): ``help`` (text, or
    a function giving it when the parser is built), ``metavar``, ``flag``, ``choices`` (None: any
    value, checked by the record)."""
    return dataclasses.field(default=default, metadata=MappingProxyType(dict(help=help, **extra)))


def _method_help() -> str:
    return f"a row of sit.samplers.SAMPLERS: {methods_help()}"


@dataclass(frozen=True)
class SampleConfig:
    """How to sample (math.md section 6). Times are paper times (t = 1 noise, t = 0 data).

    t_start / t_end None = defaults from the path, prediction and method (`time_range`):
    start at 1, except 1 - 1e-3 where the field or w_t is infinite at t = 1 (score/noise models
    on Linear/GVP; w_KL on Linear/GVP); end at 0 for velocity models on Linear/GVP, else 1e-3
    (VP, score/noise); SDE with a last step: EM down to last_step_size, last step to 0."""

    # a continuous row of the sampler table (sit.sampler_kinds.SAMPLERS)
    method: str = _f("heun", _method_help, metavar="NAME", choices=None)
    num_steps: int = _f(125, "steps (not grid points); Heun spends 2 NFE per step", metavar="N")
    grid: GridKind = _f("uniform", "time grid: uniform, shifted, edm, cosine, logsnr (equal log-SNR steps, for "
                        "dpmpp_2m)", metavar="KIND", choices=None)
    shift: float = _f(1.0, "grid=shifted: > 1 spends more steps near noise", metavar="S")
    rho: float = _f(7.0, "grid=edm: Karras exponent", metavar="RHO")
    t_start: float | None = _f(None, "start time (default: 1, or 1 - 1e-3 where the field or w_t is infinite at 1)",
                               metavar="T")
    t_end: float | None = _f(None, "end time before the last step (default: 0, or 1e-3 where singular)", metavar="T")
    w: WName = _f("sigma", "SDE diffusion coefficient w_t: kl, sigma, sin2, kl_eta, constant, official-*",
                  metavar="NAME", choices=None)   # aliases and any case are accepted (canonical_w)
    w_scale: float = _f(1.0, "multiplier of w_t", metavar="S")   # the official "norm" for official-* forms
    eta: float = _f(0.0, "eta of w_KL,eta (eq. 14) only; DDIM's eta is {DiscreteSampleConfig.eta}", metavar="ETA")
    last_step: LastStep = _f("mean", "SDE last step: mean, tweedie, euler, none", metavar="KIND", choices=None)
    last_step_size: float = _f(0.04, "size of the SDE last step (official 0.04)", metavar="H")
    atol: float = _f(1e-6, "adaptive ODE solver absolute tolerance", metavar="TOL")
    rtol: float = _f(1e-3, "adaptive ODE solver relative tolerance", metavar="TOL")
    heun_final_euler: bool = _f(False, "heun: an Euler last step when it ends exactly at t = 0", flag=None,
                                internal="a library option of the Heun row; not a flag")

    def __post_init__(self):
        if self.method not in continuous_names():
            extra = " (a discrete-time sampler: use DiscreteSampleConfig)" if self.method in SAMPLERS else ""
            raise ValueError(f"SampleConfig.method: unknown sampler {self.method!r}{extra}; "
                             f"expected one of {list(continuous_names())}")
        check_steps(self.num_steps, "SampleConfig.num_steps")
        if self.grid not in GRIDS:
            raise ValueError(f"SampleConfig.grid: unknown time grid {self.grid!r}; expected one of {list(GRIDS)}")
        try:  # one spelling per coefficient ('KL_ETA' -> 'kl_eta', aliases resolved), so checks on w see it
            object.__setattr__(self, "w", canonical_w(self.w))
        except ValueError as e:
            raise ValueError(f"SampleConfig.w: {e}") from None
        for name in ("w_scale", "eta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"SampleConfig.{name} must be a finite number >= 0 (got {v!r})")
        if self.last_step not in LAST_STEPS:
            raise ValueError(f"SampleConfig.last_step: unknown last step {self.last_step!r}; expected one of {list(LAST_STEPS)}")
        if not (0.0 < self.last_step_size < 1.0):
            raise ValueError(f"SampleConfig.last_step_size must lie in (0, 1) (got {self.last_step_size!r})")
        for name in ("t_start", "t_end"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"SampleConfig.{name} must be None or a time in [0, 1] (got {v!r})")
        if self.t_start is not None and self.t_end is not None and not self.t_start > self.t_end:
            raise ValueError(f"SampleConfig.t_start must be > SampleConfig.t_end (got {self.t_start}, {self.t_end})")
        for name in ("atol", "rtol", "shift", "rho"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"SampleConfig.{name} must be a finite number > 0 (got {v!r})")

    @property
    def kind(self) -> str:
        """The sampler's kind in `SAMPLERS` (ode | sde | multistep | average)."""
        return SAMPLERS[self.method].kind

    @property
    def is_sde(self) -> bool:
        return self.kind == "sde"

    def w_fn(self, path: Path, table: LossTable | None = None) -> Callable[[Tensor], Tensor]:
        """The diffusion coefficient t -> w_t of this config (SDE methods)."""
        from sit.diffusion_coef import get_w

        return get_w(self.w, path, scale=self.w_scale, eta=self.eta, table=table)

    def time_range(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> tuple[float, float]:
        """(t_start, t_end) with the defaults filled in (see the class docstring)."""
        import torch

        from sit.paths import SAMPLE_EPS

        start, end = path.sample_t_range(prediction)
        if self.is_sde and path.alpha_1_zero:
            w1 = self.w_fn(path, table)(torch.ones(1, dtype=torch.float64))
            if not bool((torch.isfinite(w1) & (w1.abs() <= W_MAX)).all()):
                start = 1.0 - SAMPLE_EPS
        if self.is_sde and self.last_step is not None:
            if self.t_end not in (None, 0, 0.0):
                raise ValueError(
                    f"SampleConfig.t_end={self.t_end} conflicts with last_step={self.last_step!r}, which ends at t = 0; "
                    "use last_step=None to stop the SDE at t_end"
                )
            end = 0.0
        t_start = start if self.t_start is None else float(self.t_start)
        t_end = end if self.t_end is None else float(self.t_end)
        if not t_start > t_end:
            raise ValueError(f"SampleConfig: resolved t_start={t_start} must be > t_end={t_end}")
        return t_start, t_end

    def expected_nfe(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> int | None:
        """Network evaluations `sample` will spend with this config, or None where the solver
        decides (adaptive methods, Adams). Counts the Heun-type last steps that save one call."""
        row = sampler_row(self.method)
        if row.nfe_per_step is None:
            return None
        ends_at_0 = float(self.make_grid(path, prediction, table)[-1]) == 0.0
        return row.nfe_per_step * self.num_steps - saves_last(row, self, ends_at_0)

    def make_grid(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> Tensor:
        """The float64 decreasing time grid the sampler will walk (num_steps intervals); one that
        float64 cannot keep strictly decreasing (a huge shift, a tiny rho, too many steps in a
        narrow range) is refused naming the fields that make it so."""
        grid = self._grid(path, prediction, table)
        if grid.numel() >= 2 and not bool((grid[1:] < grid[:-1]).all()):
            name = {"shifted": "shift", "edm": "rho"}.get(self.grid)
            knob = f" and {{{name}}} {getattr(self, name):g}" if name else ""
            i = int((grid[1:] >= grid[:-1]).nonzero()[0])
            raise ConfigError("SampleConfig", "grid", f"{self.grid!r} with {{num_steps}} {self.num_steps}{knob} "
                              f"from t = {float(grid[0]):g} to {float(grid[-1]):g} repeats a time (t = "
                              f"{float(grid[i]):.17g} at steps {i} and {i + 1}): float64 cannot tell the steps "
                              "apart; use fewer {num_steps}" + (f" or a milder {{{name}}}" if name else "")
                              + " or another {grid}")
        return grid

    def _grid(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> Tensor:
        import torch

        from sit.timegrid import sampling_grid

        t_start, t_end = self.time_range(path, prediction, table)
        kw = dict(kind=self.grid, shift=self.shift, rho=self.rho, log_snr=_log_snr_fn(path))
        if self.is_sde and self.last_step is not None:
            if self.num_steps == 1:
                return torch.tensor([t_start, 0.0], dtype=torch.float64)
            if not t_start > self.last_step_size:
                raise ValueError(f"SampleConfig.last_step_size={self.last_step_size} must be < t_start={t_start}")
            em = sampling_grid(self.num_steps - 1, t_start, self.last_step_size, **kw)
            return torch.cat([em, torch.zeros(1, dtype=torch.float64)])
        return sampling_grid(self.num_steps, t_start, t_end, **kw)


def saves_last(row: SamplerRow, cfg: SampleConfig, ends_at_0: bool) -> int:
    """1 when ``row``'s last step of ``cfg`` costs one evaluation less (its ``saves_last``), else 0."""
    return int(bool(row.saves_last is not None and row.saves_last(cfg, ends_at_0)))


def _log_snr_fn(path: Path) -> Callable[[Tensor], Tensor]:
    """t -> log(alpha_t / sigma_t) of ``path`` (float64), for the ``logsnr`` grid."""
    import torch

    def ell(t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        return torch.log(path.alpha(t)) - torch.log(path.sigma(t))

    return ell


@dataclass(frozen=True)
class DiscreteSampleConfig:
    """DiT's discrete-time samplers (`sit.discrete`) on the respaced grid of ``num_steps`` steps:
    ancestral ``ddpm`` or ``ddim`` with its own ``eta`` (0 = deterministic DDIM)."""

    method: Literal["ddpm", "ddim"] = "ddpm"
    num_steps: int = 250
    eta: float = _f(0.0, "DDIM's eta for {SampleConfig.method} ddim", flag="--ddim-eta", metavar="ETA",
                   dest="ddim_eta")   # must be 0 for ddpm

    def __post_init__(self):
        if self.method not in DISCRETE_METHODS:
            raise ValueError(f"DiscreteSampleConfig.method: unknown sampler {self.method!r}; expected one of {list(DISCRETE_METHODS)}")
        check_steps(self.num_steps, "DiscreteSampleConfig.num_steps")
        if not (isinstance(self.eta, (int, float)) and 0.0 <= self.eta < float("inf")):
            raise ValueError(f"DiscreteSampleConfig.eta must be a finite number >= 0 (got {self.eta!r})")
        if self.method == "ddpm" and self.eta != 0:
            raise ValueError(f"DiscreteSampleConfig.eta applies to ddim only (got eta={self.eta} with ddpm)")


def check_method_fields(method: str, given: Any) -> None:
    """Refuse SampleConfig fields ``given`` (names set explicitly) that ``method`` would ignore, so
    they cannot enter a set's identity or label a sweep row without changing its samples: an SDE
    field with a row whose kind (in `SAMPLERS`) is not "sde", a tolerance with a fixed-step method,
    ``num_steps`` with an adaptive solver (it chooses its own steps). The one rule of `sit sample`
    and `sit sweep`; raises `ConfigError` naming the field."""
    row = sampler_row(method)
    if row.kind != "sde":
        bad = [k for k in SDE_FIELDS if k in given]
        if bad:
            raise ConfigError("SampleConfig", bad[0], f"applies to SDE methods only (got {{method}} {method}, "
                              f"{'an' if row.kind[0] in 'aeiou' else 'a'} {row.kind} sampler)")
    if row.adaptive and "num_steps" in given:
        raise ConfigError("SampleConfig", "num_steps", f"does not apply to the adaptive solver {method} (it chooses "
                          "its own steps; use {atol} / {rtol})")
    if not row.adaptive:
        bad = [k for k in ADAPTIVE_FIELDS if k in given]
        if bad:
            raise ConfigError("SampleConfig", bad[0], f"applies to adaptive solvers only (got {{method}} {method})")
