"""Likelihood by the probability-flow ODE and path length, against Gaussian closed forms (math.md §7)."""

import math

import pytest
import torch
from scipy.integrate import quad

from sit.likelihood import iterate_batches, log_likelihood, path_length, standard_normal_logp, uniform_dequantize
from sit.paths import GVP, VP, Linear

D64 = torch.float64
MU = torch.tensor([0.5, -1.0, 0.25], dtype=D64)
L = torch.tensor([[0.8, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.4, 1.2]], dtype=D64)
SIGMA = L @ L.T  # full covariance of the target x* ~ N(MU, SIGMA)
EVALS, EVECS = torch.linalg.eigh(SIGMA)


def sigma_dsigma(path, t):
    """sigma_dot sigma = (1/2) d(sigma^2)/dt, finite at t = 0 also for VP (beta e^-B / 2 there)."""
    if isinstance(path, VP):
        return 0.5 * path.beta(t) * torch.exp(-path.B(t))
    return path.d_sigma(t) * path.sigma(t)


def gaussian_velocity(path, mu=MU, cov=SIGMA):
    """Exact v(x, t) = E[alpha_dot x* + sigma_dot eps | x_t = x] for x* ~ N(mu, cov), x (B, D):
    v = alpha_dot mu + (alpha_dot alpha cov + sigma_dot sigma I)(alpha^2 cov + sigma^2 I)^-1 (x - alpha mu)."""
    eye = torch.eye(cov.shape[0], dtype=D64)

    def field(x, t):
        assert t.shape == (x.shape[0],)
        a, s, da, _ = (c.to(D64) for c in path.coefficients(t.to(D64)))
        a_, s_, da_, dss_ = (c[:, None, None] for c in (a, s, da, sigma_dsigma(path, t.to(D64))))
        cov_t = a_**2 * cov + s_**2 * eye
        K = torch.linalg.solve(cov_t, (da_ * a_ * cov + dss_ * eye), left=False)  # (B, D, D)
        # K = (da a cov + ds s I) cov_t^-1 (both symmetric and commuting)
        return da[:, None] * mu + torch.einsum("bij,bj->bi", K, x - a[:, None] * mu)

    return field


def gaussian_logp(x, mu=MU, cov=SIGMA):
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def test_exact_likelihood_of_a_gaussian_linear_and_gvp():
    x = torch.randn(6, 3, dtype=D64, generator=torch.Generator().manual_seed(0)) * 1.5
    for path in (Linear(), GVP()):
        res = log_likelihood(gaussian_velocity(path), x, divergence="exact", atol=1e-9, rtol=1e-9)
        assert torch.allclose(res.logp, gaussian_logp(x), atol=1e-6), (path, res.logp, gaussian_logp(x))
        assert res.nfe > 0 and res.dim == 3
        assert torch.equal(res.logp_stderr, torch.zeros(6, dtype=D64))
        assert torch.allclose(res.bpd, -res.logp / (3 * math.log(2)))
        # the ODE ends at N(0, I): x_1 = cov^-1/2 (x - mu) for Linear / GVP (alpha_1 = 0, sigma_1 = 1)
        inv_sqrt = EVECS @ torch.diag(EVALS.rsqrt()) @ EVECS.T
        assert torch.allclose(res.x_end, (x - MU) @ inv_sqrt.T, atol=1e-6)


def test_fixed_step_method_converges():
    x = torch.randn(4, 3, dtype=D64, generator=torch.Generator().manual_seed(1))
    exact = gaussian_logp(x)
    errs = []
    for n in (8, 16):
        res = log_likelihood(gaussian_velocity(Linear()), x, method="rk4", num_steps=n)
        errs.append(float((res.logp - exact).abs().max()))
    assert errs[1] < errs[0] / 8 and errs[1] < 1e-3


def test_vp_prior_convention_and_exact_prior():
    path = VP()
    x = torch.randn(5, 3, dtype=D64, generator=torch.Generator().manual_seed(2))
    field = gaussian_velocity(path)
    # exact p_1 = N(alpha_1 mu, alpha_1^2 cov + sigma_1^2 I): recovers the data density
    a1, s1 = float(path.alpha(torch.tensor(1.0, dtype=D64))), float(path.sigma(torch.tensor(1.0, dtype=D64)))
    p1 = torch.distributions.MultivariateNormal(a1 * MU, covariance_matrix=a1**2 * SIGMA + s1**2 * torch.eye(3, dtype=D64))
    res = log_likelihood(field, x, atol=1e-9, rtol=1e-9, prior_logp=p1.log_prob)
    assert torch.allclose(res.logp, gaussian_logp(x), atol=1e-6)
    # default N(0, I) prior (paper / official convention): log N(X_1; 0, I) + log det of the affine flow map
    res0 = log_likelihood(field, x, atol=1e-9, rtol=1e-9)
    A = EVECS @ torch.diag(((a1**2 * EVALS + s1**2) / EVALS).sqrt()) @ EVECS.T
    x1 = a1 * MU + (x - MU) @ A.T
    expect = standard_normal_logp(x1) + torch.logdet(A)
    assert torch.allclose(res0.logp, expect, atol=1e-6)
    assert not torch.allclose(res0.logp, res.logp, atol=1e-3)


