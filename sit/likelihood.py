"""Log-likelihood through the probability-flow ODE, and the path length C(v) of Fig. 4.

Paper time (see `sit.timegrid`): t = 0 data, t = 1 noise. The probability-flow ODE (2),
dX/dt = v(X, t), carries the data density p_0 to p_1 with
    d/dt log p_t(X_t) = -div v(X_t, t),
so, integrating from the data point X_0 = x (t = 0) up to t = 1 (math.md section 6):
    log p_0(x) = log p_1(X_1) + int_0^1 div v(X_t, t) dt.
The divergence is exact (D backward passes: small dimensions only) or a Hutchinson estimate
z^T (dv/dx) z with Rademacher probes z, fixed along one trajectory (unbiased; one backward pass
per probe and evaluation). The ODE runs through torchdiffeq (adaptive dopri5 by default, or any
of its fixed-grid methods with ``num_steps`` steps).

Prior: log p_1 is taken as log N(X_1; 0, I), the convention of the paper and the official code,
for every path. It is exact for Linear and GVP (alpha_1 = 0, sigma_1 = 1). For SBDM-VP
(alpha_1 ~ 6.6e-3) the true p_1 is the data law pushed to t = 1, not exactly N(0, I); pass
``prior_logp`` (a function X_1 -> log p_1(X_1), shape (B,)) when the exact p_1 is known.

Units: nats per sample; bits/dim = -log p / (D ln 2) for continuous data. For 8-bit data mapped
(with uniform dequantisation noise, ``uniform_dequantize``) onto an interval of width W, the
dequantised bits/dim add log2(256 / W) (+8 for [0, 1], +7 for [-1, 1]). ``data_scale`` = s
reports the density of the unscaled variable y = x / s (log p_y = log p_x + D log s), e.g. for
latents multiplied by 0.18215.

Path length (Fig. 4): C(v) = int_0^1 E|v(x_t, t)|^2 dt, Monte-Carlo over t ~ U[t_min, t_max]
(times t_max - t_min) and pairs (x*, eps). |v|^2 is the squared Euclidean norm **summed over the
dimensions of one sample** (the paper's |.|^2; ``reduction="mean"`` divides by D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from sit.config import MAX_STEPS
from sit.paths import Path, coef_dtype
from sit.sampler_kinds import DIVERGENCES
from sit.samplers.ode import ADAPTIVE_METHODS

Field = Callable[..., Tensor]  # field(x, t) -> velocity (or field(x, t, y) for labelled batches)

FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
REDUCTIONS = ("sum", "mean")


@dataclass
class LikelihoodResult:
    """Per-sample results of ``log_likelihood``; every tensor has shape (B,).

    logp: log p(x) in nats (mean over probes for Hutchinson). bpd: -logp / (D ln 2).
    bpd_dequantized: bpd + log2(256 / W) when an interval width W was given, else None.
    logp_stderr: standard error of logp over the Hutchinson probes of one sample (0 for the exact
    divergence, nan with a single probe). prior_logp: log p_1(X_1); delta_logp: int div v dt.
    x_end: X at t_noise, (B, ...). nfe: field evaluations. dim: D."""

    logp: Tensor
    bpd: Tensor
    bpd_dequantized: Tensor | None
    logp_stderr: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    x_end: Tensor
    nfe: int
    dim: int

    def summary(self) -> dict[str, float]:
        """Batch means with their standard errors across samples (which include the probe noise):
        nats, nats_se, bpd, bpd_se and, with dequantisation, bpd_dequantized (same se)."""
        n = self.logp.numel()

        def se(v: Tensor) -> float:
            return float(v.double().std() / math.sqrt(n)) if n > 1 else float("nan")

        out = {
            "nats": float(self.logp.double().mean()),
            "nats_se": se(self.logp),
            "bpd": float(self.bpd.double().mean()),
            "bpd_se": se(self.bpd),
            "num_samples": n,
            "dim": self.dim,
            "nfe": self.nfe,
        }
        if self.bpd_dequantized is not None:
            out["bpd_dequantized"] = float(self.bpd_dequantized.double().mean())
        return out


def standard_normal_logp(x: Tensor) -> Tensor:
    """log N(x; 0, I) summed over the non-batch dims, (B,)."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * (flat * flat).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def rademacher(shape, generator=None, device=None, dtype=torch.float32) -> Tensor:
    """Independent +-1 entries with probability 1/2."""
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(dtype)


