"""Samplers for a velocity field in paper time (t = 1 noise -> t = 0 data; see `sit.timegrid`).

Low level (explicit grid, no hidden state): `sample_euler`, `sample_heun`, `sample_torchdiffeq`
(probability-flow ODE, eq. 2), `sample_dpmpp_2m` (the same ODE, few-step multistep solver) and
`sample_euler_maruyama`, `sample_sde_heun` (reverse SDE, eq. 4) and `sample_meanflow` (average-velocity
jumps of a MeanFlow network, `sit.samplers.average`). They are the rows of the sampler
table `SAMPLERS` (run function, NFE per step, kind), which validation, `sample`, the NFE counts,
the CLI and `sit sweep` read: adding a sampler = one module + one row.
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

import math
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from sit.config import check_steps
from sit.diffusion_coef import LossTable, WName, canonical_w, get_w
from sit.paths import SAMPLE_EPS, Path
from sit.sampler_kinds import KINDS
from sit.samplers._common import NFECounter, check_grid
from sit.samplers.average import sample_meanflow
from sit.samplers.multistep import sample_dpmpp_2m
from sit.samplers.ode import (
    ADAPTIVE_METHODS,
    TORCHDIFFEQ_METHODS,
    TorchdiffeqMethod,
    sample_euler,
    sample_heun,
    sample_torchdiffeq,
)
from sit.samplers.sde import LAST_STEPS, W_MAX, LastStep, sample_euler_maruyama, sample_sde_heun
from sit.timegrid import GRIDS, GridKind, sampling_grid

__all__ = [
    "SampleConfig",
    "sample",
    "NFECounter",
    "Method",
    "METHODS",
    "nfe_per_step",
    "steps_for_nfe",
    "SDE_METHODS",
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
    "SamplerTable",
    "CallContext",
    "continuous_methods",
    "sampler_row",
    "methods_help",
    "check_method_fields",
    "SDE_FIELDS",
    "ADAPTIVE_FIELDS",
]

OdeMethod = Literal["euler", "heun"]
SdeMethod = Literal["euler_maruyama", "sde_heun"]
MultistepMethod = Literal["dpmpp_2m"]
AverageMethod = Literal["meanflow"]
Method = Literal[OdeMethod, SdeMethod, TorchdiffeqMethod, MultistepMethod, AverageMethod]  # torchdiffeq's "euler" is ours
ODE_METHODS: tuple[str, ...] = get_args(OdeMethod)
SDE_METHODS: tuple[str, ...] = get_args(SdeMethod)
METHODS: tuple[str, ...] = get_args(Method)  # the built-in continuous samplers (SAMPLERS may hold more)
SamplerKind = Literal["ode", "sde", "multistep", "average", "discrete"]
SAMPLER_KINDS: tuple[str, ...] = get_args(SamplerKind)


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


@dataclass(frozen=True)
class SamplerRow:
    """One row of the sampler table `SAMPLERS`: ``run(field, x, grid, cfg, path, ctx: CallContext) -> x``
    (None for the discrete rows, which `sit.network_sampler` runs on DiT's integer steps), network
    evaluations per step (None where the solver decides), the kind (ode | sde | multistep |
    average (needs a MeanFlow network: the field takes r) | discrete; SDE rows get the last-step
    grid and w_t) and a few words for ``--help``."""

    run: Callable[..., Tensor] | None
    nfe_per_step: int | None
    kind: SamplerKind
    help: str = ""
    # saves_last(cfg, ends_at_0) -> bool: the last step of cfg costs one evaluation less (Heun's Euler
    # last step, SDE-Heun's last step); every NFE count (expected_nfe, steps_for_nfe) reads it
    saves_last: Callable[..., bool] | None = None

    def __post_init__(self):
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"SamplerRow.kind: unknown kind {self.kind!r}; expected one of {list(SAMPLER_KINDS)}")
        if self.nfe_per_step is not None and not (isinstance(self.nfe_per_step, int) and self.nfe_per_step >= 1):
            raise ValueError(f"SamplerRow.nfe_per_step must be None or an integer >= 1 (got {self.nfe_per_step!r})")
        if (self.run is None) != (self.kind == "discrete"):
            raise ValueError("SamplerRow.run must be given for continuous samplers and None for discrete ones")


def _euler(field, x, grid, cfg, path, ctx: CallContext):
    return sample_euler(field, x, grid, **ctx.common)


def _heun(field, x, grid, cfg, path, ctx: CallContext):
    return sample_heun(field, x, grid, final_euler=cfg.heun_final_euler, **ctx.common)


def _euler_maruyama(field, x, grid, cfg, path, ctx: CallContext):
    return sample_euler_maruyama(field, x, grid, path=path, w=ctx.w, last_step=cfg.last_step, noise_fn=ctx.noise_fn,
                                 **ctx.common)


def _sde_heun(field, x, grid, cfg, path, ctx: CallContext):
    return sample_sde_heun(field, x, grid, path=path, w=ctx.w, last_step=cfg.last_step, noise_fn=ctx.noise_fn,
                           **ctx.common)


def _dpmpp_2m(field, x, grid, cfg, path, ctx: CallContext):
    return sample_dpmpp_2m(field, x, grid, path=path, **ctx.common)


def _meanflow(field, x, grid, cfg, path, ctx: CallContext):
    return sample_meanflow(field, x, grid, **ctx.common)


def _torchdiffeq(method: str):
    def run(field, x, grid, cfg, path, ctx: CallContext):
        return sample_torchdiffeq(field, x, grid, method=method, atol=cfg.atol, rtol=cfg.rtol, **ctx.common)

    return run


_TORCHDIFFEQ_NFE = {"midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


class SamplerTable(dict):
    """The dict of `SAMPLERS` that keeps `sit.sampler_kinds.KINDS` (its names and kinds, torch-free,
    read by `sit.config`) equal to its rows, also for a row added or removed at run time."""

    def __init__(self, rows=()):
        super().__init__()
        self.update(rows)

    def __setitem__(self, name: str, row: SamplerRow) -> None:
        if not isinstance(row, SamplerRow):
            raise TypeError(f"SAMPLERS[{name!r}] must be a SamplerRow (got {type(row).__name__})")
        super().__setitem__(name, row)
        KINDS[name] = row.kind

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        KINDS.pop(name, None)

    def update(self, rows=(), **kw) -> None:
        for name, row in {**dict(rows), **kw}.items():
            self[name] = row

    def pop(self, name, *default):
        KINDS.pop(name, None)
        return super().pop(name, *default)

    def setdefault(self, name, row=None):
        if name not in self:
            self[name] = row
        return self[name]


# THE sampler table: `SampleConfig` validation, `sample`, the NFE counts, `sit sample --method`'s
# help, `sit sweep` and `sit.network_sampler` all read it. Adding a sampler = its module + one row here.
SAMPLERS: dict[str, SamplerRow] = SamplerTable({
    "euler": SamplerRow(_euler, 1, "ode", "Euler ODE"),
    "heun": SamplerRow(_heun, 2, "ode", "Heun ODE (the paper's)",
                       saves_last=lambda cfg, ends_at_0: cfg.heun_final_euler and ends_at_0),
    "euler_maruyama": SamplerRow(_euler_maruyama, 1, "sde", "Euler-Maruyama SDE"),
    "sde_heun": SamplerRow(_sde_heun, 2, "sde", "stochastic Heun SDE",
                           saves_last=lambda cfg, ends_at_0: cfg.last_step is not None or ends_at_0),
    "dpmpp_2m": SamplerRow(_dpmpp_2m, 1, "multistep", "DPM-Solver++(2M) ODE, few steps"),
    "meanflow": SamplerRow(_meanflow, 1, "average", "MeanFlow average-velocity jumps, 1 NFE per step (MeanFlow models)"),
    **{m: SamplerRow(_torchdiffeq(m), _TORCHDIFFEQ_NFE.get(m), "ode", "torchdiffeq")
       for m in TORCHDIFFEQ_METHODS if m != "euler"},
    "ddpm": SamplerRow(None, 1, "discrete", "DiT ancestral (DiT checkpoints)"),
    "ddim": SamplerRow(None, 1, "discrete", "DDIM (DiT checkpoints)"),
})


def continuous_methods() -> tuple[str, ...]:
    """The names of the continuous-time rows of `SAMPLERS` (read at call time)."""
    return tuple(k for k, r in SAMPLERS.items() if r.kind != "discrete")


def sampler_row(method: str) -> SamplerRow:
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; expected one of {list(SAMPLERS)}")
    return SAMPLERS[method]


def methods_help() -> str:
    """'euler, heun, ...' grouped by kind, for --help."""
    by_kind: dict[str, list[str]] = {}
    for name, row in SAMPLERS.items():
        if row.help == "torchdiffeq":
            by_kind.setdefault("torchdiffeq", []).append(name)
        else:
            by_kind.setdefault(row.kind, []).append(name)
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in by_kind.items())


SDE_FIELDS: tuple[str, ...] = ("w", "w_scale", "eta", "last_step", "last_step_size")  # read by sde rows only
ADAPTIVE_FIELDS: tuple[str, ...] = ("atol", "rtol")  # read by adaptive solvers only


def check_method_fields(method: str, given) -> None:
    """Refuse SampleConfig fields ``given`` (names set explicitly) that ``method`` would ignore, so
    they cannot enter a set's identity or label a sweep row without changing its samples: an SDE
    field with a row whose kind (in `SAMPLERS`) is not "sde", a tolerance with a fixed-step method,
    ``num_steps`` with an adaptive solver (it chooses its own steps). The one rule of `sit sample`
    and `sit sweep`; raises `ConfigError` naming the field."""
    from sit.config import ConfigError

    row = sampler_row(method)
    if row.kind != "sde":
        bad = [k for k in SDE_FIELDS if k in given]
        if bad:
            raise ConfigError("SampleConfig", bad[0], f"applies to SDE methods only (got {{method}} {method}, "
                              f"{'an' if row.kind[0] in 'aeiou' else 'a'} {row.kind} sampler)")
    adaptive = method in ADAPTIVE_METHODS
    if adaptive and "num_steps" in given:
        raise ConfigError("SampleConfig", "num_steps", f"does not apply to the adaptive solver {method} (it chooses "
                          "its own steps; use {atol} / {rtol})")
    if not adaptive:
        bad = [k for k in ADAPTIVE_FIELDS if k in given]
        if bad:
            raise ConfigError("SampleConfig", bad[0], f"applies to adaptive solvers only (got {{method}} {method})")


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
    saves = row.kind != "discrete" and _saves_last(row, SampleConfig(method=method, last_step=last_step), False)
    return (nfe + saves) // per


@dataclass(frozen=True)
class SampleConfig:
    """How to sample (math.md section 6). Times are paper times (t = 1 noise, t = 0 data).

    t_start / t_end None = defaults from the path, prediction and method (`time_range`):
    start at 1, except 1 - 1e-3 where the field or w_t is infinite at t = 1 (score/noise models
    on Linear/GVP; w_KL on Linear/GVP); end at 0 for velocity models on Linear/GVP, else 1e-3
    (VP, score/noise); SDE with a last step: EM down to last_step_size, last step to 0."""

    method: Method = "heun"         # a continuous row of SAMPLERS: euler | heun | euler_maruyama | sde_heun | dpmpp_2m | meanflow | torchdiffeq (dopri5, rk4, ...)
    num_steps: int = 125            # steps (grid intervals), not grid points; Heun: 2 NFE per step
    grid: GridKind = "uniform"      # time grid kind of sit.timegrid.sampling_grid (logsnr: equal log-SNR steps)
    shift: float = 1.0              # grid="shifted": > 1 spends more steps near noise
    rho: float = 7.0                # grid="edm": Karras exponent
    t_start: float | None = None    # first time (noise end)
    t_end: float | None = None      # last time (data end)
    w: WName = "sigma"              # SDE diffusion coefficient w_t (sit.diffusion_coef.W_NAMES)
    w_scale: float = 1.0            # multiplies w_t (the official "norm" for official-* forms)
    eta: float = 0.0                # w = "kl_eta" (eq. 14); needs a LossTable when > 0
    last_step: LastStep = "mean"   # SDE last step (official default "mean")
    last_step_size: float = 0.04    # SDE: the last step runs from t = last_step_size to 0
    atol: float = 1e-6              # adaptive torchdiffeq methods
    rtol: float = 1e-3
    heun_final_euler: bool = False  # heun: an Euler last step when it ends exactly at t = 0

    def __post_init__(self):
        if self.method not in continuous_methods():
            extra = " (a discrete-time sampler: use DiscreteSampleConfig)" if self.method in SAMPLERS else ""
            raise ValueError(f"SampleConfig.method: unknown sampler {self.method!r}{extra}; "
                             f"expected one of {list(continuous_methods())}")
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
        """The sampler's kind in `SAMPLERS` (ode | sde | multistep)."""
        return SAMPLERS[self.method].kind

    @property
    def is_sde(self) -> bool:
        return self.kind == "sde"

    def w_fn(self, path: Path, table: LossTable | None = None) -> Callable[[Tensor], Tensor]:
        """The diffusion coefficient t -> w_t of this config (SDE methods)."""
        return get_w(self.w, path, scale=self.w_scale, eta=self.eta, table=table)

    def time_range(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> tuple[float, float]:
        """(t_start, t_end) with the defaults filled in (see the class docstring)."""
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
        return row.nfe_per_step * self.num_steps - _saves_last(row, self, ends_at_0)

    def make_grid(self, path: Path, prediction: str = "velocity", table: LossTable | None = None) -> Tensor:
        """The float64 decreasing time grid the sampler will walk (num_steps intervals); one that
        float64 cannot keep strictly decreasing (a huge shift, a tiny rho, too many steps in a
        narrow range) is refused naming the fields that make it so."""
        grid = self._grid(path, prediction, table)
        if grid.numel() >= 2 and not bool((grid[1:] < grid[:-1]).all()):
            from sit.config import ConfigError

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


def _saves_last(row: SamplerRow, cfg: SampleConfig, ends_at_0: bool) -> int:
    """1 when ``row``'s last step of ``cfg`` costs one evaluation less (its ``saves_last``), else 0."""
    return int(bool(row.saves_last is not None and row.saves_last(cfg, ends_at_0)))


def _log_snr_fn(path: Path) -> Callable[[Tensor], Tensor]:
    """t -> log(alpha_t / sigma_t) of ``path`` (float64), for the ``logsnr`` grid."""
    def ell(t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        return torch.log(path.alpha(t)) - torch.log(path.sigma(t))

    return ell


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
    out = SAMPLERS[cfg.method].run(counter, x, grid, cfg, path, ctx)
    w_name = w.name if w is not None else None
    info = {
        "nfe": counter.nfe,
        "grid": grid,
        "method": cfg.method,
        "t_start": float(grid[0]),
        "t_end": float(grid[-1]),
        "w": w_name,
        "adaptive": cfg.method in ADAPTIVE_METHODS,
    }
    return out, info
