"""Training targets, losses and the conversions between what a network can predict, in paper
time (t = 0 data, t = 1 noise; see `sit.timegrid`).

A network predicts one of ``PREDICTIONS``:
  velocity  v(x, t) = E[alpha_dot x* + sigma_dot eps | x_t = x]          eq. (3)
  score     s(x, t) = grad log p_t(x) = -E[eps | x_t = x] / sigma_t         eq. (5)
  noise     eps_hat(x, t) = E[eps | x_t = x] = -sigma_t s
  data      x_hat*(x, t) = E[x* | x_t = x]   (x-prediction, JiT: Li & He 2025)
and the denoised estimate is x_hat* = E[x* | x_t = x] (the "data" prediction itself). All four are affine in one another at fixed
(x, t), so a single network call gives all of them. With D_t = alpha_t sigma_dot_t - alpha_dot_t sigma_t
(> 0: alpha decreases, sigma increases) and lambda_t = sigma_dot sigma - alpha_dot sigma^2 / alpha:

  x = alpha x_hat* + sigma eps_hat,    v = alpha_dot x_hat* + sigma_dot eps_hat           (1), (3)
  eps_hat = (alpha v - alpha_dot x) / D,    x_hat* = (sigma_dot x - sigma v) / D          inverse of the above
  s = -eps_hat / sigma = sigma^-1 (alpha v - alpha_dot x) / (alpha_dot sigma - alpha sigma_dot)   eq. (9)
  v = (alpha_dot / alpha) x - lambda_t s = (alpha_dot / alpha) x + (lambda_t / sigma) eps_hat      eq. (9)

Where they are finite (Linear / GVP have D = 1 / pi/2 everywhere):
  - velocity -> noise, velocity -> x_hat*: finite on all of [0, 1] (for VP at t = 0, where
    sigma_dot is infinite, they return the limits eps_hat = 0 and x_hat* = x).
  - velocity -> score, noise -> score: need sigma_t > 0, i.e. t > 0 (the score of the data is not
    determined by v or eps_hat at t = 0).
  - score -> velocity, noise -> velocity, score/noise -> x_hat*: need alpha_t > 0, i.e. t < 1 for
    Linear / GVP (at t = 1, x_t = eps carries no information on x*); finite on [0, 1] for VP
    (noise -> velocity needs t > 0 on VP, where lambda/sigma = beta/(2 sigma)).
  - score -> noise: finite everywhere.
Outside these ranges the result is +-inf or NaN by IEEE arithmetic; nothing is clamped.

From the data prediction (eq. 8-9 extended; D = alpha sigma_dot - alpha_dot sigma):
  eps_hat = (x - alpha x_hat*) / sigma,   v = (sigma_dot x - D x_hat*) / sigma,
  s = -(x - alpha x_hat*) / sigma^2.
All three divide by sigma_t and are singular at t = 0 (x_t = x*: the network sees the answer). As
JiT does (its v = (x - z) / (1 - t).clamp_min(t_eps), t_eps = 0.05, in its time where 1 is data),
the divisor is clamped: sigma_t is replaced by max(sigma_t, ``DATA_SIGMA_MIN`` = 0.05) (for the
score, sigma_t^2 by max(sigma_t, 0.05)^2), so on Linear v = (x - x_hat*) / max(t, 0.05). Above the
clamp the conversions are exact; below it (t < 0.05 on Linear / GVP-like paths) the velocity is
the clamped one in training losses and in every sampler alike. The other direction (x_hat* from
v, eps_hat or s, above) needs no clamp on Linear / GVP except alpha_t > 0 for score/noise.

Coefficients are computed in float32 (float64 when t is float64) and the result is returned in the
dtype of the prediction tensor, so a bf16 network output is combined with float32 coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from sit.config import LOSS_SPACES, LOSS_WEIGHTS, PREDICTIONS, TIME_DISTS, LossSpace, LossWeight, Prediction, TimeDist  # noqa: F401
from sit.paths import Path, as_coef, coef_dtype, expand_like
from sit.timegrid import sample_training_t


def check_prediction(prediction: str) -> str:
    """Return ``prediction`` if it is one of PREDICTIONS, else raise ValueError naming it."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {list(PREDICTIONS)}")
    return prediction


