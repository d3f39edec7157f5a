"""DDPM of DiT (sit.discrete): tables, respacing, losses and samplers against closed forms."""

import math

import numpy as np
import pytest
import torch

from sit.discrete import (
    DiscreteConfig,
    DiscreteDiffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
    respace_timesteps,
    sample_ddim,
    sample_ddpm,
)

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
C = torch.tensor([0.5, 1.5], dtype=torch.float64)  # target std per channel


def exact_eps_fn(diffusion_full: DiscreteDiffusion, mu=MU, c=C, learned_v=None, calls=None):
    """E[eps | x_k = x] for x* ~ N(mu, diag(c^2)) on (B, 2, 1, 1) tensors, from the ORIGINAL step k:
    x_k ~ N(sqrt(abar) mu, abar c^2 + 1 - abar), eps-hat = sqrt(1 - abar)(x - sqrt(abar) mu)/var."""
    abar_table = diffusion_full.alphas_cumprod

    def fn(x, k):
        if calls is not None:
            calls.append(int(k[0]))
        assert k.dtype == torch.int64
        abar = abar_table[k].reshape(-1, 1, 1, 1).to(x.dtype)
        m, cc = mu.reshape(1, -1, 1, 1).to(x.dtype), c.reshape(1, -1, 1, 1).to(x.dtype)
        var = abar * cc**2 + 1 - abar
        eps = torch.sqrt(1 - abar) * (x - abar.sqrt() * m) / var
        if learned_v is None:
            return eps
        return torch.cat([eps, torch.full_like(eps, learned_v)], dim=1)

    return fn


def test_alphas_cumprod_is_the_direct_product():
    d = DiscreteDiffusion()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    assert torch.allclose(d.betas, torch.from_numpy(betas), rtol=1e-12, atol=0)
    for k in (0, 1, 17, 499, 998, 999):
        prod = 1.0
        for i in range(k + 1):
            prod *= 1.0 - float(betas[i])
        assert math.isclose(float(d.alphas_cumprod[k]), prod, rel_tol=1e-12)
    assert d.alphas_cumprod_prev[0] == 1.0
    # the posterior variance is 0 at k = 0 and its log is clipped to the value at k = 1
    assert d.posterior_variance[0] == 0.0
    assert d.posterior_log_variance_clipped[0] == torch.log(d.posterior_variance[1])
    assert d.betas.dtype == torch.float64


@pytest.mark.parametrize("n", [10, 25, 50, 100, 250, 500])
def test_respacing_equals_rounded_linspace(n):
    kept = respace_timesteps(1000, n)
    assert kept == [int(v) for v in np.round(np.linspace(0, 999, n))]
    d = DiscreteDiffusion().respace(n)
    base = DiscreteDiffusion()
    assert d.num_steps == n
    assert torch.allclose(d.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-13)
    # rebuilt betas reproduce the kept alphas_cumprod by their running product
    assert torch.allclose(torch.cumprod(1 - d.betas, 0), d.alphas_cumprod, rtol=1e-12)


def test_respacing_ties_and_edges():
    kept = respace_timesteps(1000, 21)
    assert 499 in kept and 500 not in kept
    assert respace_timesteps(1000, 1) == [0]
    assert respace_timesteps(1000, 1000) == list(range(1000))
    for bad in (0, -3, 1001):
        with pytest.raises(ValueError, match="number of sampling steps"):
            respace_timesteps(1000, bad)
    with pytest.raises(ValueError, match="number of sampling steps"):
        DiscreteDiffusion().respace(1001)
    with pytest.raises(ValueError, match="fixed_variance"):
        DiscreteConfig(fixed_variance="medium")
    with pytest.raises(ValueError, match="grid index"):
        DiscreteDiffusion().q_sample(torch.zeros(2, 1), torch.tensor([0, 1000]))


def test_q_sample_statistics():
    d = DiscreteDiffusion()
    g = torch.Generator().manual_seed(0)
    n, k = 200_000, 300
    x_star = torch.full((n, 1), 2.0, dtype=torch.float64)
    x = d.q_sample(x_star, torch.full((n,), k), generator=g)
    abar = float(d.alphas_cumprod[k])
    se = math.sqrt(1 - abar) / math.sqrt(n)
    assert abs(float(x.mean()) - 2.0 * math.sqrt(abar)) < 5 * se
    assert abs(float(x.var()) / (1 - abar) - 1) < 5 * math.sqrt(2 / n)


