"""DPM-Solver++(2M) (sit.samplers.multistep) and the log-SNR grid: exactness where x_hat* is
constant, second order on a Gaussian target, and its row in the sampler table."""

import math

import pytest
import torch

from sit.paths import get_path
from sit.samplers import SAMPLERS, SampleConfig, sample, sample_dpmpp_2m, steps_for_nfe
from sit.timegrid import sampling_grid
from sit.toy import GaussianMixture

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
C = torch.tensor([0.3, 2.0], dtype=torch.float64)


def exact_ode(path, mu, c, x, t_from, t_to):
    """The probability-flow ODE's exact map for x* ~ N(mu, c^2) (math.md section 7): the
    standardised coordinate (x - alpha mu) / sqrt(alpha^2 c^2 + sigma^2) is constant."""
    def ms(t):
        tt = torch.tensor([t], dtype=torch.float64)
        a, s = path.alpha(tt), path.sigma(tt)
        return a * mu, torch.sqrt(a**2 * c**2 + s**2)

    m0, s0 = ms(t_from)
    m1, s1 = ms(t_to)
    return m1 + s1 * (x - m0) / s0


@pytest.mark.parametrize("path_name", ["linear", "gvp", "vp"])
@pytest.mark.parametrize("grid", ["uniform", "logsnr", "shifted"])
def test_exact_for_one_point_data(path_name, grid):
    """Data on one point: x_hat* = mu everywhere, so the data-prediction step is exact on any grid
    and at any step count, down to t = 0 (VP: from t = 1, alpha_1 > 0)."""
    path = get_path(path_name)
    mu = torch.tensor([0.7, -1.2], dtype=torch.float64)

    def field(x, t):  # the exact velocity of x* = mu: x_t = alpha mu + sigma eps
        a, s, da, ds = (f(t)[:, None] for f in (path.alpha, path.sigma, path.d_alpha, path.d_sigma))
        return da * mu + ds * (x - a * mu) / s

    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t_end = 1e-3 if path_name == "vp" else 0.0
    for n in (1, 2, 3, 7):
        g = sampling_grid(n, 1.0, t_end, kind=grid, shift=3.0, log_snr=None if path_name == "linear" else
                          (lambda t: torch.log(path.alpha(t)) - torch.log(path.sigma(t))))
        out = sample_dpmpp_2m(field, x1, g, path=path)
        ref = exact_ode(path, mu, torch.zeros(2, dtype=torch.float64), x1, 1.0, t_end)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path_name", ["linear", "gvp", "vp"])
def test_second_order_on_gaussian(path_name):
    """Error at t_end against the exact ODE map: halving the step quarters it (slope ~ 2), unlike
    Euler's (slope ~ 1) on the same grids."""
    path = get_path(path_name)
    gauss = GaussianMixture.gaussian(MU, C)
    x1 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t_start = 1.0 if path_name == "vp" else 0.999

    def errors(method):
        errs = []
        for n in (32, 64, 128):
            cfg = SampleConfig(method=method, num_steps=n, grid="logsnr", t_start=t_start, t_end=1e-2)
            x, info = sample(gauss.field(path), x1, cfg, path)
            assert info["nfe"] == n
            errs.append(float((x - exact_ode(path, MU, C, x1, t_start, 1e-2)).abs().max()))
        return [math.log2(errs[i] / errs[i + 1]) for i in range(2)], errs

    slopes, errs = errors("dpmpp_2m")
    assert all(1.8 < s < 2.3 for s in slopes), (slopes, errs)
    euler_slopes, euler_errs = errors("euler")
    assert all(0.8 < s < 1.3 for s in euler_slopes), euler_slopes
    assert errs[-1] < euler_errs[-1] / 4


def test_logsnr_grid_is_uniform_in_log_snr():
    path = get_path("gvp")

    def ell(t):
        return torch.log(path.alpha(t)) - torch.log(path.sigma(t))

    g = sampling_grid(6, 0.9, 0.05, kind="logsnr", log_snr=ell)
    assert float(g[0]) == 0.9 and float(g[-1]) == 0.05
    d = torch.diff(ell(g))
    torch.testing.assert_close(d, torch.full_like(d, float(d[0])), rtol=1e-9, atol=1e-12)
    # infinite ends (t = 1 on GVP, t = 0) stay in the grid as their own points
    g = sampling_grid(6, 1.0, 0.0, kind="logsnr", log_snr=ell)
    assert len(g) == 7 and float(g[0]) == 1.0 and float(g[-1]) == 0.0 and bool((g[1:] < g[:-1]).all())
    d = torch.diff(ell(g[1:-1]))
    torch.testing.assert_close(d, torch.full_like(d, float(d[0])), rtol=1e-9, atol=1e-12)


def test_table_row_and_nfe():
    row = SAMPLERS["dpmpp_2m"]
    assert row.kind == "multistep" and row.nfe_per_step == 1
    assert steps_for_nfe("dpmpp_2m", 8) == 8
    cfg = SampleConfig(method="dpmpp_2m", num_steps=8, grid="logsnr")
    assert cfg.expected_nfe(get_path("linear")) == 8 and not cfg.is_sde