def uniform_dequantize(pixels: Tensor, low: float = -1.0, high: float = 1.0, generator=None) -> Tensor:
    """8-bit pixels (integers 0..255) to x = low + (high - low) (pixel + u) / 256, u ~ U[0, 1):
    continuous data on [low, high) whose likelihood bounds the discrete one (interval width
    W = high - low; add log2(256 / W) bits/dim, see ``log_likelihood``)."""
    if not high > low:
        raise ValueError(f"uniform_dequantize needs high > low (got low={low}, high={high})")
    p = pixels.to(torch.float32 if not pixels.is_floating_point() else pixels.dtype)
    if (p < 0).any() or (p > 255).any():
        raise ValueError("uniform_dequantize expects 8-bit pixel values in [0, 255]")
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return low + (high - low) * (p + u) / 256.0


def _divergence(v: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
    """div v at x: exact (probes None; D backward passes) -> (B, 1), or Hutchinson
    z^T J z for each probe z in probes (P, B, ...) -> (B, P)."""
    B = x.shape[0]
    if probes is None:
        vf = v.reshape(B, -1)
        D = vf.shape[1]
        div = torch.zeros(B, dtype=v.dtype, device=v.device)
        for i in range(D):
            (g,) = torch.autograd.grad(vf[:, i].sum(), x, retain_graph=True)
            div = div + g.reshape(B, -1)[:, i]
        return div[:, None]
    outs = []
    for p in range(probes.shape[0]):
        (g,) = torch.autograd.grad(v, x, grad_outputs=probes[p], retain_graph=p < probes.shape[0] - 1)
        outs.append((g * probes[p]).reshape(B, -1).sum(1))
    return torch.stack(outs, dim=1)


def _call(fn: Field, x: Tensor, t: Tensor, y: Any) -> Tensor:
    return fn(x, t) if y is None else fn(x, t, y)


def _check_likelihood_args(method, num_steps, divergence, num_probes, t_data, t_noise, interval_width, data_scale):
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {list(DIVERGENCES)}")
    if method not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; expected one of {list(ADAPTIVE_METHODS + FIXED_METHODS)}")
    if method in FIXED_METHODS and (
        not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= MAX_STEPS
    ):
        raise ValueError(f"fixed-step method {method!r} needs num_steps in [1, {MAX_STEPS}] (got {num_steps!r})")
    if not isinstance(num_probes, int) or isinstance(num_probes, bool) or num_probes < 1:
        raise ValueError(f"num_probes must be an integer >= 1 (got {num_probes!r})")
    for name, v in (("t_data", t_data), ("t_noise", t_noise)):
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1] (t = 0 data, t = 1 noise); got {v!r}")
    if not t_noise > t_data:
        raise ValueError(f"t_noise must be greater than t_data (data -> noise); got {t_data} -> {t_noise}")
    if interval_width is not None and not (math.isfinite(interval_width) and interval_width > 0):
        raise ValueError(f"interval_width must be a finite number > 0 (got {interval_width!r})")
    if not (math.isfinite(data_scale) and data_scale > 0):
        raise ValueError(f"data_scale must be a finite number > 0 (got {data_scale!r})")


def _result(prior: Tensor, delta: Tensor, x_end: Tensor, probes, nfe: int, data_scale: float, interval_width):
    """LikelihoodResult from log p_1(X_1) (B,) and the integrated divergence per probe (B, P)."""
    B, P, D = delta.shape[0], delta.shape[1], x_end[0].numel()
    logp_p = prior[:, None] + delta + D * math.log(data_scale)  # (B, P)
    logp = logp_p.mean(1)
    if probes is None:
        stderr = torch.zeros(B, dtype=logp.dtype, device=logp.device)
    elif P == 1:
        stderr = torch.full((B,), float("nan"), dtype=logp.dtype, device=logp.device)
    else:
        stderr = logp_p.std(1) / math.sqrt(P)
    bpd = -logp / (D * math.log(2.0))
    bpd_deq = bpd + math.log2(256.0 / interval_width) if interval_width is not None else None
    return LikelihoodResult(logp=logp, bpd=bpd, bpd_dequantized=bpd_deq, logp_stderr=stderr, prior_logp=prior,
                            delta_logp=delta.mean(1), x_end=x_end, nfe=nfe, dim=D)