def test_kl_and_vb_terms():
    m = torch.randn(5, 3, dtype=torch.float64)
    lv = torch.randn(5, 3, dtype=torch.float64)
    assert torch.all(normal_kl(m, lv, m, lv).abs() < 1e-15)
    d = DiscreteDiffusion()
    g = torch.Generator().manual_seed(1)
    B = 64
    x_star = torch.rand(B, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    j = torch.randint(0, 1000, (B,), generator=g)
    eps = torch.randn(x_star.shape, generator=g, dtype=torch.float64)
    x = d.q_sample(x_star, j, eps)
    # random outputs: VB >= 0 (KL at k > 0, a negative log-probability at k = 0)
    out = torch.randn(B, 4, 4, 4, generator=g, dtype=torch.float64)
    assert torch.all(d.vb_terms_bpd(out, x_star, x, j) >= 0)
    # the true eps with v = -1 (posterior variance) is the exact posterior: KL = 0 where k > 0
    exact = torch.cat([eps, -torch.ones_like(eps)], dim=1)
    vb = d.vb_terms_bpd(exact, x_star, x, j)
    assert torch.all(vb[j > 0].abs() < 1e-9)


def test_decoder_likelihood_sums_to_one_over_the_256_bins():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in ((0.1, -2.0), (-0.7, -4.0), (0.95, 0.5)):
        logp = discretized_gaussian_log_likelihood(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        )
        assert abs(float(logp.exp().sum()) - 1) < 1e-9


def test_learned_variance_interpolation():
    d = DiscreteDiffusion().respace(50)
    x = torch.zeros(3, 2, 1, 1, dtype=torch.float64)
    j = torch.tensor([0, 10, 49])
    for v, table in ((1.0, d.log_betas), (-1.0, d.posterior_log_variance_clipped)):
        lv = d.model_log_variance(torch.full_like(x, v), j, x)
        assert torch.allclose(lv[:, 0, 0, 0], table[j])
    mid = d.model_log_variance(torch.zeros_like(x), j, x)[:, 0, 0, 0]
    assert torch.allclose(mid, 0.5 * (d.log_betas[j] + d.posterior_log_variance_clipped[j]))
    # v is not clamped: v = 3 extrapolates past log beta
    lv3 = d.model_log_variance(torch.full_like(x, 3.0), j, x)[:, 0, 0, 0]
    assert torch.allclose(lv3, 2 * d.log_betas[j] - d.posterior_log_variance_clipped[j])
    # fixed variances
    small = DiscreteDiffusion(DiscreteConfig(fixed_variance="small")).respace(50)
    assert torch.allclose(small.model_log_variance(None, j, x)[:, 0, 0, 0], d.posterior_log_variance_clipped[j])
    assert torch.allclose(d.model_log_variance(None, j[1:], x[1:])[:, 0, 0, 0], d.log_betas[j[1:]])


def test_training_losses_hybrid_and_stop_gradient():
    d = DiscreteDiffusion()
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 4, 1)

    def model_fn(x, k):
        assert k.dtype == torch.int64
        return net(x)

    x_star = torch.rand(16, 2, 4, 4) * 2 - 1
    j = torch.arange(16) * 60
    j[0] = 0
    eps = torch.randn_like(x_star)
    out = d.training_losses(model_fn, x_star, j, eps)
    assert set(out) == {"loss", "mse", "vb", "t"} and out["loss"].shape == (16,)
    assert torch.equal(out["t"], j)
    with torch.no_grad():
        pred = net(d.q_sample(x_star, j, eps))[:, :2]
    assert torch.allclose(out["mse"], ((pred - eps) ** 2).mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(out["loss"], out["mse"] + out["vb"])
    # the VB term reaches only the variance channels (outputs 2..3): eps rows of the weight get no gradient
    out["vb"].sum().backward()
    assert torch.all(net.weight.grad[:2] == 0) and net.weight.grad[2:].abs().sum() > 0
    # fixed variance (C output channels): loss = mse
    d_fixed = DiscreteDiffusion(DiscreteConfig(learn_sigma=False))
    out2 = d_fixed.training_losses(lambda x, k: net(x)[:, :2], x_star, j, eps)
    assert torch.equal(out2["vb"], torch.zeros(16)) and torch.allclose(out2["loss"], out2["mse"])
    with pytest.raises(ValueError, match="model output"):
        d.training_losses(lambda x, k: torch.zeros(16, 3, 4, 4), x_star, j, eps)
    # a C-channel output for a learned-variance process is an error, not a silent fixed variance
    with pytest.raises(ValueError, match="learn_sigma"):
        d.training_losses(lambda x, k: net(x)[:, :2], x_star, j, eps)


def _moments(x):
    x = x.reshape(x.shape[0], -1)
    return x.mean(0), x.var(0)


def exact_ancestral_moments(d: DiscreteDiffusion, log_variance: torch.Tensor):
    """Mean and variance of the ancestral sampler's output from x ~ N(0, I) with the exact eps of
    N(MU, C^2): each step is affine-Gaussian, x' = A x + b + exp(log_variance_j / 2) xi, with
    x^* = mu + sqrt(abar) c^2 (x - sqrt(abar) mu) / (abar c^2 + 1 - abar) and no noise at j = 0."""
    m, V = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for j in range(d.num_steps - 1, -1, -1):
        ab = float(d.alphas_cumprod[j])
        c1, c2 = float(d.posterior_mean_coef1[j]), float(d.posterior_mean_coef2[j])
        g = math.sqrt(ab) * C**2 / (ab * C**2 + 1 - ab)
        A, b = c1 * g + c2, c1 * (MU - g * math.sqrt(ab) * MU)
        m, V = A * m + b, A**2 * V + (math.exp(float(log_variance[j])) if j > 0 else 0.0)
    return m, V


def check_sampler_moments(out, m, V):
    mean, var = _moments(out)
    n = out.shape[0]
    assert torch.all((mean - m).abs() < 4 * (V / n).sqrt())
    assert torch.all((var / V - 1).abs() < 4 * math.sqrt(2 / n))


@pytest.mark.parametrize("variance", ["small", "large"])
@pytest.mark.parametrize("num_steps, tol", [(1000, 0.02), (250, 0.07)])
def test_ancestral_sampler_with_exact_eps_returns_the_gaussian_target(num_steps, tol, variance):
    full = DiscreteDiffusion(DiscreteConfig(learn_sigma=False, fixed_variance=variance))
    d = full if num_steps == 1000 else full.respace(num_steps)
    table = d.posterior_log_variance_clipped if variance == "small" else d.large_log_variance
    m, V = exact_ancestral_moments(d, table)
    # the exact output law is the target up to the discretisation (beta~ under-, beta over-disperses)
    assert torch.all((m - MU).abs() < 1e-3)
    assert torch.all((V / C**2 - 1).abs() < tol)
    # and the sampler follows that law (Monte Carlo)
    calls = []
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 2, 1, 1, generator=g, dtype=torch.float64)
    out = sample_ddpm(exact_eps_fn(full, calls=calls), x, d, generator=g)
    # the network saw the original steps, from the last kept one down to 0
    assert calls == d.timesteps.flip(0).tolist()
    check_sampler_moments(out, m, V)


