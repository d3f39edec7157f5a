"""Discrete-time DDPM as DiT trains and samples it: the baseline of SiT Table 2 (math.md section 5).

This module does not use the paper's continuous time t. It counts **integer steps**
k in {0, ..., T - 1} (T = 1000), k = 0 closest to data, k = T - 1 closest to noise:

  beta_k linear from 1e-4 to 0.02 (float64 tables; cast to float32 when used, float64 when the
  data is float64), abar_k = prod_{i <= k} (1 - beta_i),
  x_k = sqrt(abar_k) x* + sqrt(1 - abar_k) eps                                  (q_sample)

The network receives the integer k (the **original** step number even on a respaced grid) and
returns eps-hat (C channels), optionally followed by C channels v of learned variance:
  log Sigma_k = frac log beta_k + (1 - frac) log beta~_k,  frac = (v + 1) / 2 (not clamped),
with beta~_k the posterior variance (its log clipped at k = 0 to the value at k = 1).
With C output channels the variance is fixed: ``fixed_variance="large"`` uses beta_k (DiT's
default when learn_sigma is off, beta_0 replaced by beta~_1 as DiT does), ``"small"`` uses beta~_k.

Training (``training_losses``): L_simple = mean over dims of (eps-hat - eps)^2, plus, with learned
variance, L_vlb = KL(q(x_{k-1} | x_k, x*) || p(x_{k-1} | x_k)) in bits per dimension with the
gradient to the mean stopped (so L_vlb trains only v); at k = 0 the VB term is the discretised
Gaussian decoder NLL (bin width 2/255 on data in [-1, 1]). Per-sample values are returned.

Respacing (``respace_timesteps`` / ``DiscreteDiffusion.respace``) keeps N of the T steps exactly
as DiT's "250": c_0 = 0, c_{j+1} = c_j + (T - 1)/(N - 1) in float64, k_j = round(c_j) (Python's
round, half to even), then rebuilds beta'_j = 1 - abar_{k_j} / abar_{k_{j-1}} and every table.
All table functions take the **grid index** j in {0..N-1} (j = k without respacing);
``diffusion.timesteps[j]`` is the original step k the network sees.

Samplers: ancestral (``sample_ddpm``) and DDIM (``sample_ddim``, eta = 0 deterministic), both
walking the grid from j = N - 1 down to 0, with no clipping of the predicted x* unless asked
(DiT's sampling scripts do not clip). Classifier-free guidance belongs to the caller's model_fn
(e.g. ``sit.guidance.guided.GuidedModel``): it combines the eps channels; DiT's ``forward_with_cfg``
guides only latent channels 0..2 and keeps the conditional value of channel 3 and of the
variance channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from sit.paths import coef_dtype
from sit.sampler_config import DISCRETE_METHODS, DiscreteSampleConfig  # noqa: F401

ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x_k (B, C, ...), k (B,) int64) -> (B, C or 2C, ...)

Variance = Literal["large", "small"]
VARIANCES: tuple[str, ...] = get_args(Variance)


@dataclass(frozen=True)
class DiscreteConfig:
    """The DDPM of DiT (``create_diffusion(timestep_respacing="")`` defaults)."""

    num_train_steps: int = 1000     # T: steps of the forward process, k = 0 .. T - 1
    beta_start: float = 1e-4        # beta_0 of the linear schedule (at T = 1000)
    beta_end: float = 0.02          # beta_{T-1}
    learn_sigma: bool = True        # network outputs eps and the variance channel v (2C channels)
    fixed_variance: Variance = "large"  # used when the output has C channels

    def __post_init__(self):
        T = self.num_train_steps
        if not isinstance(T, int) or isinstance(T, bool) or T < 2:
            raise ValueError(f"DiscreteConfig.num_train_steps must be an integer >= 2 (got {T!r})")
        if not (0 < self.beta_start < self.beta_end < 1):
            raise ValueError(
                f"DiscreteConfig needs 0 < beta_start < beta_end < 1 (got {self.beta_start}, {self.beta_end})"
            )
        if self.fixed_variance not in VARIANCES:
            raise ValueError(
                f"unknown fixed_variance {self.fixed_variance!r}; expected one of {list(VARIANCES)}"
            )


def linear_betas(config: DiscreteConfig) -> Tensor:
    """beta_k linear from beta_start to beta_end in float64, (T,). As DiT, both ends are scaled by
    1000 / T so that other T keep the same total noise."""
    scale = 1000.0 / config.num_train_steps
    return torch.linspace(
        scale * config.beta_start, scale * config.beta_end, config.num_train_steps, dtype=torch.float64
    )


def respace_timesteps(num_train_steps: int, num_steps: int) -> list[int]:
    """The N = ``num_steps`` original steps kept by DiT's respacing, increasing:
    k_j = round(c_j), c_0 = 0, c_{j+1} = c_j + (T - 1)/(N - 1) (float64 running sum, Python's
    round: half to even). N in {10, 25, 50, 100, 250, 500} gives round(linspace(0, T - 1, N));
    N = 21 keeps 499, not 500. N = 1 keeps only step 0."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool):
        raise ValueError(f"number of sampling steps must be an integer (got {num_steps!r})")
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(
            f"number of sampling steps must lie in [1, {num_train_steps}] (the training steps); got {num_steps}"
        )
    stride = (num_train_steps - 1) / (num_steps - 1) if num_steps > 1 else 1.0
    kept, c = [], 0.0
    for _ in range(num_steps):
        kept.append(round(c))
        c += stride
    return kept