def test_hutchinson_is_unbiased_within_its_standard_error():
    x = torch.randn(4, 3, dtype=D64, generator=torch.Generator().manual_seed(3))
    res = log_likelihood(
        gaussian_velocity(Linear()), x, divergence="hutchinson", num_probes=24,
        generator=torch.Generator().manual_seed(4), atol=1e-7, rtol=1e-7,
    )
    exact = gaussian_logp(x)
    assert torch.all(res.logp_stderr > 0)  # the covariance is not diagonal: probes disagree
    assert torch.all((res.logp - exact).abs() < 4 * res.logp_stderr + 1e-5)
    one = log_likelihood(gaussian_velocity(Linear()), x, divergence="hutchinson", num_probes=1, method="rk4", num_steps=4)
    assert torch.isnan(one.logp_stderr).all()


def test_units_dequantisation_and_data_scale():
    x = torch.randn(3, 3, dtype=D64, generator=torch.Generator().manual_seed(5))
    base = log_likelihood(gaussian_velocity(Linear()), x, method="rk4", num_steps=4, interval_width=2.0)
    assert torch.allclose(base.bpd_dequantized, base.bpd + 7.0)
    # x = s y: log p_y(y) = log p_x(x) + D log s
    scaled = log_likelihood(gaussian_velocity(Linear()), x, method="rk4", num_steps=4, data_scale=0.5)
    assert torch.allclose(scaled.logp, base.logp + 3 * math.log(0.5))
    s = base.summary()
    assert s["bpd_dequantized"] == pytest.approx(s["bpd"] + 7.0)
    assert s["bpd_se"] == pytest.approx(float(base.bpd.std()) / math.sqrt(3))
    pix = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    deq = uniform_dequantize(pix, -1.0, 1.0, generator=torch.Generator().manual_seed(0))
    lo = -1 + 2 * pix.float() / 256
    assert torch.all(deq >= lo) and torch.all(deq < lo + 2 / 256)


def test_bad_inputs_are_named():
    f = gaussian_velocity(Linear())
    x = torch.zeros(2, 3, dtype=D64)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(f, x, divergence="approx")
    with pytest.raises(ValueError, match="ODE method"):
        log_likelihood(f, x, method="leapfrog")
    with pytest.raises(ValueError, match="num_steps"):
        log_likelihood(f, x, method="euler")
    with pytest.raises(ValueError, match="num_probes"):
        log_likelihood(f, x, divergence="hutchinson", num_probes=0)
    with pytest.raises(ValueError, match="t_noise"):
        log_likelihood(f, x, t_noise=1.5)
    with pytest.raises(ValueError, match="t_noise must be greater than t_data"):
        log_likelihood(f, x, t_data=0.5, t_noise=0.2)
    with pytest.raises(ValueError, match="reduction"):
        path_length(f, Linear(), x, reduction="max")
    with pytest.raises(ValueError, match="no data"):
        next(iterate_batches([]))


# ---------------------------------------------------------------- path length
C_DIAG = torch.tensor([0.5, 1.5], dtype=D64)
MU_DIAG = torch.tensor([1.0, -0.5], dtype=D64)


def expected_sq_velocity(path, t):
    """E|v(x_t, t)|^2 for x* ~ N(mu, diag(c^2)), summed over dims: |alpha_dot mu|^2 +
    sum_d (alpha_dot alpha c_d^2 + sigma_dot sigma)^2 / (alpha^2 c_d^2 + sigma^2)."""
    a, s, da, ds = (float(v) for v in path.coefficients(torch.tensor(t, dtype=D64)))
    c2 = C_DIAG**2
    return float((da * MU_DIAG).pow(2).sum() + ((da * a * c2 + ds * s) ** 2 / (a * a * c2 + s * s)).sum())


@pytest.mark.parametrize("path", [Linear(), GVP(), VP()], ids=["linear", "gvp", "vp"])
def test_path_length_of_a_gaussian(path):
    exact, _ = quad(lambda t: expected_sq_velocity(path, t), 0.0, 1.0, epsabs=1e-10, limit=200)
    data = MU_DIAG + C_DIAG * torch.randn(4000, 2, dtype=D64, generator=torch.Generator().manual_seed(6))
    field = gaussian_velocity(path, MU_DIAG, torch.diag(C_DIAG**2))
    mean, se = path_length(field, path, data, num_points=10_000, generator=torch.Generator().manual_seed(7))
    assert se > 0 and abs(mean - exact) < 4 * se, (mean, se, exact)
    per_dim, se_dim = path_length(
        field, path, [data[:500], data[500:1000]], num_points=3000, reduction="mean",
        generator=torch.Generator().manual_seed(7),
    )
    assert abs(per_dim - exact / 2) < 4 * se_dim


def test_adaptive_solve_never_evaluates_the_field_past_t_noise():
    """dopri5 lands its last step on t_noise instead of stepping past it (t > 1) and interpolating back."""
    seen = []
    f = gaussian_velocity(Linear())
    log_likelihood(f, torch.zeros(2, 3, dtype=D64), t_noise=0.7, callback=lambda t, n: seen.append(t))
    assert seen and max(seen) <= 0.7 + 1e-12 and min(seen) >= 0.0
