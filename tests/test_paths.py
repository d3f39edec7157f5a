"""Interpolants (eq. 1, 10-12) and the time grids of sit.timegrid."""

import math

import pytest
import torch

from sit.paths import GVP, VP, CustomPath, Linear, expand_like, get_path  # noqa: F401
from sit.timegrid import GRIDS, check_t, sample_training_t, sampling_grid

PATHS = [Linear(), GVP(), VP(), VP(beta_min=0.5, beta_max=10.0)]


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_derivatives_match_autograd(path):
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        tt = t.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(tt).sum(), tt)
        torch.testing.assert_close(df(t), g)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_endpoints_monotone_and_lambda(path):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a, s = path.alpha(t), path.sigma(t)
    assert a[0] == 1.0 and s[0] == 0.0
    assert (a[1:] < a[:-1]).all() and (s[1:] > s[:-1]).all()
    inner = t[1:-1]
    a, s, da, ds = path.coefficients(inner)
    torch.testing.assert_close(path.lam(inner), ds * s - da * s * s / a)
    assert (path.lam(inner) > 0).all()
    torch.testing.assert_close(path.w_kl(inner), 2 * path.lam(inner))


def test_linear_gvp_reach_noise_vp_does_not():
    one = torch.tensor([1.0], dtype=torch.float64)
    assert Linear().alpha(one).item() == 0 and Linear().sigma(one).item() == 1
    assert abs(GVP().alpha(one).item()) < 1e-15 and GVP().sigma(one).item() == 1
    a1 = VP().alpha(one).item()
    assert math.isclose(a1, math.exp(-0.25 * (0.1 + 20)), rel_tol=1e-12)  # ~ 6.6e-3
    t = torch.rand(10, dtype=torch.float64)
    torch.testing.assert_close(GVP().alpha(t) ** 2 + GVP().sigma(t) ** 2, torch.ones_like(t))
    torch.testing.assert_close(VP().alpha(t) ** 2 + VP().sigma(t) ** 2, torch.ones_like(t))


def test_w_kl_is_beta_on_vp():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    vp = VP()
    torch.testing.assert_close(vp.w_kl(t), 0.1 + 19.9 * t)
    # and the generic formula agrees away from t = 0, where sigma_dot is singular
    inner = t[1:]
    a, s, da, ds = vp.coefficients(inner)
    torch.testing.assert_close(2 * (ds * s - da * s * s / a), 0.1 + 19.9 * inner)
    assert torch.isinf(vp.d_sigma(torch.zeros(1, dtype=torch.float64))).all()


def test_x_t_and_velocity_target():
    path = GVP()
    x, e = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    t = torch.rand(4)
    a, s, da, ds = (expand_like(c, x) for c in path.coefficients(t))
    torch.testing.assert_close(path.x_t(x, e, t), a * x + s * e)
    torch.testing.assert_close(path.velocity_target(x, e, t), da * x + ds * e)
    # float32 coefficients for a bf16 state
    xb = x.to(torch.bfloat16)
    assert path.x_t(xb, e.to(torch.bfloat16), t).dtype == torch.bfloat16


def test_custom_path_autograd_and_explicit():
    alpha = lambda t: 1 - t**2  # noqa: E731
    sigma = lambda t: torch.sin(math.pi * t / 2)  # noqa: E731
    p = CustomPath(alpha, sigma)
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    torch.testing.assert_close(p.d_alpha(t), -2 * t)
    torch.testing.assert_close(p.d_sigma(t), math.pi / 2 * torch.cos(math.pi * t / 2))
    q = CustomPath(alpha, sigma, d_alpha=lambda t: -2 * t, d_sigma=lambda t: torch.zeros_like(t))
    assert (q.d_sigma(t) == 0).all()
    # a custom path equal to Linear gives Linear's lambda
    lin = CustomPath(lambda t: 1 - t, lambda t: t * 1.0)
    torch.testing.assert_close(lin.lam(t), Linear().lam(t))