def log_likelihood(
    field: Field,
    x: Tensor,
    *,
    t_data: float = 0.0,
    t_noise: float = 1.0,
    method: str = "dopri5",
    num_steps: int | None = None,
    divergence: str = "exact",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    interval_width: float | None = None,
    data_scale: float = 1.0,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    y: Any = None,
    callback: Callable[[float, int], None] | None = None,
) -> LikelihoodResult:
    """log p_0(x) = log p_1(X_1) + int_{t_data}^{t_noise} div v(X_t, t) dt along the probability-flow
    ODE (2) from the data x (t = t_data ~ 0) up to noise (t = t_noise ~ 1) (math.md section 6).
    (The integration runs data -> noise, the opposite direction of sampling, whose
    `SampleConfig.t_start` is the noise end.)

    field: velocity field(x, t) in paper time, t of shape (B,) (``field(x, t, y)`` if y is given);
        it is differentiated by autograd (grad is enabled inside, whatever the caller's mode).
    x: data (B, ...), float32 or float64 (the ODE runs in x's dtype).
    method: torchdiffeq method; adaptive ones (dopri5, ...) use atol/rtol (defaults as the official
        SiT sampler), fixed-grid ones (euler, midpoint, rk4, heun2, ...) need ``num_steps``.
    divergence: "exact" (D backward passes per evaluation: small D only) or "hutchinson" with
        ``num_probes`` Rademacher probes per sample drawn from ``generator`` (one backward each).
    interval_width: W for 8-bit data mapped to an interval of width W (adds log2(256/W) bits/dim).
    data_scale: x = data_scale * y; the density reported is that of y.
    prior_logp: log p_1 (B,) of X_1; default log N(0, I) (see the module docstring for VP).
    t_data, t_noise: the integration range; a score or noise model converted by eq. (9) is singular
        at t = 0 (sigma_0 = 0) and, on Linear/GVP, at t = 1 (alpha_1 = 0): use e.g.
        `Path.train_t_range(prediction)` there (the prior is then still taken at t_noise).
    callback: called as callback(t, nfe) after every field evaluation (progress display).
    Returns a LikelihoodResult (nats, bits/dim, probe standard errors, nfe)."""
    odeint = _odeint()
    _check_likelihood_args(method, num_steps, divergence, num_probes, t_data, t_noise, interval_width, data_scale)
    dtype = coef_dtype(x)
    x0 = x.detach().to(dtype)
    probes = None
    if divergence == "hutchinson":
        probes = rademacher((num_probes, *x0.shape), generator=generator, device=x0.device, dtype=dtype)
    rhs, nfe = _augmented_rhs(field, x0, probes, y, callback)
    ts = _output_times(method, num_steps, t_data, t_noise, x0)
    state0 = (x0, torch.zeros(x0.shape[0], 1 if probes is None else num_probes, dtype=dtype, device=x0.device))
    kwargs = {}
    if method in ADAPTIVE_METHODS:
        # land a step exactly on t_noise: otherwise the solver steps past it and interpolates back,
        # evaluating the field at t > 1 (as the samplers do, sit.samplers.ode.sample_torchdiffeq)
        kwargs = {"atol": atol, "rtol": rtol, "options": {"step_t": ts[-1:]}}
    xs, divs = odeint(rhs, state0, ts, method=method, **kwargs)
    x_end, delta = xs[-1], divs[-1]  # (B, ...), (B, P)
    prior = (standard_normal_logp if prior_logp is None else prior_logp)(x_end).to(dtype)
    return _result(prior, delta, x_end, probes, nfe[0], data_scale, interval_width)


def _odeint():
    try:
        from torchdiffeq import odeint
    except ImportError as e:  # pragma: no cover - torchdiffeq is a dependency
        raise ImportError("log_likelihood needs torchdiffeq: pip install torchdiffeq") from e
    return odeint