def test_ancestral_sampler_learned_variance_trajectory_and_callback():
    full = DiscreteDiffusion()
    d = full.respace(25)
    seen = []
    x = torch.randn(4000, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    traj = sample_ddpm(
        exact_eps_fn(full, learned_v=0.0), x, d, generator=torch.Generator().manual_seed(5),
        callback=lambda info: seen.append(info["k"]), return_trajectory=True,
    )
    assert traj.shape == (26, 4000, 2, 1, 1) and torch.equal(traj[0], x)
    assert seen == d.timesteps.flip(0).tolist()
    # noise_fn replaces the generator
    gen = torch.Generator().manual_seed(5)
    again = sample_ddpm(exact_eps_fn(full, learned_v=0.0), x, d,
                        noise_fn=lambda z: torch.randn(z.shape, generator=gen, dtype=z.dtype))
    assert torch.equal(again, traj[-1])
    # v = 0: log Sigma halfway between log beta~ and log beta
    m, V = exact_ancestral_moments(d, 0.5 * (d.log_betas + d.posterior_log_variance_clipped))
    check_sampler_moments(traj[-1], m, V)


def test_ddim_with_exact_eps():
    full = DiscreteDiffusion()
    x = torch.randn(10_000, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    d = full.respace(10)
    out = sample_ddim(exact_eps_fn(full), x, d)
    # Gaussian data: each DDIM step is affine, x' - sqrt(abar') mu = r (x - sqrt(abar) mu) with
    # r = (sqrt(abar' abar) c^2 + sqrt((1 - abar')(1 - abar))) / (abar c^2 + 1 - abar)
    r = torch.ones(2, dtype=torch.float64)
    for ab, abp in zip(d.alphas_cumprod.tolist(), d.alphas_cumprod_prev.tolist()):
        r = r * (math.sqrt(abp * ab) * C**2 + math.sqrt((1 - abp) * (1 - ab))) / (ab * C**2 + 1 - ab)
    shape = (1, 2, 1, 1)
    expect = MU.reshape(shape) + r.reshape(shape) * (x - math.sqrt(d.alphas_cumprod[-1]) * MU.reshape(shape))
    assert torch.allclose(out, expect, atol=1e-10)
    # approximately the target on 250 steps
    out = sample_ddim(exact_eps_fn(full), x, full.respace(250))
    mean, var = _moments(out)
    assert torch.all((mean - MU).abs() < 4 * C / 100 + 0.02)
    assert torch.all((var / C**2 - 1).abs() < 0.06)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(exact_eps_fn(full), x, d, eta=-1.0)


def test_guided_dit_model_and_low_precision():
    from sit.guidance import guided as guidance
    full = DiscreteDiffusion()
    d = full.respace(10)
    exact = exact_eps_fn(full, learned_v=0.0)
    seen = []

    def model_fn(x, k, y):  # conditional rows: exact eps; null rows (y = 1000): zero eps; v = 0
        seen.append(k)
        out = exact(x, k)
        return torch.where((y == 1000).reshape(-1, 1, 1, 1), torch.zeros_like(out), out)

    guided = guidance.GuidedModel(model_fn, 2.0, null_class=1000, channels=2)
    x = torch.randn(6, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    y = torch.zeros(6, dtype=torch.long)
    out = sample_ddpm(lambda x, k: guided(x, k, y), x, d, generator=torch.Generator().manual_seed(8))
    # guidance by 2 against a zero unconditional eps doubles eps-hat and leaves v alone
    ref = sample_ddpm(lambda x, k: exact(x, k) * torch.tensor([2.0, 2.0, 1.0, 1.0], dtype=x.dtype).reshape(1, 4, 1, 1),
                      x, d, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(out, ref) and guided.nfe == 10
    assert all(k.dtype == torch.int64 and k.shape == (12,) for k in seen)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        xs = x.to(dtype)
        o = sample_ddpm(lambda x, k: exact(x.double(), k).to(x.dtype), xs, d, generator=torch.Generator().manual_seed(8))
        assert o.dtype == dtype and torch.isfinite(o).all()
        o = sample_ddim(lambda x, k: exact(x.double(), k).to(x.dtype), xs, d)
        assert o.dtype == dtype and torch.isfinite(o).all()


def test_ancestral_step_matches_an_independent_implementation():
    """diffusers' DDPMScheduler ("learned_range", DiT's kept steps as custom timesteps, float64
    tables) is an independent implementation of the same step."""
    diffusers = pytest.importorskip("diffusers")
    full = DiscreteDiffusion()
    d = full.respace(50)
    sch = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        variance_type="learned_range", clip_sample=False, prediction_type="epsilon",
    )
    sch.set_timesteps(timesteps=d.timesteps.flip(0).tolist())
    sch.betas, sch.alphas_cumprod = full.betas.clone(), full.alphas_cumprod.clone()
    sch.alphas = 1 - sch.betas
    W = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.3

    def model_fn(x, k):
        return torch.tanh(torch.einsum("oc,bchw->bohw", W, x) + k.reshape(-1, 1, 1, 1) / 1000.0)

    x0 = torch.randn(3, 4, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = sample_ddpm(model_fn, x0, d, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    x = x0.clone()
    for k in sch.timesteps:
        x = sch.step(model_fn(x, torch.full((3,), int(k))), int(k), x, generator=g).prev_sample
    assert torch.allclose(ours, x, atol=1e-10)
