"""Toy targets with exact answers, for tests, benchmarks and `sit demo-gaussian` (math.md section 7).

For x* ~ sum_k pi_k N(mu_k, diag c_k^2) the marginal p_t of x_t = alpha_t x* + sigma_t eps
(paper time, t = 0 data) is again a Gaussian mixture, so the score and the velocity are exact
(`GaussianMixture`). For a single Gaussian every sampler step is affine in its state and in its
step noise, so an SDE sampler's output mean and std follow exactly from a few probe rows
(`sde_exact_moments`), with no Monte-Carlo noise.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from sit.paths import Path


class GaussianMixture:
    """x* ~ sum_k weights_k N(means_k, diag(stds_k^2)) in D dimensions; exact fields for any path.

    weights (K,), means (K, D), stds (K, D); all math in float64, results in the dtype of x."""

    def __init__(self, weights, means, stds):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        if self.means.ndim != 2 or self.stds.shape != self.means.shape or self.weights.shape != self.means.shape[:1]:
            raise ValueError("GaussianMixture needs weights (K,), means (K, D) and stds (K, D)")
        if not bool((self.weights > 0).all()) or not bool((self.stds > 0).all()):
            raise ValueError("GaussianMixture weights and stds must be > 0")
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def gaussian(cls, mean, std) -> "GaussianMixture":
        """A single Gaussian N(mean, diag std^2)."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        return cls([1.0], mean[None], torch.as_tensor(std, dtype=torch.float64).expand_as(mean)[None])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        m = self.mean()
        second = sum(w * (torch.diag(s**2) + torch.outer(mu, mu)) for w, mu, s in zip(self.weights, self.means, self.stds))
        return second - torch.outer(m, m)

    def marginal(self, path: Path, t: float) -> "GaussianMixture":
        """p_t as a GaussianMixture (means alpha_t mu_k, variances alpha_t^2 c_k^2 + sigma_t^2)."""
        tt = torch.tensor([float(t)], dtype=torch.float64)
        a, s = float(path.alpha(tt)[0]), float(path.sigma(tt)[0])
        return GaussianMixture(self.weights, a * self.means, torch.sqrt(a * a * self.stds**2 + s * s))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k] * z

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) of the data distribution (t = 0); x (B, D) -> (B,)."""
        x = x.to(torch.float64)
        lp = _component_log_prob(x, self.means, self.stds**2)
        return torch.logsumexp(lp + self.weights.log(), dim=1)

    def _posterior(self, path: Path, x: Tensor, t: Tensor):
        x = x.to(torch.float64)
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        a, s, da, ds = (c[:, None, None] for c in path.coefficients(t))  # (B, 1, 1)
        var = a * a * self.stds**2 + s * s  # (B, K, D)
        diff = x[:, None, :] - a * self.means  # (B, K, D)
        lp = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1) + self.weights.log()
        r = torch.softmax(lp, dim=1)[:, :, None]  # (B, K, 1) responsibilities
        return x, a, s, da, ds, var, diff, r

    def score(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x) = sum_k r_k(x) (-(x - alpha mu_k) / (alpha^2 c_k^2 + sigma^2)). x (B, D); t (B,)."""
        xx, a, s, da, ds, var, diff, r = self._posterior(path, x, t)
        return (r * (-diff / var)).sum(1).to(x.dtype)

    def velocity(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """v = E[alpha_dot x* + sigma_dot eps | x_t = x] (eq. 3), from the per-component posterior
        means x_hat*_k = mu_k + alpha c_k^2 (x - alpha mu_k)/var_k and eps_hat_k = sigma (x - alpha mu_k)/var_k.
        Finite on [0, 1] for Linear/GVP (no division by alpha); on (0, 1] for VP."""
        xx, a, s, da, ds, var, diff, r = self._posterior(path, x, t)
        x_star = self.means + a * self.stds**2 * diff / var
        eps = s * diff / var
        return (r * (da * x_star + ds * eps)).sum(1).to(x.dtype)

    def field(self, path: Path):
        """The exact velocity field (x, t) -> v for the samplers."""
        return lambda x, t: self.velocity(path, x, t)


def _component_log_prob(x: Tensor, means: Tensor, var: Tensor) -> Tensor:
    diff = x[:, None, :] - means
    return -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)


def default_mixture() -> GaussianMixture:
    return GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [[0.5, 0.8], [0.7, 0.4]])


def sde_exact_moments(
    field: Callable[[Tensor, Tensor], Tensor], path: Path, cfg, dim: int, *, table=None
) -> tuple[Tensor, Tensor, dict]:
    """Exact output mean and std (per dimension, (dim,) each) of `sit.samplers.sample` with the SDE
    config ``cfg`` for an affine field (the exact field of a Gaussian target), and sample's info.

    Every step is affine in the state and in its noise xi_k, so x_N = b + A x_0 + sum_k C_k xi_k per
    dimension. Row 0 (x_0 = 0, no noise) gives b, row 1 (x_0 = 1) gives A, row k + 2 (xi_k = 1 at step
    k only, via noise_fn) gives C_k; for x_0, xi ~ N(0, 1): mean b, variance A^2 + sum_k C_k^2."""
    from sit.samplers import sample

    rows = cfg.num_steps + 2
    x0 = torch.zeros(rows, dim, dtype=torch.float64)
    x0[1] = 1.0
    step = [0]

    def noise_fn(x):
        z = torch.zeros_like(x)
        if step[0] + 2 < rows:
            z[step[0] + 2] = 1.0
        step[0] += 1
        return z

    out, info = sample(field, x0, cfg, path, noise_fn=noise_fn, table=table)
    b, A, Ck = out[0], out[1] - out[0], out[2:] - out[0]
    return b, torch.sqrt(A**2 + (Ck**2).sum(0)), info
