"""The sampler table `SAMPLERS` and the names of the sampler's choices, torch-free (stdlib only).

One row per sampler (`SamplerRow`: its run function, NFE per step, kind, help, ``saves_last``).
A built-in row names its run function as ``"module:function"`` (resolved by `sit.samplers` when
it samples), so the table, its names and kinds, and every rule read from a row (kinds, NFE counts,
which options apply) are known without importing torch: `sit.config` (the preview sampler of
``TrainConfig.sample_method``), the sampler record (`sit.sampler_config`), the flag generator and
`--help` read them here. A row added at run time (``SAMPLERS["name"] = SamplerRow(fn, ...)``, its
run function given directly) is a row everywhere at once. Imports nothing of sit.

Also the names of the sampler's other choices, written once: the torchdiffeq methods, the time
grids (`sit.timegrid`), the diffusion coefficients w_t (`sit.diffusion_coef`), the SDE last steps
(`sit.samplers.sde`), the L_t table's reduction (`sit.lt`) and the likelihood's divergence
(`sit.likelihood`); those modules import them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Literal, get_args

# torchdiffeq's methods (sit.samplers.ode runs them; its "euler" is sit's own Euler row)
AdaptiveMethod = Literal["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"]
FixedTorchdiffeqMethod = Literal["midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "euler"]
TorchdiffeqMethod = Literal[AdaptiveMethod, FixedTorchdiffeqMethod]
ADAPTIVE_METHODS: tuple[str, ...] = get_args(AdaptiveMethod)
TORCHDIFFEQ_METHODS: tuple[str, ...] = get_args(TorchdiffeqMethod)

# the time grids of sit.timegrid.sampling_grid
GridKind = Literal["uniform", "shifted", "edm", "cosine", "logsnr"]
GRIDS: tuple[str, ...] = get_args(GridKind)

# the diffusion coefficients w_t of sit.diffusion_coef (W_FUNCTIONS holds one function per name)
WName = Literal[
    "kl",
    "sigma",
    "sin2",
    "kl_eta",
    "constant",
    "official-sbdm",
    "official-sigma",
    "official-linear",
    "official-decreasing",
    "official-increasing-decreasing",
    "official-constant",
]
W_NAMES: tuple[str, ...] = get_args(WName)
W_ALIASES = {
    "w_kl": "kl",
    "sbdm": "official-sbdm",
    "official-inccreasing-decreasing": "official-increasing-decreasing",
    "sin^2": "sin2",
}


def canonical_w(name: str) -> str:
    """The canonical name of a diffusion coefficient (lower case, aliases resolved), or ValueError."""
    key = str(name).lower()
    key = W_ALIASES.get(key, key)
    if key not in W_NAMES:
        raise ValueError(f"unknown diffusion coefficient w {name!r}; expected one of {list(W_NAMES)}")
    return key


# the SDE last steps of sit.samplers.sde (None: none, the Euler-Maruyama grid runs to t_end)
LastStep = Literal[None, "mean", "tweedie", "euler"]
LAST_STEPS: tuple[str | None, ...] = get_args(LastStep)
W_MAX = 1e8  # a larger w_t is treated as infinite (GVP: alpha_1 = cos(pi/2) ~ 6e-17, not 0, so w_KL(1) ~ 1e17)

# the L_t table's per-sample reduction (w_KL,eta; sit.lt, sit.diffusion_coef.LossTable) and the divergence
# of the probability-flow ODE likelihood (sit.likelihood)
Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
Divergence = Literal["exact", "hutchinson"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)

SamplerKind = Literal["ode", "sde", "multistep", "average", "discrete"]
SAMPLER_KINDS: tuple[str, ...] = get_args(SamplerKind)


@dataclass(frozen=True)
class SamplerRow:
    """One row of the sampler table `SAMPLERS`: ``run(field, x, grid, cfg, path, ctx) -> x`` (a
    function, or ``"module:function"`` naming one, which `sit.samplers` imports when it samples; None
    for the discrete rows, which `sit.network_sampler` runs on DiT's integer steps), network
    evaluations per step (None where the solver decides), the kind (ode | sde | multistep | average
    (needs a MeanFlow network: the field takes r) | discrete; SDE rows get the last-step grid and
    w_t) and a few words for ``--help``."""

    run: Callable | str | None
    nfe_per_step: int | None
    kind: SamplerKind
    help: str = ""
    # saves_last(cfg, ends_at_0) -> bool: the last step of cfg costs one evaluation less (Heun's Euler
    # last step, SDE-Heun's last step); every NFE count (expected_nfe, steps_for_nfe) reads it
    saves_last: Callable[..., bool] | None = None
    # the solver chooses its own steps (torchdiffeq's dopri5, ...): num_steps only sets the output grid,
    # the tolerances atol / rtol apply; `sit sweep` runs it once per tolerance
    adaptive: bool = False

    def __post_init__(self):
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"SamplerRow.kind: unknown kind {self.kind!r}; expected one of {list(SAMPLER_KINDS)}")
        if self.nfe_per_step is not None and not (isinstance(self.nfe_per_step, int) and self.nfe_per_step >= 1):
            raise ValueError(f"SamplerRow.nfe_per_step must be None or an integer >= 1 (got {self.nfe_per_step!r})")
        if (self.run is None) != (self.kind == "discrete"):
            raise ValueError("SamplerRow.run must be given for continuous samplers and None for discrete ones")
        if isinstance(self.run, str) and ":" not in self.run:
            raise ValueError(f"SamplerRow.run must be a function or 'module:function' (got {self.run!r})")
        if self.adaptive and self.nfe_per_step is not None:
            raise ValueError("SamplerRow.nfe_per_step must be None for an adaptive solver (it chooses its steps)")


def _saves_heun(cfg, ends_at_0: bool) -> bool:
    return cfg.heun_final_euler and ends_at_0


def _saves_sde_heun(cfg, ends_at_0: bool) -> bool:
    return cfg.last_step is not None or ends_at_0


_TORCHDIFFEQ_NFE = {"midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


def _torchdiffeq_row(m: str) -> SamplerRow:
    """torchdiffeq's method ``m`` (the row's name is the method's)."""
    return SamplerRow("sit.samplers:run_torchdiffeq", _TORCHDIFFEQ_NFE.get(m), "ode", "torchdiffeq",
                      adaptive=m in ADAPTIVE_METHODS)


# THE sampler table: `SampleConfig` validation, `sample`, the NFE counts, `sit sample --method`'s
# help, `sit sweep`, the study and `sit.network_sampler` all read it. Adding a sampler = its module
# + one row here (or one row added at run time).
SAMPLERS: dict[str, SamplerRow] = {
    "euler": SamplerRow("sit.samplers:run_euler", 1, "ode", "Euler ODE"),
    "heun": SamplerRow("sit.samplers:run_heun", 2, "ode", "Heun ODE (the paper's)", saves_last=_saves_heun),
    "euler_maruyama": SamplerRow("sit.samplers:run_euler_maruyama", 1, "sde", "Euler-Maruyama SDE"),
    "sde_heun": SamplerRow("sit.samplers:run_sde_heun", 2, "sde", "stochastic Heun SDE", saves_last=_saves_sde_heun),
    "dpmpp_2m": SamplerRow("sit.samplers:run_dpmpp_2m", 1, "multistep", "DPM-Solver++(2M) ODE, few steps"),
    "meanflow": SamplerRow("sit.samplers:run_meanflow", 1, "average",
                           "MeanFlow average-velocity jumps, 1 NFE per step (MeanFlow models)"),
    **{m: _torchdiffeq_row(m) for m in TORCHDIFFEQ_METHODS if m != "euler"},
    "ddpm": SamplerRow(None, 1, "discrete", "DiT ancestral (DiT checkpoints)"),
    "ddim": SamplerRow(None, 1, "discrete", "DDIM (DiT checkpoints)"),
}


class _Kinds(Mapping):
    """name -> kind of every row of `SAMPLERS`, read from the table at each use."""

    def __getitem__(self, name: str) -> str:
        return SAMPLERS[name].kind

    def __iter__(self):
        return iter(SAMPLERS)

    def __len__(self) -> int:
        return len(SAMPLERS)


KINDS: Mapping[str, str] = _Kinds()


def kind_of(name: str) -> str | None:
    """The kind of sampler row ``name`` (ode | sde | multistep | average | discrete), None when the
    table has no such row."""
    row = SAMPLERS.get(name)
    return row.kind if row is not None else None


def continuous_names() -> tuple[str, ...]:
    """The continuous-time rows (every kind but "discrete"), in table order (read at call time)."""
    return tuple(n for n, r in SAMPLERS.items() if r.kind != "discrete")


def is_adaptive(name: str) -> bool:
    """Row ``name`` is an adaptive solver: it chooses its own steps (atol / rtol apply, num_steps not)."""
    row = SAMPLERS.get(name)
    return row is not None and row.adaptive


def sampler_row(method: str) -> SamplerRow:
    """The row of ``method``; ValueError naming the rows when the table has none."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; expected one of {list(SAMPLERS)}")
    return SAMPLERS[method]


def methods_help() -> str:
    """'euler, heun, ...' grouped by kind, for --help."""
    by_kind: dict[str, list[str]] = {}
    for name, row in SAMPLERS.items():
        key = "torchdiffeq" if row.help == "torchdiffeq" else row.kind
        by_kind.setdefault(key, []).append(name)
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in by_kind.items())
