"""The study's cell table and budget.

A *cell* is one trained model (an objective on an interpolant, or DiT's discrete DDPM); every
table of the paper is a view over cells, so a model is trained once per seed and serves every
table it appears in (the VP score model serves Tables 2, 3 and 6). Every cell uses the same
network, optimiser, EMA and budget, so cells differ only in the axis under study.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sit.config import ConfigError


@dataclass(frozen=True)
class Cell:
    name: str                   # CLI / file name
    path: str                   # interpolant (sit.paths)
    prediction: str             # velocity | score | noise
    loss_weight: str | None     # None, or "velocity" (L_s_lambda, the paper's lambda)
    time_input: str             # continuous (SiT) | discrete (DiT's DDPM)
    label: str                  # the paper's row label
    objective: str              # L_v, L_s, L_s_lambda, L_s^N
    default: bool = True        # part of the default study

    @property
    def continuous(self) -> bool:
        return self.time_input == "continuous"

    @property
    def velocity(self) -> bool:
        return self.prediction == "velocity" and self.continuous


CELLS: tuple[Cell, ...] = (
    Cell("ddpm", "vp", "noise", None, "discrete", "DDPM noise", "L_s^N"),
    Cell("vp-score", "vp", "score", None, "continuous", "SBDM-VP score", "L_s"),
    Cell("vp-score-lambda", "vp", "score", "velocity", "continuous", "SBDM-VP score", "L_s_lambda"),
    Cell("vp-velocity", "vp", "velocity", None, "continuous", "SBDM-VP velocity", "L_v"),
    Cell("linear-velocity", "linear", "velocity", None, "continuous", "Linear velocity", "L_v"),
    Cell("gvp-velocity", "gvp", "velocity", None, "continuous", "GVP velocity", "L_v"),
    # Table 6's score rows on Linear / GVP: off by default (`--cells all`)
    Cell("linear-score", "linear", "score", None, "continuous", "Linear score", "L_s", default=False),
    Cell("gvp-score", "gvp", "score", None, "continuous", "GVP score", "L_s", default=False),
)
CELL_BY_NAME = {c.name: c for c in CELLS}
FIG5_CELL = "linear-velocity"   # Fig. 5: quality vs NFE (the paper's SiT-B Linear velocity model)
W_CHOICES = ("kl", "sigma", "sin2", "kl_eta")   # Table 6 columns (sit.diffusion_coef names)


def _flag(default, help: str):
    """A Budget field `sit study` sets by a flag: its help (metadata, `sit.commands.flags`)."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": "N"})


@dataclass(frozen=True)
class Budget:
    """What every cell gets. ``steps`` x ``batch`` is the training budget (the same in every
    cell); sampling uses ``nfe`` network evaluations for the ODE (Heun, nfe/2 steps), the SDE
    (Euler-Maruyama, nfe steps) and DDPM (nfe respaced steps) alike, and ``samples_per_class``
    x 10 samples for each quality number."""

    # the fields `sit study` has a flag for carry its help (metadata, sit.commands.flags)
    steps: int = _flag(600, "optimizer steps per model")
    batch: int = _flag(256, "images per step")
    seeds: int = _flag(3, "seeds per cell, >= 2")   # trained models per cell (>= 2 for a confidence interval)
    samples_per_class: int = _flag(20, "samples per class per quality number")
    nfe: int = _flag(32, "network evaluations per sample")   # Tables 2-6
    nfe_curve: tuple[int, ...] = (8, 16, 32, 64)   # Fig. 5
    etas: tuple[float, ...] = (0.01, 1.0, 100.0)   # w_KL,eta sweep (chosen on separate noise)
    path_points: int = 2000          # Monte-Carlo points of each C(v) (Fig. 4; the paper: 10000)
    path_checkpoints: int = 4        # C(v) measured after each quarter of training
    lt_points: int = 20              # L_t table for w_KL,eta: times x samples per time
    lt_samples: int = 128
    cfg_scale: float = 1.0           # no guidance, as the paper's Tables 2-6
    train_minutes: float | None = dataclasses.field(default=None, metadata={   # steps were calibrated from this
        "help": "wall-time budget per trained model instead of {steps}: turned into one step count for all cells by "
                "timing a short run", "metavar": "MIN"})

    def __post_init__(self):
        for name in ("steps", "batch", "samples_per_class", "path_points", "path_checkpoints", "lt_points"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"study budget: {name} must be a positive integer (got {v!r})")
        if not isinstance(self.seeds, int) or self.seeds < 2:
            raise ValueError(f"study budget: seeds must be >= 2 for a confidence interval (got {self.seeds!r})")
        if not isinstance(self.nfe, int) or self.nfe < 2 or self.nfe % 2:
            raise ValueError(f"study budget: nfe must be an even integer >= 2 (Heun: 2 per step; got {self.nfe!r})")
        if any(n < 2 or n % 2 for n in self.nfe_curve):
            raise ValueError(f"study budget: nfe_curve values must be even integers >= 2 (got {list(self.nfe_curve)})")
        if self.lt_samples < 2 or any(not e > 0 for e in self.etas) or not self.etas:
            raise ValueError("study budget: lt_samples must be >= 2 and etas non-empty and > 0")


# The default study (embedded digits, the demo's network): 600 steps x batch 256 = 153,600 images per
# model with the paper's recipe (sit.study.run.STUDY_TRAIN), the budget at which the official
# code separates the VP cells (issue 19; the former 600 x 64 left every VP-family cell at chance).
# 6 cells x 3 seeds, sampling and evaluation included: about 37 minutes on 2 idle CPU cores
# (measured: docs/study.md, "Budget").
DEFAULT_BUDGET = Budget()
# `--quick`: 2 seeds, 400 steps x batch 64, fewer samples: about 10 minutes (the VP cells stay near chance).
QUICK_BUDGET = dataclasses.replace(DEFAULT_BUDGET, steps=400, batch=64, seeds=2, samples_per_class=10, nfe=16,
                                   nfe_curve=(4, 8, 16, 32), etas=(0.01, 1.0), path_points=1000, lt_points=12,
                                   lt_samples=64)


def select_cells(spec: str | None) -> tuple[Cell, ...]:
    """Cells from a comma list of names, "all", or None (the default cells)."""
    if spec is None or spec == "default":
        return tuple(c for c in CELLS if c.default)
    if spec == "all":
        return CELLS
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in CELL_BY_NAME]
    if unknown or not names:
        raise ValueError(f"unknown cell(s) {unknown or spec!r}; expected names from {list(CELL_BY_NAME)}, 'all' or 'default'")
    return tuple(CELL_BY_NAME[n] for n in dict.fromkeys(names))


def parse_only(spec: str, cells: tuple[Cell, ...], seeds: int) -> tuple[str, int | None]:
    """`--only CELL`, `--only CELL:SEED` or `--only CELL/SEED` -> (cell name, seed index or None)."""
    name, _, seed = spec.replace(":", "/").partition("/")
    if name not in {c.name for c in cells}:
        raise ConfigError("", "only", f"{spec!r}: unknown cell {name!r}; this study has {[c.name for c in cells]}")
    if not seed:
        return name, None
    if not seed.isdigit() or not 0 <= int(seed) < seeds:
        raise ConfigError("", "only", f"{spec!r}: seed must be an integer in 0..{seeds - 1}")
    return name, int(seed)