def _augmented_rhs(field: Field, x0: Tensor, probes: Tensor | None, y: Any, callback):
    """(rhs(t, (X, logp)) -> (v, div v per probe (B, P)) for torchdiffeq, nfe counter [n]); the
    field is evaluated with grad enabled and differentiated at a detached copy of X."""
    B, dtype = x0.shape[0], x0.dtype
    P = 1 if probes is None else probes.shape[0]
    nfe = [0]

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nfe[0] += 1
        tt = t.to(dtype).expand(B)
        with torch.enable_grad():
            xg = state[0].detach().requires_grad_(True)
            v = _call(field, xg, tt, y)
            div = _divergence(v, xg, probes)
        if callback is not None:
            callback(float(t), nfe[0])
        return v.detach().to(dtype), div.detach().to(dtype).expand(B, P)

    return rhs, nfe


def _output_times(method: str, num_steps: int | None, t_data: float, t_noise: float, x0: Tensor) -> Tensor:
    """The grid of a fixed-step method (num_steps + 1 points), or the two endpoints."""
    if method in FIXED_METHODS:
        return torch.linspace(t_data, t_noise, num_steps + 1, dtype=x0.dtype, device=x0.device)
    return torch.tensor([t_data, t_noise], dtype=x0.dtype, device=x0.device)


def iterate_batches(batches: Tensor | Iterable, batch_size: int = 256) -> Iterator[tuple[Tensor, Any]]:
    """Endless stream of (x*, y) from a tensor (split into ``batch_size`` rows, cycled) or a
    re-iterable of tensors / (x*, y) pairs (a DataLoader, a list; restarted when exhausted).
    y is None for plain tensors."""
    if isinstance(batches, Tensor):
        if batches.shape[0] == 0:
            raise ValueError("no data: the x* tensor is empty")
        while True:
            for chunk in batches.split(batch_size):
                yield chunk, None
    while True:
        empty = True
        for b in batches:
            empty = False
            if isinstance(b, (tuple, list)):
                yield b[0], (b[1] if len(b) > 1 else None)
            else:
                yield b, None
        if empty:
            raise ValueError("no data: the batches iterable yielded nothing (a one-shot iterator cannot be restarted)")


def path_length(
    field: Field,
    path: Path,
    x_star_batches: Tensor | Iterable,
    *,
    num_points: int = 10_000,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
    reduction: str = "sum",
    batch_size: int = 256,
) -> tuple[float, float]:
    """C(v) = int_0^1 E|v(x_t, t)|^2 dt (Fig. 4) by Monte Carlo: ``num_points`` independent
    (t ~ U[t_min, t_max], x* from the batches, eps ~ N(0, I)), x_t = alpha_t x* + sigma_t eps (1).

    field: velocity field(x, t) (``field(x, t, y)`` for batches of (x*, y) pairs).
    reduction: "sum" (the paper's |v|^2, summed over the D dims of a sample) or "mean" (per dim).
    Returns (C, standard error), both times (t_max - t_min) so that they estimate the integral
    over [t_min, t_max]. Evaluated without gradients."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(REDUCTIONS)}")
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 2:
        raise ValueError(f"num_points must be an integer >= 2 (got {num_points!r})")
    if not (0.0 <= t_min < t_max <= 1.0):
        raise ValueError(f"need 0 <= t_min < t_max <= 1 (t = 0 data, t = 1 noise); got [{t_min}, {t_max}]")
    values, n = [], 0
    stream = iterate_batches(x_star_batches, batch_size)
    with torch.no_grad():
        while n < num_points:
            x_star, y = next(stream)
            x_star = x_star[: num_points - n]
            if y is not None:
                y = y[: x_star.shape[0]]
            B = x_star.shape[0]
            tdt = coef_dtype(x_star)
            u = torch.rand(B, generator=generator, device=x_star.device, dtype=tdt)
            t = t_min + (t_max - t_min) * u
            eps = torch.randn(x_star.shape, generator=generator, device=x_star.device, dtype=x_star.dtype)
            x_t = path.x_t(x_star, eps, t)
            v = _call(field, x_t, t, y)
            sq = v.reshape(B, -1).double().pow(2)
            values.append(sq.sum(1) if reduction == "sum" else sq.mean(1))
            n += B
    vals = torch.cat(values)
    width = t_max - t_min
    return float(vals.mean()) * width, float(vals.std() / math.sqrt(vals.numel())) * width
