"""Diffusion coefficients w_t of the reverse SDE (4), dX = [v - (1/2) w_t s] dt + sqrt(w_t) dW,
chosen at sampling time (paper section 3.2, math.md section 6). Paper time: t = 0 data, t = 1 noise.

``get_w(name, path, scale, eta, table)`` returns a callable t -> w_t (float32, or float64 for a
float64 t; same shape as t). Every choice is multiplied by ``scale`` except the official forms,
where ``scale`` is the official ``norm`` and enters as the official code does:

| name                  | w_t                                                  |
|-----------------------|------------------------------------------------------|
| kl                    | scale * w_KL = scale * 2 (sigma_dot sigma - alpha_dot sigma^2/alpha)  eq. (13) |
| sigma                 | scale * sigma_t                                      |
| sin2                  | scale * sin^2(pi t)                                  |
| kl_eta                | scale * w_KL sqrt(L_t / (L_t + 2 eta w_KL^2))        eq. (14), L_t from a LossTable |
| constant              | scale                                                |
| official-sbdm         | norm * w_KL              (official "SBDM")           |
| official-sigma        | 2 norm sigma_t           (official "sigma"; norm 0.5 gives sigma_t)    |
| official-linear       | 2 norm t                 (official "linear", D = norm (1 - tau))       |
| official-decreasing   | (1/2) (norm cos(pi (1 - t)) + 1)^2  (official "decreasing")            |
| official-increasing-decreasing | 2 norm sin^2(pi t) (official "inccreasing-decreasing", sic) |
| official-constant     | 2 norm                   (official "constant")       |

The official code writes the SDE with D = w/2 and tau = 1 - t; the forms above are its D times 2
in paper time. w_KL is infinite at t = 1 for Linear and GVP (alpha_1 = 0): an SDE with w_KL must
start at t = 1 - eps there. kl_eta stays finite (its limit at t -> 1 is sqrt(L_1 / (2 eta))) for
eta > 0.

`LossTable` holds the per-time velocity loss L_t needed by w_KL,eta.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from sit.paths import Path, as_coef
from sit.sampler_kinds import (  # noqa: F401
    REDUCTIONS,
    W_NAMES,
    WName,
    canonical_w,  # noqa: F401  (re-exported: the one name rule)
)


@dataclass(frozen=True)
class LossTable:
    """The per-time velocity loss L_t = E||v_theta(x_t, t) - alpha_dot x* - sigma_dot eps||^2 of a
    trained model on a t-grid, for w_KL,eta (eq. 14).

    reduction: "mean" means L_t is the mean over the D = ``dim`` dimensions of one sample (the
    official mean_flat, the default); "sum" means the sum over them (= D times the mean). eta in
    eq. (14) is only meaningful relative to this scale, so it travels with the table.
    t: increasing times in [0, 1]; loss, stderr: the Monte-Carlo estimate and its standard error
    at each t; num_samples: samples per t point (0 if unknown). ``table(t)`` interpolates linearly
    and holds the end values outside [t[0], t[-1]]."""

    t: tuple[float, ...]
    loss: tuple[float, ...]
    stderr: tuple[float, ...] = ()
    reduction: Literal["mean", "sum"] = "mean"
    dim: int = 1                  # D: number of dimensions of one sample (e.g. 4*32*32 = 4096)
    num_samples: int = 0          # Monte-Carlo samples per t point
    path: str = ""                # interpolant the model was trained on (informative)
    prediction: str = ""          # the model's prediction (L_t is always in velocity units)

    def __post_init__(self):
        object.__setattr__(self, "t", tuple(float(v) for v in self.t))
        object.__setattr__(self, "loss", tuple(float(v) for v in self.loss))
        stderr = tuple(float(v) for v in self.stderr) if len(self.stderr) else tuple(0.0 for _ in self.t)
        object.__setattr__(self, "stderr", stderr)
        n = len(self.t)
        if n < 1:
            raise ValueError("LossTable.t must hold at least one time")
        if len(self.loss) != n or len(self.stderr) != n:
            raise ValueError(
                f"LossTable.t, loss and stderr must have equal lengths (got {n}, {len(self.loss)}, {len(self.stderr)})"
            )
        if any(not (0.0 <= v <= 1.0) for v in self.t):
            raise ValueError(f"LossTable.t must lie in [0, 1] (got {list(self.t)[:4]}...)")
        if any(b <= a for a, b in zip(self.t, self.t[1:])):
            raise ValueError("LossTable.t must be strictly increasing")
        if any(not (math.isfinite(v) and v >= 0) for v in self.loss):
            raise ValueError("LossTable.loss must be finite and >= 0")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown LossTable.reduction {self.reduction!r}; expected one of {list(REDUCTIONS)}")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"LossTable.dim must be a positive integer (got {self.dim!r})")

    def __call__(self, t: Tensor | float) -> Tensor:
        """L_t at times t (any shape), linear interpolation, clamped to the end values.
        Returned in float32 (float64 for a float64 t) on t's device."""
        t = as_coef(t)
        dt = t.dtype
        grid = torch.tensor(self.t, dtype=dt, device=t.device)
        vals = torch.tensor(self.loss, dtype=dt, device=t.device)
        if len(self.t) == 1:
            return torch.full_like(t, self.loss[0])
        tc = t.clamp(grid[0], grid[-1])
        i = torch.searchsorted(grid, tc.contiguous(), right=True).clamp(1, len(self.t) - 1)
        t0, t1 = grid[i - 1], grid[i]
        w = (tc - t0) / (t1 - t0)
        return vals[i - 1] + w * (vals[i] - vals[i - 1])

    def with_reduction(self, reduction: str) -> "LossTable":
        """The same table in the other reduction ("sum" = dim * "mean")."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(REDUCTIONS)}")
        if reduction == self.reduction:
            return self
        f = self.dim if reduction == "sum" else 1.0 / self.dim
        d = asdict(self)
        d.update(reduction=reduction, loss=[v * f for v in self.loss], stderr=[v * f for v in self.stderr])
        return LossTable(**d)

    def to_json(self) -> str:
        return json.dumps({"kind": "sit.LossTable", **asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "LossTable":
        d = json.loads(text)
        d.pop("kind", None)
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LossTable field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**d)

    @classmethod
    def load(cls, path) -> "LossTable":
        with open(path) as f:
            return cls.from_json(f.read())


def kl_eta(w_kl: Tensor, L: Tensor, eta: float) -> Tensor:
    """w_KL,eta = w_KL sqrt(L / (L + 2 eta w_KL^2)), eq. (14), written as sqrt(L / (L/w_KL^2 + 2 eta))
    so that it stays finite (-> sqrt(L / (2 eta))) where w_KL is infinite and eta > 0; 0 where w_KL = 0."""
    if eta == 0:
        return w_kl
    den = L / (w_kl * w_kl) + 2 * eta
    return torch.where(w_kl > 0, torch.sqrt(L / den), torch.zeros_like(w_kl))


# w_t(path, t, scale, eta, table) for each name; t is float32/float64 (see the module table)
def _w_kl(path: Path, t: Tensor, scale: float, eta: float, table) -> Tensor:
    return scale * path.w_kl(t)  # "kl" and "official-sbdm" (norm * w_KL) are one formula


def _w_kl_eta(path: Path, t: Tensor, scale: float, eta: float, table) -> Tensor:
    L = table(t).to(t.device) if table is not None else torch.zeros_like(t)
    return scale * kl_eta(path.w_kl(t), L, eta)


W_FUNCTIONS: dict[str, Callable[[Path, Tensor, float, float, LossTable | None], Tensor]] = {
    "kl": _w_kl,
    "sigma": lambda path, t, scale, eta, table: scale * path.sigma(t),
    "sin2": lambda path, t, scale, eta, table: scale * torch.sin(math.pi * t) ** 2,
    "kl_eta": _w_kl_eta,
    "constant": lambda path, t, scale, eta, table: torch.full_like(t, scale),
    "official-sbdm": _w_kl,
    "official-sigma": lambda path, t, scale, eta, table: 2 * scale * path.sigma(t),
    "official-linear": lambda path, t, scale, eta, table: 2 * scale * t,
    "official-decreasing": lambda path, t, scale, eta, table: 0.5 * (scale * torch.cos(math.pi * (1 - t)) + 1) ** 2,
    "official-increasing-decreasing": lambda path, t, scale, eta, table: 2 * scale * torch.sin(math.pi * t) ** 2,
    "official-constant": lambda path, t, scale, eta, table: torch.full_like(t, 2 * scale),
}
assert tuple(W_FUNCTIONS) == W_NAMES


def get_w(
    name: str, path: Path, scale: float = 1.0, eta: float = 0.0, table: LossTable | None = None
) -> Callable[[Tensor], Tensor]:
    """The diffusion coefficient w_t named ``name`` (see the module table) as a callable t -> w_t.
    ``kl_eta`` needs ``table`` (a LossTable) unless eta = 0 (then it equals w_KL)."""
    key = canonical_w(name)
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)) or scale < 0:
        raise ValueError(f"w scale must be a finite number >= 0 (got {scale!r})")
    if not (isinstance(eta, (int, float)) and math.isfinite(eta)) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0 (got {eta!r})")
    if key == "kl_eta" and eta > 0 and table is None:
        raise ValueError("w 'kl_eta' with eta > 0 needs a LossTable of the model's per-time loss L_t (table=...)")
    scale, fn = float(scale), W_FUNCTIONS[key]

    def w(t: Tensor) -> Tensor:
        return fn(path, as_coef(t), scale, eta, table)

    w.name = key  # type: ignore[attr-defined]
    return w
