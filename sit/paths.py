"""Interpolants (paths) x_t = alpha_t x* + sigma_t eps, SiT eq. (1), in paper time
(t = 0 data, t = 1 noise; see `sit.timegrid`).

Linear and GVP are eq. (12); SBDM-VP is eqs. (10)-(11) with beta_t linear from beta_min to
beta_max. A new interpolant only needs `alpha` and `sigma`: `CustomPath` differentiates them by
autograd unless derivatives are given.

Every coefficient is computed in float32 (or float64 when t is float64), whatever the network
dtype, and returned with t's shape; `expand_like` broadcasts a (B,) time to a tensor's rank.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sit.config import PATH_NAMES  # the choice types live in sit.config

# official endpoint offsets (willisma/SiT transport.create_transport / check_interval)
TRAIN_EPS = 1e-3         # score/noise models on Linear/GVP: train on [1e-3, 1 - 1e-3]
TRAIN_EPS_SINGULAR = 1e-5  # paths singular at t = 0 (SBDM-VP): train on [1e-5, 1]
SAMPLE_EPS = 1e-3        # sampling stops (or starts) this far from a singular endpoint


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample time t (B,) or scalar to x's rank: (B, 1, 1, ...)."""
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or (t.shape[0] != x.shape[0] and t.shape[0] != 1):
        raise ValueError(f"t must have shape (batch,) = ({x.shape[0]},) or be a scalar; got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def coef_dtype(*xs: Tensor) -> torch.dtype:
    """The dtype coefficients are computed in: float64 when any of ``xs`` is float64, else
    float32 (also for bf16/fp16/integer inputs, so a low-precision network output is combined
    with full-precision coefficients). The one rule of the math core."""
    return torch.float64 if any(getattr(x, "dtype", None) == torch.float64 for x in xs) else torch.float32


def as_coef(t, *like: Tensor) -> Tensor:
    """t as a tensor in ``coef_dtype(t, *like)`` (on the device of the first of ``like``, if any)."""
    t = torch.as_tensor(t, device=like[0].device if like else None)
    return t.to(coef_dtype(t, *like))


class Path:
    """An interpolant: alpha_t decreasing from 1 to ~0, sigma_t increasing from 0 to ~1.

    Subclasses define ``alpha``, ``sigma``, ``d_alpha`` and ``d_sigma`` (alpha-dot, sigma-dot)
    on tensors of times. Derived quantities:
      lambda_t = sigma_dot sigma - alpha_dot sigma^2 / alpha   (> 0; from eq. 8)
      w_KL(t)  = 2 lambda_t                                    (eq. 13)
    """

    name: str = "path"

    @property
    def alpha_1_zero(self) -> bool:
        """alpha_1 = 0 (Linear, GVP): x_1 = eps is pure noise, so score/noise -> velocity (9) and
        w_KL (13) are infinite at t = 1. Computed from alpha(1) (|alpha_1| < 1e-6) unless a
        subclass states it."""
        return abs(float(self.alpha(torch.ones(1, dtype=torch.float64))[0])) < 1e-6

    @property
    def singular_at_0(self) -> bool:
        """alpha_dot or sigma_dot is infinite at t = 0 (SBDM-VP: sigma_dot_0 = inf), so even a
        velocity field's conversions (noise, x_hat*) and the training target are singular there.
        (Score conversions need sigma_t > 0, t > 0, on every path.) Computed unless stated."""
        zero = torch.zeros(1, dtype=torch.float64)
        with torch.no_grad():
            d0 = torch.stack([self.d_alpha(zero), self.d_sigma(zero)])
        return not bool(torch.isfinite(d0).all())

    def train_t_range(self, prediction: str = "velocity") -> tuple[float, float]:
        """Official training range (t_min, t_max) (math.md section 4): [1e-5, 1] on a path singular
        at t = 0 (VP); [0, 1] for velocity models otherwise; score/noise models stay 1e-3 away
        from t = 0 and (where alpha_1 = 0) from t = 1; data (x-prediction) models as velocity ones
        (their conversions divide by a clamped sigma_t, `sit.objectives.DATA_SIGMA_MIN`)."""
        if self.singular_at_0:
            return TRAIN_EPS_SINGULAR, 1.0
        if prediction in ("velocity", "data"):
            return 0.0, 1.0
        return TRAIN_EPS, (1.0 - TRAIN_EPS) if self.alpha_1_zero else 1.0

    def sample_t_range(self, prediction: str = "velocity") -> tuple[float, float]:
        """Default ODE sampling range (t_start, t_end), t_start > t_end: start at 1, or 1 - 1e-3
        where a score/noise model is infinite at t = 1 (alpha_1 = 0); end at 0 for velocity models,
        else (singular at 0, or a score/noise model) at 1e-3. Data (x-prediction) models as velocity
        ones: finite at t = 1, and at t = 0 by the clamp of `sit.objectives.velocity_from_data`."""
        exact = prediction in ("velocity", "data")
        start = 1.0 - SAMPLE_EPS if (self.alpha_1_zero and not exact) else 1.0
        end = SAMPLE_EPS if (self.singular_at_0 or not exact) else 0.0
        return start, end

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha_t, sigma_t, d_alpha_t, d_sigma_t) in one call."""
        t = as_coef(t)
        return self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)

    def lam(self, t: Tensor) -> Tensor:
        """lambda_t = sigma_dot sigma - alpha_dot sigma^2 / alpha (so v = (alpha_dot/alpha) x - lambda_t s,
        eq. 9). Infinite at t = 1 for Linear and GVP (alpha_1 = 0); 0 at t = 0 for Linear/GVP."""
        a, s, da, ds = self.coefficients(t)
        return ds * s - da * s * s / a

    def w_kl(self, t: Tensor) -> Tensor:
        """w_KL(t) = 2 (sigma_dot sigma - alpha_dot sigma^2 / alpha), eq. (13); equals beta_t for SBDM-VP.
        Infinite at t = 1 for Linear and GVP."""
        return 2 * self.lam(t)

    def x_t(self, x_star: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x* + sigma_t eps, eq. (1). x_star, eps (B, ...); t (B,)."""
        a, s = self.alpha(as_coef(t)), self.sigma(as_coef(t))
        a, s = expand_like(a, x_star), expand_like(s, x_star)
        return (a * x_star + s * eps).to(x_star.dtype)

    def velocity_target(self, x_star: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """d/dt x_t = alpha_dot x* + sigma_dot eps, the regression target of L_v (eq. 7)."""
        da, ds = self.d_alpha(as_coef(t)), self.d_sigma(as_coef(t))
        da, ds = expand_like(da, x_star), expand_like(ds, x_star)
        return (da * x_star + ds * eps).to(x_star.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Path):
    """alpha_t = 1 - t, sigma_t = t (eq. 12)."""

    name = "linear"
    alpha_1_zero = True
    singular_at_0 = False

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t.clone() if isinstance(t, Tensor) else t

    def d_alpha(self, t):
        return torch.full_like(t, -1.0)

    def d_sigma(self, t):
        return torch.ones_like(t)


class GVP(Path):
    """alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2) (eq. 12); alpha^2 + sigma^2 = 1."""

    name = "gvp"
    alpha_1_zero = True    # cos(pi / 2) ~ 6e-17
    singular_at_0 = False

    def alpha(self, t):
        return torch.cos(t * (math.pi / 2))

    def sigma(self, t):
        return torch.sin(t * (math.pi / 2))

    def d_alpha(self, t):
        return -(math.pi / 2) * torch.sin(t * (math.pi / 2))

    def d_sigma(self, t):
        return (math.pi / 2) * torch.cos(t * (math.pi / 2))


class VP(Path):
    """SBDM-VP, eqs. (10)-(11): alpha_t = exp(-B(t)/2), sigma_t = sqrt(1 - exp(-B(t))), with
    B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 and beta_t = beta_min + (beta_max - beta_min) t.
    Never reaches pure noise (alpha_1 ~ 6.6e-3 for the official 0.1 -> 20); sigma_dot is singular
    at t = 0."""

    name = "vp"
    singular_at_0 = True   # sigma_dot_0 = inf (alpha_1 ~ 6.6e-3 for 0.1 -> 20: alpha_1_zero is computed)

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (0 <= beta_min < beta_max and math.isfinite(beta_max)):
            raise ValueError(f"VP needs 0 <= beta_min < beta_max < inf (got {beta_min}, {beta_max})")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def B(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def alpha(self, t):
        return torch.exp(-0.5 * self.B(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.B(t)))

    def d_alpha(self, t):
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t):
        # beta e^{-B} / (2 sigma); singular at t = 0 where sigma = 0
        return 0.5 * self.beta(t) * torch.exp(-self.B(t)) / self.sigma(t)

    def lam(self, t):
        # closed form: lambda_t = beta_t / 2 (so w_KL = beta_t), finite everywhere
        return 0.5 * self.beta(as_coef(t))

    def __repr__(self):
        return f"VP(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CustomPath(Path):
    """A user interpolant from callables alpha(t), sigma(t) (torch ops on a tensor t).
    Derivatives come from autograd unless ``d_alpha`` / ``d_sigma`` are given."""

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        d_alpha: Callable[[Tensor], Tensor] | None = None,
        d_sigma: Callable[[Tensor], Tensor] | None = None,
        name: str = "custom",
    ):
        self._alpha, self._sigma = alpha, sigma
        self._d_alpha, self._d_sigma = d_alpha, d_sigma
        self.name = name

    @staticmethod
    def _grad(fn, t):
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(tt).sum(), tt)
        return g.detach()

    def alpha(self, t):
        return self._alpha(t)

    def sigma(self, t):
        return self._sigma(t)

    def d_alpha(self, t):
        return self._d_alpha(t) if self._d_alpha else self._grad(self._alpha, t)

    def d_sigma(self, t):
        return self._d_sigma(t) if self._d_sigma else self._grad(self._sigma, t)

    def __repr__(self):
        return f"CustomPath(name={self.name!r})"


PATHS: dict[str, type[Path]] = {"linear": Linear, "gvp": GVP, "vp": VP}
assert tuple(PATHS) == PATH_NAMES


def get_path(name: str | Path, **kwargs) -> Path:
    """Path by name ('linear', 'gvp', 'vp'; case-insensitive; 'sbdm-vp' is an alias of 'vp')."""
    if isinstance(name, Path):
        return name
    key = str(name).lower().replace("sbdm-", "").replace("sbdm_", "")
    if key not in PATHS:
        raise ValueError(f"unknown path (interpolant) {name!r}; expected one of {sorted(PATHS)}")
    return PATHS[key](**kwargs)