class DiscreteDiffusion:
    """The tables of a (possibly respaced) DDPM, all float64 tensors of shape (N,), indexed by
    the grid index j. ``timesteps`` (N,) int64 holds the original step k_j given to the network.

    Build the 1000-step training process with ``DiscreteDiffusion()`` and a sampling grid with
    ``.respace(250)``. Instances are treated as immutable."""

    def __init__(self, config: DiscreteConfig = DiscreteConfig(), timesteps: list[int] | None = None):
        self.config = config
        T = config.num_train_steps
        base_betas = linear_betas(config)
        base_abar = torch.cumprod(1.0 - base_betas, dim=0)
        if timesteps is None:
            timesteps = list(range(T))
        ts = [int(k) for k in timesteps]
        if not ts or any(k < 0 or k >= T for k in ts) or any(b <= a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"timesteps must be strictly increasing integers in [0, {T - 1}] (got {ts[:5]}...)")
        self.timesteps = torch.tensor(ts, dtype=torch.int64)
        abar = base_abar[self.timesteps]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1.0 - abar / abar_prev  # equals base betas without respacing
        self.betas = betas
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - abar).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / abar).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / abar - 1.0).sqrt()
        # posterior q(x_{k-1} | x_k, x*): variance beta~ and mean coefficients (math.md section 5)
        self.posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        # beta~_0 = 0: clip its log to the value at j = 1 (as DiT); one-step grids keep log beta_0
        if len(ts) > 1:
            self.posterior_log_variance_clipped = torch.log(
                torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
            )
        else:
            self.posterior_log_variance_clipped = torch.log(betas)
        self.posterior_mean_coef1 = betas * abar_prev.sqrt() / (1.0 - abar)
        self.posterior_mean_coef2 = (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar)
        self.log_betas = torch.log(betas)
        # fixed "large" variance: beta, with beta_0 replaced by beta~_1 (DiT's FIXED_LARGE)
        if len(ts) > 1:
            self.large_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], betas[1:]]))
        else:
            self.large_log_variance = self.log_betas.clone()

    @property
    def num_steps(self) -> int:
        """N: number of grid points (= sampling steps, one network call each)."""
        return int(self.timesteps.numel())

    def respace(self, num_steps: int) -> "DiscreteDiffusion":
        """A new process keeping ``respace_timesteps(T, num_steps)`` of the original steps."""
        if self.num_steps != self.config.num_train_steps:
            raise ValueError("respace the full (unrespaced) process, not an already respaced one")
        return DiscreteDiffusion(self.config, respace_timesteps(self.config.num_train_steps, num_steps))

    def __repr__(self) -> str:
        return f"DiscreteDiffusion({self.config}, num_steps={self.num_steps})"

    # ---------------------------------------------------------------- table access
    def _check_index(self, j: Tensor) -> Tensor:
        j = torch.as_tensor(j)
        if j.is_floating_point() or j.is_complex():
            raise ValueError(f"grid index must be an integer tensor (got dtype {j.dtype})")
        if j.numel() and (int(j.min()) < 0 or int(j.max()) >= self.num_steps):
            raise ValueError(
                f"grid index must lie in [0, {self.num_steps - 1}]; got min {int(j.min())}, max {int(j.max())}"
            )
        return j

    def _extract(self, table: Tensor, j: Tensor, x: Tensor) -> Tensor:
        """table[j] broadcast to x's rank, float32 (as DiT) or float64 when x is float64."""
        j = self._check_index(j)
        dtype = coef_dtype(x)
        out = table.to(x.device)[j.to(x.device)].to(dtype)
        return out.reshape(-1, *([1] * (x.ndim - 1)))

    def network_steps(self, j: Tensor) -> Tensor:
        """The original steps k_j (int64) the network receives for grid indices j."""
        j = self._check_index(j)
        return self.timesteps.to(j.device)[j]

    # ---------------------------------------------------------------- forward process
    def q_sample(self, x_star: Tensor, j: Tensor, eps: Tensor | None = None, generator=None) -> Tensor:
        """x_k = sqrt(abar_k) x* + sqrt(1 - abar_k) eps. x_star (B, ...), j (B,) int."""
        if eps is None:
            eps = torch.randn(x_star.shape, generator=generator, device=x_star.device, dtype=x_star.dtype)
        a = self._extract(self.sqrt_alphas_cumprod, j, x_star)
        s = self._extract(self.sqrt_one_minus_alphas_cumprod, j, x_star)
        return (a * x_star + s * eps).to(x_star.dtype)

    def q_posterior(self, x_star: Tensor, x: Tensor, j: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of q(x_{k-1} | x_k = x, x*):
        mean = c1_k x* + c2_k x_k, variance beta~_k (math.md section 5)."""
        mean = self._extract(self.posterior_mean_coef1, j, x) * x_star + self._extract(
            self.posterior_mean_coef2, j, x
        ) * x
        var = self._extract(self.posterior_variance, j, x).expand_as(x)
        logvar = self._extract(self.posterior_log_variance_clipped, j, x).expand_as(x)
        return mean, var, logvar

    def x_star_from_eps(self, x: Tensor, j: Tensor, eps: Tensor) -> Tensor:
        """x^* = sqrt(1/abar_k) x_k - sqrt(1/abar_k - 1) eps."""
        return self._extract(self.sqrt_recip_alphas_cumprod, j, x) * x - self._extract(
            self.sqrt_recipm1_alphas_cumprod, j, x
        ) * eps

    def eps_from_x_star(self, x: Tensor, j: Tensor, x_star: Tensor) -> Tensor:
        """The inverse of ``x_star_from_eps``: eps = (sqrt(1/abar_k) x_k - x*) / sqrt(1/abar_k - 1)."""
        return (self._extract(self.sqrt_recip_alphas_cumprod, j, x) * x - x_star) / self._extract(
            self.sqrt_recipm1_alphas_cumprod, j, x
        )

    # ---------------------------------------------------------------- reverse process
    def split_output(self, out: Tensor, x: Tensor, strict: bool = True) -> tuple[Tensor, Tensor | None]:
        """(eps-hat, v) from a raw output with 2C channels, or (eps-hat, None) with C channels.
        With ``strict`` the channel count must match ``config.learn_sigma`` (2C if True, else C),
        so a learned-variance model is never sampled with a fixed variance by accident."""
        C = x.shape[1]
        if out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:] or out.shape[1] not in (C, 2 * C):
            raise ValueError(
                f"model output must have shape (B, C or 2C, ...) = {tuple(x.shape)} with C or {2 * C} "
                f"channels; got {tuple(out.shape)}"
            )
        if strict:
            want = 2 * C if self.config.learn_sigma else C
            if out.shape[1] != want:
                raise ValueError(
                    f"model output has {out.shape[1]} channels but DiscreteConfig.learn_sigma="
                    f"{self.config.learn_sigma} expects {want} (eps{' + variance v' if want == 2 * C else ''}); "
                    "pass the raw network output or set learn_sigma to match"
                )
        if out.shape[1] == 2 * C:
            return out[:, :C], out[:, C:]
        return out, None

    def model_log_variance(self, v: Tensor | None, j: Tensor, x: Tensor) -> Tensor:
        """log Sigma_k = frac log beta_k + (1 - frac) log beta~_k (clipped), frac = (v + 1)/2, v not
        clamped; fixed beta (``large``) or beta~ (``small``) when v is None."""
        if v is None:
            table = self.large_log_variance if self.config.fixed_variance == "large" else (
                self.posterior_log_variance_clipped
            )
            return self._extract(table, j, x).expand_as(x)
        min_log = self._extract(self.posterior_log_variance_clipped, j, x)
        max_log = self._extract(self.log_betas, j, x)
        frac = (v + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(
        self, out: Tensor, x: Tensor, j: Tensor, clip_denoised: bool = False
    ) -> dict[str, Tensor]:
        """Mean and log variance of p(x_{k-1} | x_k) from a raw network output (B, C or 2C, ...).
        x* is predicted from eps-hat (and clamped to [-1, 1] only with ``clip_denoised``); the mean
        is c1_k x^* + c2_k x_k. Returns dict(mean, log_variance, x_star, eps)."""
        eps, v = self.split_output(out, x)
        log_variance = self.model_log_variance(v, j, x)
        x_star = self.x_star_from_eps(x, j, eps)
        if clip_denoised:
            x_star = x_star.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x_star, x, j)
        return {"mean": mean, "log_variance": log_variance, "x_star": x_star, "eps": eps}

    # ---------------------------------------------------------------- training
    def sample_indices(self, batch_size: int, generator=None, device=None) -> Tensor:
        """Uniform training steps j ~ U{0, ..., N - 1}, (batch_size,) int64."""
        return torch.randint(0, self.num_steps, (batch_size,), generator=generator, device=device)

    def vb_terms_bpd(self, out: Tensor, x_star: Tensor, x: Tensor, j: Tensor) -> Tensor:
        """Per-sample VB term in bits/dim, (B,): KL(q(x_{k-1}|x_k,x*) || p(x_{k-1}|x_k)) averaged
        over dims / ln 2 for k > 0; the discretised Gaussian decoder NLL of x* at k = 0.
        ``out`` is the raw output used for p (detach its eps half to stop the mean gradient)."""
        true_mean, _, true_logvar = self.q_posterior(x_star, x, j)
        p = self.p_mean_variance(out, x, j)
        kl = mean_flat(normal_kl(true_mean, true_logvar, p["mean"], p["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_star, p["mean"], 0.5 * p["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        j = self._check_index(j).to(x.device)
        return torch.where(j == 0, nll, kl)

    def training_losses(
        self,
        model_fn: ModelFn,
        x_star: Tensor,
        j: Tensor | None = None,
        eps: Tensor | None = None,
        generator=None,
    ) -> dict[str, Tensor]:
        """DiT's hybrid loss, per sample: loss = L_simple + L_vlb, each (B,).

        L_simple = mean_flat((eps-hat - eps)^2) (Table 2's L_s^N); with learned variance,
        L_vlb = ``vb_terms_bpd`` with eps-hat detached (it trains only v); with fixed variance
        vb = 0 and loss = mse. ``model_fn(x_k, k)`` gets the original steps k = timesteps[j].
        j defaults to U{0..N-1}, eps to N(0, I). Returns dict(loss, mse, vb, t) with t = j."""
        if j is None:
            j = self.sample_indices(x_star.shape[0], generator=generator, device=x_star.device)
        j = self._check_index(j)
        if eps is None:
            eps = torch.randn(x_star.shape, generator=generator, device=x_star.device, dtype=x_star.dtype)
        x = self.q_sample(x_star, j, eps)
        out = model_fn(x, self.network_steps(j))
        eps_hat, v = self.split_output(out, x)
        mse = mean_flat((_up(eps) - _up(eps_hat)) ** 2)
        if v is not None:
            frozen = torch.cat([eps_hat.detach(), v], dim=1)
            vb = self.vb_terms_bpd(_up(frozen), _up(x_star), _up(x), j)
        else:
            vb = torch.zeros_like(mse)
        return {"loss": mse + vb, "mse": mse, "vb": vb, "t": j}


# -------------------------------------------------------------------- helpers
def _up(x: Tensor) -> Tensor:
    """float32 for half precision inputs (losses are computed in float32), float64 kept."""
    return x.to(coef_dtype(x))


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all non-batch dimensions, (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (>= 0)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) by the tanh approximation that DiT (and ADM) use in the decoder likelihood."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) elementwise (nats) for data x in [-1, 1] quantised to 256 levels (bins of width
    2/255), under N(means, exp(log_scales)^2); the edge bins extend to -inf and +inf."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


# -------------------------------------------------------------------- samplers
def _steps(diffusion: DiscreteDiffusion, progress: bool):
    indices = range(diffusion.num_steps - 1, -1, -1)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(indices, total=diffusion.num_steps)
    return indices


def _noise(x: Tensor, generator, noise_fn) -> Tensor:
    if noise_fn is not None:
        return noise_fn(x).to(device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _run_discrete(model_fn: ModelFn, x: Tensor, diffusion: DiscreteDiffusion, step, progress: bool,
                  callback: Callable[[dict], None] | None, return_trajectory: bool) -> Tensor:
    """The step loop of DDPM / DDIM: for j = N-1 .. 0, out = model_fn(x, k_j) (no grad), then
    ``x, x_star = step(x, j, jj, out)`` (jj: j as int64 (B,)), the callback and the trajectory."""
    traj = [x] if return_trajectory else None
    B = x.shape[0]
    for i, j in enumerate(_steps(diffusion, progress)):
        jj = torch.full((B,), j, dtype=torch.int64, device=x.device)
        with torch.no_grad():
            out = model_fn(x, diffusion.network_steps(jj))
        x, x_star = step(x, j, jj, out)
        if callback is not None:
            callback({"i": i, "j": j, "k": int(diffusion.timesteps[j]), "x": x, "x_star": x_star})
        if traj is not None:
            traj.append(x)
    return torch.stack(traj) if traj is not None else x


def sample_ddpm(
    model_fn: ModelFn,
    x: Tensor,
    diffusion: DiscreteDiffusion,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    clip_denoised: bool = False,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Ancestral DDPM sampling (DiT's p_sample_loop) on the grid of ``diffusion``.

    x (B, C, ...) is the initial noise x_{k_{N-1}} ~ N(0, I). For j = N-1 .. 0:
    out = model_fn(x, k_j) (original step, int64 (B,)); x^* = sqrt(1/abar) x - sqrt(1/abar - 1) eps-hat;
    x <- c1 x^* + c2 x + exp(log Sigma / 2) xi, with no noise at j = 0. N network calls.
    ``callback`` gets dict(i, j, k, x, x_star) after each step. Returns the final x (B, C, ...)
    or, with ``return_trajectory``, the (N + 1, B, C, ...) states starting with the input.
    The state keeps x's dtype; coefficients are float32 (float64 for float64 x). Step noise comes
    from ``generator``, or from ``noise_fn(x)`` (a standard normal tensor like x) when given, e.g.
    per-row streams so that a sample depends only on its own seed.

    A DiT checkpoint with classifier-free guidance as DiT samples it (eps channels 0..2 guided,
    channel 3 and the variance channels conditional; ``channels=C`` guides all eps channels).
    GuidedModel's ``interval`` is in paper time and does not apply to integer steps::

        field = ModelField(net, "noise", time_input="discrete")
        guided = GuidedModel(field.raw, 4.0, null_class=1000, channels=3)
        x_star = sample_ddpm(lambda x, k: guided(x, k, y), noise, DiscreteDiffusion().respace(250))
    """
    dtype = x.dtype

    def step(x: Tensor, j: int, jj: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        p = diffusion.p_mean_variance(out, x, jj, clip_denoised=clip_denoised)
        # drawn at every step, also the last where it is unused, as DiT does (same random stream)
        noise = _noise(x, generator, noise_fn)
        x = p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise if j > 0 else p["mean"]
        return x.to(dtype), p["x_star"]

    return _run_discrete(model_fn, x, diffusion, step, progress, callback, return_trajectory)


def sample_ddim(
    model_fn: ModelFn,
    x: Tensor,
    diffusion: DiscreteDiffusion,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    return_trajectory: bool = False,
    clip_denoised: bool = False,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021) on the grid of ``diffusion``; eta = 0 is deterministic.

    For j = N-1 .. 0: x^* from eps-hat (eps-hat recomputed from x^* if clipped);
    s = eta sqrt((1 - abar')/(1 - abar)) sqrt(1 - abar/abar') with abar' = abar_{k_{j-1}};
    x <- sqrt(abar') x^* + sqrt(1 - abar' - s^2) eps-hat + s xi (no noise at j = 0, where x = x^*).
    The variance channels of the output are ignored. N network calls; returns as ``sample_ddpm``
    (``noise_fn`` too; it is used only for eta > 0)."""
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"DDIM eta must be a finite number >= 0 (got {eta!r})")

    def step(x: Tensor, j: int, jj: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        eps, _ = diffusion.split_output(out, x, strict=False)
        x_star = diffusion.x_star_from_eps(x, jj, eps)
        if clip_denoised:
            x_star = x_star.clamp(-1, 1)
            eps = diffusion.eps_from_x_star(x, jj, x_star)
        abar = diffusion._extract(diffusion.alphas_cumprod, jj, x)
        abar_prev = diffusion._extract(diffusion.alphas_cumprod_prev, jj, x)
        s = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = abar_prev.sqrt() * x_star + torch.sqrt((1 - abar_prev - s**2).clamp(min=0)) * eps
        if eta > 0:  # drawn also at the last step (unused there), as DiT does
            noise = _noise(x, generator, noise_fn)
            return (mean + s * noise if j > 0 else mean).to(x.dtype), x_star
        return mean.to(x.dtype), x_star

    return _run_discrete(model_fn, x, diffusion, step, progress, callback, return_trajectory)