def _coefs(path: Path, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(alpha, sigma, d_alpha, d_sigma) at t, in float32/float64, broadcast to ``like``'s rank."""
    t = as_coef(t, like)
    return tuple(expand_like(c, like) for c in path.coefficients(t))  # type: ignore[return-value]


def _work(*xs: Tensor, coef: Tensor) -> list[Tensor]:
    """Cast tensors to the common dtype of themselves and the coefficients (>= float32)."""
    dt = coef.dtype
    for x in xs:
        dt = torch.promote_types(dt, x.dtype)
    return [x.to(dt) for x in xs]


# ---------------------------------------------------------------- velocity -> others
def noise_from_velocity(path: Path, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """eps_hat = (alpha v - alpha_dot x) / (alpha sigma_dot - alpha_dot sigma), from (1) and (3).
    Shapes: velocity, x (B, ...); t (B,) or scalar. Finite on [0, 1] (0 at t = 0 on VP, where sigma_dot = inf)."""
    a, s, da, ds = _coefs(path, t, x)
    v, xx = _work(velocity, x, coef=a)
    return ((a * v - da * xx) / (a * ds - da * s)).to(velocity.dtype)


def x_star_from_velocity(path: Path, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """x_hat* = (sigma_dot x - sigma v) / (alpha sigma_dot - alpha_dot sigma), from (1) and (3).
    Shapes: velocity, x (B, ...); t (B,) or scalar. Finite on [0, 1] for Linear/GVP; for VP on
    [0, 1] too (sigma_dot is infinite at t = 0, where the limit x_hat* = x is returned)."""
    a, s, da, ds = _coefs(path, t, x)
    v, xx = _work(velocity, x, coef=a)
    den = a * ds - da * s
    out = (ds * xx - s * v) / den
    if not torch.isfinite(ds).all():
        # VP at t = 0: sigma_dot = inf; use x_hat* = (x - sigma eps_hat) / alpha (-> x there)
        alt = (xx - s * ((a * v - da * xx) / den)) / a
        out = torch.where(torch.isfinite(ds), out, alt)
    return out.to(velocity.dtype)


def score_from_velocity(path: Path, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """s = sigma_t^-1 (alpha_t v - alpha_dot_t x) / (alpha_dot_t sigma_t - alpha_t sigma_dot_t), eq. (9).
    Shapes: velocity, x (B, ...); t (B,) or scalar. Singular at t = 0 (sigma_0 = 0); finite on (0, 1]."""
    a, s, da, ds = _coefs(path, t, x)
    v, xx = _work(velocity, x, coef=a)
    return ((a * v - da * xx) / (s * (da * s - a * ds))).to(velocity.dtype)


# ---------------------------------------------------------------- others -> velocity
def velocity_from_score(path: Path, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """v = (alpha_dot/alpha) x - lambda_t s with lambda_t = sigma_dot sigma - alpha_dot sigma^2 / alpha, eq. (9).
    Shapes: score, x (B, ...); t (B,) or scalar. Needs alpha_t > 0: infinite/NaN at t = 1 for
    Linear/GVP; finite on [0, 1] for VP (lambda_t = beta_t / 2)."""
    a, s, da, ds = _coefs(path, t, x)
    sc, xx = _work(score, x, coef=a)
    lam = expand_like(path.lam(as_coef(t, x)), x)
    return (da / a * xx - lam * sc).to(score.dtype)


def velocity_from_noise(path: Path, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """v = alpha_dot x_hat* + sigma_dot eps_hat with x_hat* = (x - sigma eps_hat) / alpha
    (= (alpha_dot/alpha) x + (lambda_t/sigma_t) eps_hat, eq. 9). Shapes: noise, x (B, ...); t (B,).
    Needs alpha_t > 0 (t < 1 on Linear/GVP) and, for VP, t > 0 (sigma_dot infinite at 0)."""
    a, s, da, ds = _coefs(path, t, x)
    e, xx = _work(noise, x, coef=a)
    return (da * (xx - s * e) / a + ds * e).to(noise.dtype)


# ---------------------------------------------------------------- score <-> noise, x_hat*
def noise_from_score(path: Path, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """eps_hat = -sigma_t s (definition of s, eq. 5). Finite everywhere."""
    a, s, _, _ = _coefs(path, t, x)
    (sc,) = _work(score, coef=a)
    return (-s * sc).to(score.dtype)


def score_from_noise(path: Path, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """s = -eps_hat / sigma_t (eq. 5). Singular at t = 0."""
    a, s, _, _ = _coefs(path, t, x)
    (e,) = _work(noise, coef=a)
    return (-e / s).to(noise.dtype)


def x_star_from_noise(path: Path, noise: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """x_hat* = (x - sigma_t eps_hat) / alpha_t (eq. 1). Needs alpha_t > 0 (t < 1 on Linear/GVP)."""
    a, s, _, _ = _coefs(path, t, x)
    e, xx = _work(noise, x, coef=a)
    return ((xx - s * e) / a).to(noise.dtype)


def x_star_from_score(path: Path, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """x_hat* = (x + sigma_t^2 s) / alpha_t (Tweedie). Needs alpha_t > 0 (t < 1 on Linear/GVP)."""
    a, s, _, _ = _coefs(path, t, x)
    sc, xx = _work(score, x, coef=a)
    return ((xx + s * s * sc) / a).to(score.dtype)


# ---------------------------------------------------------------- data (x-prediction) -> others
DATA_SIGMA_MIN = 0.05  # JiT's t_eps: the divisor sigma_t of every conversion from x_hat* is clamped to this


def _clamped_sigma(s: Tensor, sigma_min: float) -> Tensor:
    if not sigma_min >= 0:
        raise ValueError(f"sigma_min must be >= 0 (got {sigma_min!r})")
    return s.clamp_min(sigma_min) if sigma_min > 0 else s


def velocity_from_data(path: Path, data: Tensor, x: Tensor, t: Tensor, sigma_min: float = DATA_SIGMA_MIN) -> Tensor:
    """v = (sigma_dot x - D x_hat*) / max(sigma_t, sigma_min), D = alpha sigma_dot - alpha_dot sigma
    (Linear: (x - x_hat*) / max(t, sigma_min), JiT). Exact where sigma_t >= sigma_min; sigma_min = 0:
    unclamped (infinite at t = 0)."""
    a, s, da, ds = _coefs(path, t, x)
    d, xx = _work(data, x, coef=a)
    return ((ds * xx - (a * ds - da * s) * d) / _clamped_sigma(s, sigma_min)).to(data.dtype)


def noise_from_data(path: Path, data: Tensor, x: Tensor, t: Tensor, sigma_min: float = DATA_SIGMA_MIN) -> Tensor:
    """eps_hat = (x - alpha x_hat*) / max(sigma_t, sigma_min) (eq. 1)."""
    a, s, _, _ = _coefs(path, t, x)
    d, xx = _work(data, x, coef=a)
    return ((xx - a * d) / _clamped_sigma(s, sigma_min)).to(data.dtype)


def score_from_data(path: Path, data: Tensor, x: Tensor, t: Tensor, sigma_min: float = DATA_SIGMA_MIN) -> Tensor:
    """s = -(x - alpha x_hat*) / max(sigma_t, sigma_min)^2 (Tweedie)."""
    a, s, _, _ = _coefs(path, t, x)
    d, xx = _work(data, x, coef=a)
    return (-(xx - a * d) / _clamped_sigma(s, sigma_min) ** 2).to(data.dtype)


# ---------------------------------------------------------------- generic dispatch
# eq. (9) between the velocity and the other predictions ("velocity" itself is the identity)
_TO_VELOCITY = {"score": velocity_from_score, "noise": velocity_from_noise, "data": velocity_from_data}
_FROM_VELOCITY = {"score": score_from_velocity, "noise": noise_from_velocity, "data": x_star_from_velocity}
_FROM_DATA = {"velocity": velocity_from_data, "noise": noise_from_data, "score": score_from_data}


def to_velocity(path: Path, prediction: str, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """Velocity from a network output ``out`` that predicts ``prediction`` (eq. 9)."""
    check_prediction(prediction)
    if prediction == "velocity":
        return out
    return _TO_VELOCITY[prediction](path, out, x, t)


def from_velocity(path: Path, prediction: str, velocity: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """The ``prediction`` (velocity, score, noise or data) that corresponds to ``velocity`` (eq. 9)."""
    check_prediction(prediction)
    if prediction == "velocity":
        return velocity
    return _FROM_VELOCITY[prediction](path, velocity, x, t)


def convert(path: Path, src: str, dst: str, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """Convert a prediction between any two of PREDICTIONS (and ``"x_star"`` as a target).
    Goes directly where a direct formula exists (score <-> noise, anything -> data, data -> anything),
    otherwise through velocity. ``"x_star"`` is the same as ``"data"``."""
    check_prediction(src)
    if dst in ("x_star", "data"):
        return to_x_star(path, src, out, x, t)
    check_prediction(dst)
    if src == dst:
        return out
    if src == "data":
        return _FROM_DATA[dst](path, out, x, t)
    if (src, dst) == ("score", "noise"):
        return noise_from_score(path, out, x, t)
    if (src, dst) == ("noise", "score"):
        return score_from_noise(path, out, x, t)
    return from_velocity(path, dst, to_velocity(path, src, out, x, t), x, t)


def to_x_star(path: Path, prediction: str, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """The denoised estimate x_hat* = E[x* | x_t = x] from a ``prediction`` output."""
    check_prediction(prediction)
    if prediction == "data":
        return out
    if prediction == "velocity":
        return x_star_from_velocity(path, out, x, t)
    if prediction == "score":
        return x_star_from_score(path, out, x, t)
    return x_star_from_noise(path, out, x, t)


def velocity_field(
    model_fn: Callable[..., Tensor], path: Path, prediction: str = "velocity", y: Tensor | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """Turn a prediction function ``model_fn(x, t, y)`` (paper time, t of shape (B,)) into a
    velocity field ``field(x, t) -> v`` for the samplers, converting by eq. (9) when the model
    predicts the score, the noise or the data (clamped: `velocity_from_data`). A scalar t is expanded to (B,)."""
    check_prediction(prediction)

    def field(x: Tensor, t: Tensor, r: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if r is not None:  # an average-velocity (MeanFlow) model: u(x, r, t), a velocity model's own units
            if prediction != "velocity":
                raise ValueError(f"an average velocity u(x, r, t) needs a velocity model (got prediction {prediction!r})")
            return model_fn(x, t, y, r=r)
        out = model_fn(x, t, y)
        return to_velocity(path, prediction, out, x, t)

    field.path = path  # type: ignore[attr-defined]
    field.prediction = prediction  # type: ignore[attr-defined]
    return field


# ---------------------------------------------------------------- losses
def mean_flat(x: Tensor) -> Tensor:
    """Mean over all non-batch dimensions: (B, ...) -> (B,) (official ``mean_flat``)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def default_t_range(path: Path, prediction: str) -> tuple[float, float]:
    """Official training time range in paper time (math.md section 4), `Path.train_t_range`:
    VP [1e-5, 1] for every prediction; Linear/GVP velocity and data [0, 1], score/noise [1e-3, 1 - 1e-3]."""
    return path.train_t_range(check_prediction(prediction))


@dataclass(frozen=True)
class LossConfig:
    """Continuous-time training objective (math.md section 4).

    prediction: what the network outputs; loss_weight (official names) applies to score/noise:
      None          L_s (6): ||sigma s + eps||^2 (noise: ||eps_hat - eps||^2, the same residual)
      "velocity"    L_s_lambda: (lambda/sigma)^2 ||sigma s + eps||^2 = velocity loss of the converted model
      "likelihood"  (lambda/sigma^2) ||sigma s + eps||^2 = (1/2) w_KL ||s + eps/sigma||^2 (max. likelihood)
    The velocity loss L_v (7) is never weighted (a weight with prediction="velocity" is an error;
    the official code silently ignores it). With prediction="noise" a weight is applied to the
    same residual (the official code ignores it for noise; here it is honoured).
    t ~ time_dist on [t_min, t_max]; None means the official range of `default_t_range`.
    prediction="data" (x-prediction) regresses x_hat* on x*: ||x_hat* - x*||^2 (unweighted).
    loss_space (None = the prediction's own space): the squared error is taken after converting the
      prediction AND its target by `convert` (prediction -> loss_space) at the same (x_t, t); the
      conversion is affine in the prediction, so this is ||J (pred - target)||^2. JiT: prediction
      "data", loss_space "velocity" = ||x_hat* - x*||^2 (D / max(sigma, 0.05))^2; noise with
      loss_space "velocity" equals loss_weight "velocity" (L_s_lambda). It is unweighted (a
      loss_weight with it is an error)."""

    prediction: Prediction = "velocity"
    loss_weight: LossWeight = None
    t_min: float | None = None
    t_max: float | None = None
    time_dist: TimeDist = "uniform"
    loc: float = 0.0      # logit-normal location (of the logit of u, before mapping to [t_min, t_max])
    scale: float = 1.0    # logit-normal scale
    loss_space: LossSpace = None

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"LossConfig.prediction: unknown prediction {self.prediction!r}; expected one of {list(PREDICTIONS)}")
        if self.loss_space not in LOSS_SPACES:
            raise ValueError(f"LossConfig.loss_space: unknown space {self.loss_space!r}; expected one of {list(LOSS_SPACES)}")
        if self.loss_weight is not None and (self.prediction == "data" or self.loss_space is not None):
            raise ValueError(f"LossConfig.loss_weight={self.loss_weight!r} weights the score/noise residual; it does not "
                             "combine with prediction 'data' or a loss_space")
        if self.loss_weight not in LOSS_WEIGHTS:
            raise ValueError(f"LossConfig.loss_weight: unknown loss weight {self.loss_weight!r}; expected one of {list(LOSS_WEIGHTS)}")
        if self.prediction == "velocity" and self.loss_weight is not None:
            raise ValueError(
                f"LossConfig.loss_weight={self.loss_weight!r} needs prediction 'score' or 'noise'; the velocity loss (7) is unweighted"
            )
        if self.time_dist not in TIME_DISTS:
            raise ValueError(f"LossConfig.time_dist: unknown time distribution {self.time_dist!r}; expected one of {list(TIME_DISTS)}")
        for name in ("t_min", "t_max"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"LossConfig.{name} must be a number in [0, 1] or None (got {v!r})")
        if self.t_min is not None and self.t_max is not None and not self.t_min < self.t_max:
            raise ValueError(f"LossConfig.t_min must be < t_max (got {self.t_min}, {self.t_max})")
        if not math.isfinite(self.loc):
            raise ValueError(f"LossConfig.loc must be finite (got {self.loc})")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"LossConfig.scale must be a finite number > 0 (got {self.scale})")

    def t_range(self, path: Path) -> tuple[float, float]:
        """(t_min, t_max) with the official defaults filled in for ``path``."""
        lo, hi = default_t_range(path, self.prediction)
        lo = lo if self.t_min is None else float(self.t_min)
        hi = hi if self.t_max is None else float(self.t_max)
        if not lo < hi:
            raise ValueError(f"LossConfig: resolved t_min must be < t_max (got {lo}, {hi}) for path {path!r}")
        return lo, hi


def loss_weight(path: Path, t: Tensor, weight: str | None) -> Tensor:
    """Per-sample weight of the residual ||sigma s + eps||^2: 1, (lambda/sigma)^2 or lambda/sigma^2.
    lambda/sigma = sigma_dot - alpha_dot sigma / alpha (finite at t = 0 on Linear/GVP, infinite at t = 1)."""
    if weight not in LOSS_WEIGHTS:
        raise ValueError(f"unknown loss weight {weight!r}; expected one of {list(LOSS_WEIGHTS)}")
    a, s, da, ds = path.coefficients(t)
    if weight is None:
        return torch.ones_like(a)
    lam_over_sigma = ds - da * s / a
    if path.singular_at_0:  # sigma_dot_0 = inf: the closed-form lambda_t (VP: beta_t / 2) instead
        lam_over_sigma = path.lam(t) / s
    if weight == "velocity":
        return lam_over_sigma**2
    return lam_over_sigma / s


def training_losses(
    model_fn: Callable[..., Tensor],
    path: Path,
    x_star: Tensor,
    cfg: LossConfig,
    *,
    y: Tensor | None = None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Per-sample continuous-time losses (math.md section 4) for one batch.

    Draws t ~ cfg.time_dist on cfg.t_range(path) and eps ~ N(0, I) unless given, forms
    x_t = alpha_t x* + sigma_t eps (1), calls ``model_fn(x_t, t, y)`` once and returns
      loss (B,)   mean over non-batch dims of the (weighted) squared residual (official mean_flat);
                  the batch loss is ``loss.mean()``
      t (B,), x_t, eps, pred (the network output), target (what pred regresses on:
      alpha_dot x* + sigma_dot eps for velocity (7), -eps/sigma for score (6), eps for noise, x*
      for data), weight (B,) (ones for an unweighted loss). With ``cfg.loss_space`` the loss is
      mean_flat((convert(pred) - convert(target))^2) in that space (`LossConfig`).
    Times are float32 (float64 when x_star is float64)."""
    if not isinstance(cfg, LossConfig):
        raise TypeError(f"cfg must be a LossConfig (got {type(cfg).__name__})")
    t = _training_t(path, x_star, cfg, t, generator)
    if eps is None:
        eps = torch.randn(x_star.shape, generator=generator, device=x_star.device, dtype=x_star.dtype)
    elif eps.shape != x_star.shape:
        raise ValueError(f"eps must have the shape of x_star {tuple(x_star.shape)} (got {tuple(eps.shape)})")
    x_t = path.x_t(x_star, eps, t)
    pred = model_fn(x_t, t, y)
    if pred.shape != x_star.shape:
        raise ValueError(f"model output has shape {tuple(pred.shape)}; expected x's shape {tuple(x_star.shape)}")
    loss, target, weight = _loss(path, cfg, pred, x_star, eps, x_t, t)
    return {"loss": loss, "t": t, "x_t": x_t, "eps": eps, "pred": pred, "target": target.to(pred.dtype), "weight": weight}


def _training_t(path: Path, x_star: Tensor, cfg: LossConfig, t: Tensor | None, generator) -> Tensor:
    """The batch's times (B,): drawn from cfg.time_dist on cfg.t_range(path) when ``t`` is None,
    else ``t`` checked (a scalar broadcast; half-precision and integer times as float32)."""
    B = x_star.shape[0]
    tdt = coef_dtype(x_star)
    if t is None:
        lo, hi = cfg.t_range(path)
        return sample_training_t(
            B, lo, hi, cfg.time_dist, loc=cfg.loc, scale=cfg.scale, generator=generator, device=x_star.device, dtype=tdt
        )
    t = torch.as_tensor(t, device=x_star.device)
    if t.ndim == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"t must have shape ({B},) (got {tuple(t.shape)})")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)  # float32 and float64 times are kept as given
    return t


def _loss(path: Path, cfg: LossConfig, pred: Tensor, x_star: Tensor, eps: Tensor, x_t: Tensor, t: Tensor):
    """(loss (B,), target, weight (B,)) of `training_losses`: the squared residual in the prediction's
    space (score / noise weighted by cfg.loss_weight) or in cfg.loss_space."""
    a, s, da, ds = _coefs(path, t, x_star)
    p, xs, e = _work(pred, x_star, eps, coef=a)
    space = cfg.loss_space
    if space is not None and space != cfg.prediction:
        target = {"velocity": da * xs + ds * e, "score": -e / s, "noise": e, "data": xs}[cfg.prediction]
        xw = x_t.to(p.dtype)
        diff = convert(path, cfg.prediction, space, p, xw, t) - convert(path, cfg.prediction, space, target, xw, t)
        weight = torch.ones_like(t, dtype=a.dtype)
        loss = mean_flat(diff**2)
    elif cfg.prediction in ("velocity", "data"):
        target = da * xs + ds * e if cfg.prediction == "velocity" else xs
        weight = torch.ones_like(t, dtype=a.dtype)
        loss = mean_flat((p - target) ** 2)
    else:
        weight = loss_weight(path, t.to(a.dtype), cfg.loss_weight)
        if cfg.prediction == "score":
            target = -e / s
            resid = s * p + e
        else:
            target = e
            resid = p - e
        loss = weight * mean_flat(resid**2)
    return loss, target, weight
