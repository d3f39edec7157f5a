"""The names and kinds of the sampler table `sit.samplers.SAMPLERS`, torch-free (stdlib only).

`sit.config` (``TrainConfig.sample_method``, the preview sampler) and the flag generator need the
table's names and kinds without importing torch. ``KINDS`` (name -> kind) holds them: it starts
with the built-in rows written below, and `sit.samplers.SAMPLERS` (a `SamplerTable`) keeps it
equal to its rows, so a row added to the table (in `sit.samplers` or at run time) is a name here
too. ``kind_of`` imports `sit.samplers` only for a name not listed yet (a row added there
without a line below, or a typo). A test checks that every name below is a row of that kind.
"""

from __future__ import annotations

import importlib
from typing import Literal, get_args

# torchdiffeq's methods (sit.samplers.ode runs them; its "euler" is sit's own Euler row)
AdaptiveMethod = Literal["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"]
FixedTorchdiffeqMethod = Literal["midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "euler"]
TorchdiffeqMethod = Literal[AdaptiveMethod, FixedTorchdiffeqMethod]
ADAPTIVE_METHODS: tuple[str, ...] = get_args(AdaptiveMethod)
TORCHDIFFEQ_METHODS: tuple[str, ...] = get_args(TorchdiffeqMethod)

# name -> kind of the rows of sit.samplers.SAMPLERS (the built-in rows, in the table's order; a row
# missing here is found by kind_of, which imports the table)
KINDS: dict[str, str] = {
    "euler": "ode", "heun": "ode", "euler_maruyama": "sde", "sde_heun": "sde", "dpmpp_2m": "multistep",
    "meanflow": "average",
    **{m: "ode" for m in TORCHDIFFEQ_METHODS if m != "euler"},
    "ddpm": "discrete", "ddim": "discrete",
}


def kind_of(name: str) -> str | None:
    """The kind of sampler row ``name`` (ode | sde | multistep | discrete), None when the table has
    no such row. Imports `sit.samplers` (and torch) only for a name not listed in ``KINDS`` yet."""
    if name not in KINDS:
        importlib.import_module("sit.samplers")  # registers every row of the table in KINDS
    return KINDS.get(name)


def continuous_names(*, load: bool = False) -> tuple[str, ...]:
    """The continuous-time rows (every kind but "discrete"), in table order; ``load``: import
    `sit.samplers` first, so rows it adds without a line in ``KINDS`` are listed too."""
    if load:
        importlib.import_module("sit.samplers")
    return tuple(n for n, k in KINDS.items() if k != "discrete")