def test_get_path_names():
    assert isinstance(get_path("linear"), Linear)
    assert isinstance(get_path("GVP"), GVP)
    assert isinstance(get_path("sbdm-vp"), VP)
    p = Linear()
    assert get_path(p) is p
    with pytest.raises(ValueError, match="'cosine'"):
        get_path("cosine")
    with pytest.raises(ValueError, match="beta"):
        VP(beta_min=5.0, beta_max=1.0)


def test_expand_like():
    x = torch.zeros(4, 3, 2)
    assert expand_like(torch.ones(4), x).shape == (4, 1, 1)
    assert expand_like(torch.tensor(0.5), x).shape == ()
    with pytest.raises(ValueError, match="shape"):
        expand_like(torch.ones(3), x)


# ---------------------------------------------------------------- timegrid
def test_check_t_names_out_of_range():
    check_t(torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_t(torch.tensor([1.2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_t(-0.1)
    with pytest.raises(ValueError, match="finite"):
        check_t(torch.tensor([float("nan")]))


@pytest.mark.parametrize("kind", GRIDS)
def test_sampling_grids(kind):
    g = sampling_grid(10, 0.999, 0.01, kind=kind, shift=3.0)
    assert g.shape == (11,) and g.dtype == torch.float64
    assert g[0] == 0.999 and g[-1] == 0.01
    assert (g[1:] < g[:-1]).all()


def test_sampling_grid_errors_and_uniform():
    torch.testing.assert_close(sampling_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="num_steps"):
        sampling_grid(0)
    with pytest.raises(ValueError, match="grid endpoints"):
        sampling_grid(5, t_start=1.5)
    with pytest.raises(ValueError, match="t_start"):
        sampling_grid(5, t_start=0.2, t_end=0.5)
    with pytest.raises(ValueError, match="'log'"):
        sampling_grid(5, kind="log")


def test_sample_training_t():
    g = torch.Generator().manual_seed(0)
    t = sample_training_t(20000, 0.1, 0.4, generator=g)
    assert t.shape == (20000,) and t.min() >= 0.1 and t.max() <= 0.4
    assert abs(t.mean().item() - 0.25) < 0.005
    t = sample_training_t(20000, dist="logit_normal", loc=0.0, scale=1.0, generator=g)
    assert abs(t.median().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="training time range"):
        sample_training_t(4, -0.5, 1.0)
    with pytest.raises(ValueError, match="'beta'"):
        sample_training_t(4, dist="beta")


# ---------------------------------------------------------------- one source of truth
def test_path_properties_and_default_ranges():
    from sit.paths import PATH_NAMES, coef_dtype

    assert PATH_NAMES == ("linear", "gvp", "vp")
    lin, gvp, vp = Linear(), GVP(), VP()
    assert (lin.alpha_1_zero, gvp.alpha_1_zero, vp.alpha_1_zero) == (True, True, False)
    assert (lin.singular_at_0, gvp.singular_at_0, vp.singular_at_0) == (False, False, True)
    # the generic (computed) properties agree with the stated ones
    for p in (lin, gvp, vp):
        c = CustomPath(p.alpha, p.sigma)
        assert (c.alpha_1_zero, c.singular_at_0) == (p.alpha_1_zero, p.singular_at_0), p
    assert lin.train_t_range("velocity") == (0.0, 1.0)
    assert gvp.train_t_range("score") == (1e-3, 1 - 1e-3)
    assert vp.train_t_range("noise") == (1e-5, 1.0)
    assert lin.sample_t_range("velocity") == (1.0, 0.0)
    assert lin.sample_t_range("noise") == (1 - 1e-3, 1e-3)
    assert vp.sample_t_range("velocity") == (1.0, 1e-3)
    assert coef_dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.float32
    assert coef_dtype(torch.zeros(1), torch.zeros(1, dtype=torch.float64)) == torch.float64
    assert coef_dtype(torch.zeros(1, dtype=torch.int64)) == torch.float32
