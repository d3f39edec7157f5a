"""ODE / SDE samplers driven by exact fields of Gaussian and Gaussian-mixture targets (math.md 7)."""

import subprocess
import sys

import pytest
import torch

from sit.diffusion_coef import W_NAMES, LossTable, get_w
from sit.paths import GVP, VP, Linear
from sit.samplers import (
    METHODS,
    SAMPLERS,
    NFECounter,
    SampleConfig,
    sample,
    sample_euler,
    sample_euler_maruyama,
    sample_heun,
    sample_sde_heun,
    sample_torchdiffeq,
)
from sit.timegrid import sampling_grid
from sit.toy import GaussianMixture, default_mixture
from sit.toy import sde_exact_moments as toy_sde_moments

MU = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
C = torch.tensor([0.5, 1.0, 0.2], dtype=torch.float64)
GAUSS = GaussianMixture.gaussian(MU, C)


def affine_map(sampler, path, grid, **kw):
    """For a Gaussian target the exact field is affine in x per dimension, and so is any
    Runge-Kutta map: x_N = A x_0 + b. Return (b, A) from the images of 0 and 1; then for
    x_0 ~ N(0, 1) the output has mean b and std |A| exactly (no Monte-Carlo)."""
    x0 = torch.stack([torch.zeros(3), torch.ones(3)]).to(torch.float64)
    out = sampler(GAUSS.field(path), x0, grid, **kw)
    return out[0], out[1] - out[0]


def moment_error(sampler, path, n, t_start=1.0, t_end=0.0, **kw):
    b, A = affine_map(sampler, path, sampling_grid(n, t_start, t_end), **kw)
    return float((b - MU).abs().max() + (A.abs() - C).abs().max())


# ---------------------------------------------------------------- exact field sanity
@pytest.mark.parametrize("path", [Linear(), GVP(), VP()], ids=["linear", "gvp", "vp"])
def test_mixture_score_matches_autograd_and_velocity_matches_eq9(path):
    gm = default_mixture()
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    xr = x.clone().requires_grad_(True)
    lp = torch.stack([gm.marginal(path, float(ti)).log_prob(xr[i : i + 1])[0] for i, ti in enumerate(t)])
    (grad,) = torch.autograd.grad(lp.sum(), xr)
    torch.testing.assert_close(gm.score(path, x, t), grad)
    from sit.objectives import velocity_from_score

    torch.testing.assert_close(gm.velocity(path, x, t), velocity_from_score(path, gm.score(path, x, t), x, t))


# ---------------------------------------------------------------- ODE: order of convergence
@pytest.mark.parametrize("path", [Linear(), GVP()], ids=["linear", "gvp"])
def test_euler_first_order(path):
    e1, e2, e3 = (moment_error(sample_euler, path, n) for n in (20, 40, 80))
    assert 1.6 < e1 / e2 < 2.4 and 1.7 < e2 / e3 < 2.3, (e1, e2, e3)


@pytest.mark.parametrize("path", [Linear(), GVP()], ids=["linear", "gvp"])
def test_heun_second_order(path):
    e1, e2, e3 = (moment_error(sample_heun, path, n) for n in (10, 20, 40))
    assert 3.2 < e1 / e2 < 4.8 and 3.5 < e2 / e3 < 4.5, (e1, e2, e3)
    assert e3 < 5e-3
    # an Euler final step to t = 0 keeps the second order globally
    f1, f2 = (moment_error(sample_heun, path, n, final_euler=True) for n in (20, 40))
    assert 2.5 < f1 / f2 < 5.0 and f2 < 1e-2


def test_torchdiffeq_fixed_grid_rk4_fourth_order_and_dopri5():
    path = Linear()
    e1, e2 = (moment_error(sample_torchdiffeq, path, n, method="rk4") for n in (8, 16))
    assert 11 < e1 / e2 < 21, (e1, e2)
    stats = {}
    err = moment_error(sample_torchdiffeq, path, 10, method="dopri5", atol=1e-8, rtol=1e-8, stats=stats)
    assert err < 1e-6 and stats["nfe"] > 6


def test_vp_from_standard_normal_matches_closed_form():
    """SBDM-VP: p_1 is not N(0, I); from N(0, I) the exact flow ends at
    mean alpha_e mu - alpha_1 mu sd_e / sd_1 and std sd_e / sd_1 (math.md section 7, t_end > 0)."""
    path = VP()
    t_end = 1e-3
    one, te = torch.tensor([1.0], dtype=torch.float64), torch.tensor([t_end], dtype=torch.float64)
    a1, s1, ae, se = path.alpha(one), path.sigma(one), path.alpha(te), path.sigma(te)
    sd1, sde = torch.sqrt(a1**2 * C**2 + s1**2), torch.sqrt(ae**2 * C**2 + se**2)
    mean, std = ae * MU - a1 * MU * sde / sd1, sde / sd1
    b, A = affine_map(sample_heun, path, sampling_grid(200, 1.0, t_end))
    torch.testing.assert_close(b, mean, rtol=0, atol=2e-4)
    torch.testing.assert_close(A.abs(), std, rtol=0, atol=2e-4)
    # at t = 0 the formula becomes the one printed in math.md
    torch.testing.assert_close(ae * MU - a1 * MU * sde / sd1, MU - C * a1 * MU / sd1, rtol=0, atol=2e-3)
    # dopri5 lands on t_end without evaluating the field below it (VP is NaN for t < 0)
    b2, A2 = affine_map(sample_torchdiffeq, path, sampling_grid(1, 1.0, t_end), method="dopri5")
    torch.testing.assert_close(b2, mean, rtol=0, atol=2e-3)


@pytest.mark.parametrize("method", ["euler", "heun", "dopri5", "midpoint"])
def test_ode_samplers_on_gaussian_mixture(method):
    gm = default_mixture()
    path = Linear()
    g = torch.Generator().manual_seed(0)
    n = 4000
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x, info = sample(gm.field(path), x0, SampleConfig(method=method, num_steps=40), path)
    se = torch.sqrt(torch.diagonal(gm.cov()) / n)
    assert ((x.mean(0) - gm.mean()).abs() < 4 * se + 0.02).all()
    tol = 0.3 if method == "euler" else 0.1  # first order: ~0.13 at 40 steps
    torch.testing.assert_close(torch.cov(x.T), gm.cov(), rtol=0, atol=tol)


def test_ode_map_of_mixture_is_deterministic_transport():
    """Push target samples forward to t = 1 by the exact ODE (Heun, reversed grid) and back: the
    round trip is the identity up to discretisation error (the flow is invertible)."""
    gm = default_mixture()
    path = GVP()
    x_star = gm.sample(200, torch.Generator().manual_seed(1))
    # the samplers walk decreasing grids; integrate data -> noise in s = 1 - t instead
    back_field = lambda x, t: -gm.velocity(path, x, 1 - t)  # noqa: E731
    z = sample_heun(back_field, x_star, sampling_grid(200, 1.0, 0.0))  # s = 1 - t: from t = 0 to t = 1
    x_back = sample_heun(gm.field(path), z, sampling_grid(200, 1.0, 0.0))
    torch.testing.assert_close(x_back, x_star, rtol=0, atol=1e-3)


# ---------------------------------------------------------------- SDE samplers, every w_t
# Monte-Carlo with the real generator path; every w is also covered without MC by
# test_sde_exact_moments_every_w below, so most MC cases are marked slow.
FAST_W = ("sigma", "kl", "kl_eta", "official-decreasing")
SDE_CASES = [
    (m, w) if w in FAST_W else pytest.param(m, w, marks=pytest.mark.slow)
    for m in ("euler_maruyama", "sde_heun")
    for w in W_NAMES
]


@pytest.mark.parametrize("method, w", SDE_CASES)
def test_sde_samplers_every_w(method, w):
    """Every w_t gives the target (Tweedie last step from t = 0.04, so that a w_t that stays large
    near t = 0, like 'constant', is not judged by the O(h) bias of one big last step)."""
    path = Linear()
    gauss = GaussianMixture.gaussian(MU[:2], C[:2])
    table = LossTable(t=[0.0, 0.5, 1.0], loss=[0.5, 1.0, 2.0])
    eta = 0.5 if w == "kl_eta" else 0.0
    cfg = SampleConfig(method=method, num_steps=100, w=w, eta=eta, w_scale=0.5, last_step="tweedie")
    g = torch.Generator().manual_seed(123)
    n = 10000
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x, info = sample(gauss.field(path), x0, cfg, path, generator=g, table=table)
    assert torch.isfinite(x).all()
    assert info["t_end"] == 0.0
    # Monte-Carlo: mean s.e. ~ c / sqrt(n) <= 0.01, std s.e. ~ 0.7 %; Euler-Maruyama bias O(h)
    torch.testing.assert_close(x.mean(0), MU[:2], rtol=0, atol=0.04)
    torch.testing.assert_close(x.std(0), C[:2], rtol=0.06, atol=0.0)


@pytest.mark.parametrize("path", [GVP(), VP()], ids=["gvp", "vp"])
@pytest.mark.parametrize("last_step", [None, "mean", "tweedie", "euler"])
def test_sde_last_steps(path, last_step):
    gauss = GaussianMixture.gaussian(MU[:2], C[:2])
    g = torch.Generator().manual_seed(7)
    n = 10000
    x0 = gauss.marginal(path, 1.0).sample(n, g)  # exact p_1 (VP never reaches N(0, I))
    cfg = SampleConfig(method="euler_maruyama", num_steps=100, w="kl", last_step=last_step)
    x, info = sample(gauss.field(path), x0, cfg, path, generator=g)
    tgt = gauss if info["t_end"] == 0 else gauss.marginal(path, info["t_end"])
    assert info["nfe"] == 100
    if last_step is not None:
        assert info["grid"][-2].item() == pytest.approx(0.04) and info["t_end"] == 0.0
    torch.testing.assert_close(x.mean(0), tgt.mean(), rtol=0, atol=0.04)
    # the last step leaves the t = 0.04 noise level partly in place for "mean"/"euler"
    tol = 0.06 if last_step in (None, "tweedie") else 0.12
    torch.testing.assert_close(x.std(0), tgt.stds[0], rtol=tol, atol=0.0)


def test_sde_on_gaussian_mixture():
    gm = default_mixture()
    path = Linear()
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(8000, 2, generator=g, dtype=torch.float64)
    for method in ("euler_maruyama", "sde_heun"):
        x, _ = sample(gm.field(path), x0, SampleConfig(method=method, num_steps=60, w="sigma"), path, generator=g)
        torch.testing.assert_close(x.mean(0), gm.mean(), rtol=0, atol=0.05)
        torch.testing.assert_close(torch.cov(x.T), gm.cov(), rtol=0, atol=0.12)


def test_w_kl_at_t1_is_a_clear_error_never_nan():
    for path in (Linear(), GVP()):
        field = GAUSS.field(path)
        x = torch.randn(4, 3, dtype=torch.float64)
        for fn in (sample_euler_maruyama, sample_sde_heun):
            with pytest.raises(ValueError, match=r"1 - eps"):
                fn(field, x, sampling_grid(10, 1.0, 0.0), path=path, w=get_w("kl", path))
        with pytest.raises(ValueError, match="t_start"):
            sample(field, x, SampleConfig(method="euler_maruyama", num_steps=10, w="kl", t_start=1.0), path)
        # the default starts at 1 - 1e-3 and is finite
        out, info = sample(field, x, SampleConfig(method="euler_maruyama", num_steps=10, w="kl"), path)
        assert info["t_start"] == pytest.approx(1 - 1e-3) and torch.isfinite(out).all()
        # kl_eta with eta > 0 is finite at t = 1
        tab = LossTable(t=[0.0, 1.0], loss=[1.0, 1.0])
        out, info = sample(field, x, SampleConfig(method="euler_maruyama", num_steps=10, w="kl_eta", eta=1.0), path, table=tab)
        assert info["t_start"] == 1.0 and torch.isfinite(out).all()


def test_tweedie_needs_grid_ending_at_zero():
    with pytest.raises(ValueError, match="tweedie"):
        sample_euler_maruyama(GAUSS.field(Linear()), torch.zeros(2, 3), sampling_grid(5, 1.0, 0.1),
                              path=Linear(), w=get_w("sigma", Linear()), last_step="tweedie")


# ---------------------------------------------------------------- NFE, grids, generators, dtypes
def test_nfe_counts_and_steps_mean_steps():
    path = Linear()
    field = GAUSS.field(path)
    x = torch.randn(5, 3, dtype=torch.float64)
    expect = {"euler": 8, "heun": 16, "euler_maruyama": 8, "sde_heun": 2 * 7 + 1, "rk4": 32, "midpoint": 16}
    for method, nfe in expect.items():
        out, info = sample(field, x, SampleConfig(method=method, num_steps=8), path, generator=torch.Generator().manual_seed(0))
        assert info["nfe"] == nfe, method
        assert len(info["grid"]) == 9
    _, info = sample(field, x, SampleConfig(method="heun", num_steps=8, heun_final_euler=True), path)
    assert info["nfe"] == 15
    _, info = sample(field, x, SampleConfig(method="sde_heun", num_steps=8, last_step=None), path, generator=torch.Generator())
    assert info["nfe"] == 15  # last step ends at t = 0: Euler-Maruyama there
    _, info = sample(field, x, SampleConfig(method="dopri5", num_steps=8), path)
    stats = {}
    sample_torchdiffeq(field, x, sampling_grid(8), stats=stats)
    assert info["nfe"] == stats["nfe"] > 0
    counter = NFECounter(field)
    sample_heun(counter, x, sampling_grid(3))
    assert counter.nfe == 6


def test_non_uniform_grids_converge():
    for kind in ("shifted", "edm", "cosine"):
        cfg = SampleConfig(method="heun", num_steps=30, grid=kind, shift=3.0)
        x0 = torch.stack([torch.zeros(3), torch.ones(3)]).double()
        out, info = sample(GAUSS.field(Linear()), x0, cfg, Linear())
        b, A = out[0], out[1] - out[0]
        assert float((b - MU).abs().max() + (A.abs() - C).abs().max()) < 2e-2, kind
        assert info["grid"][0] == 1.0 and info["grid"][-1] == 0.0


def test_generator_reproducible_and_shape_noise():
    path = Linear()
    cfg = SampleConfig(method="euler_maruyama", num_steps=10)
    a, _ = sample(GAUSS.field(path), (6, 3), cfg, path, generator=torch.Generator().manual_seed(4))
    b, _ = sample(GAUSS.field(path), (6, 3), cfg, path, generator=torch.Generator().manual_seed(4))
    c, _ = sample(GAUSS.field(path), (6, 3), cfg, path, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32


@pytest.mark.parametrize("method", [m for m, r in SAMPLERS.items() if r.kind in ("ode", "sde", "multistep")])  # the table's v(x, t) rows
def test_trajectories(method):
    x = torch.randn(4, 3, dtype=torch.float64)
    traj, info = sample(GAUSS.field(Linear()), x, SampleConfig(method=method, num_steps=6), Linear(),
                        return_trajectory=True, generator=torch.Generator())
    assert traj.shape == (7, 4, 3)
    assert torch.equal(traj[0], x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["euler", "heun", "dopri5", "euler_maruyama", "sde_heun"])
def test_low_precision_states(dtype, method):
    path = Linear()
    field = GAUSS.field(path)
    x0 = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    ref, _ = sample(field, x0.double(), SampleConfig(method=method, num_steps=20), path, generator=torch.Generator().manual_seed(1))
    out, _ = sample(field, x0.to(dtype), SampleConfig(method=method, num_steps=20), path, generator=torch.Generator().manual_seed(1))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 0.05 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(out.double().mean(0), ref.mean(0), rtol=0, atol=tol)
    torch.testing.assert_close(out.double().std(0), ref.std(0), rtol=0, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_samplers():
    path = Linear()
    gm = GaussianMixture.gaussian(MU, C)
    x0 = torch.randn(4096, 3, device="cuda")
    for method in ("heun", "dopri5", "euler_maruyama", "sde_heun"):
        g = torch.Generator(device="cuda").manual_seed(0)
        field = lambda x, t: gm.velocity(path, x.cpu(), t.cpu()).to(x.device)  # noqa: E731
        out, info = sample(field, x0, SampleConfig(method=method, num_steps=50), path, generator=g)
        assert out.device.type == "cuda" and torch.isfinite(out).all()
        torch.testing.assert_close(out.double().mean(0).cpu(), MU, rtol=0, atol=0.1)


# ---------------------------------------------------------------- config validation, imports
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(method="ddim"), "method"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(w="foo"), "'foo'"),
        (dict(eta=-0.1), "eta"),
        (dict(w_scale=float("inf")), "w_scale"),
        (dict(last_step="median"), "last_step"),
        (dict(grid="log"), "grid"),
        (dict(t_start=1.5), "t_start"),
        (dict(t_start=0.2, t_end=0.5), "t_start"),
        (dict(last_step_size=0.0), "last_step_size"),
    ],
)
def test_sample_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SampleConfig(**kwargs)


def test_bad_grids_and_methods():
    f = GAUSS.field(Linear())
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="decreasing"):
        sample_euler(f, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample_heun(f, x, torch.tensor([1.5, 0.0]))
    with pytest.raises(ValueError, match="'dopri9'"):
        sample_torchdiffeq(f, x, sampling_grid(2), method="dopri9")
    with pytest.raises(ValueError, match="last_step"):
        sample_euler_maruyama(f, x, sampling_grid(2), path=Linear(), w=get_w("sigma", Linear()), last_step="x")
    with pytest.raises(ValueError, match="t_end"):
        SampleConfig(method="euler_maruyama", t_end=0.1).make_grid(Linear())
    assert set(METHODS) >= {"euler", "heun", "dopri5", "euler_maruyama", "sde_heun", "rk4"}


def test_default_time_ranges():
    lin, vp = Linear(), VP()
    assert SampleConfig(method="heun").time_range(lin) == (1.0, 0.0)
    assert SampleConfig(method="heun").time_range(lin, "score") == (1 - 1e-3, 1e-3)
    assert SampleConfig(method="heun").time_range(vp) == (1.0, 1e-3)
    assert SampleConfig(method="euler_maruyama", w="kl").time_range(GVP()) == (1 - 1e-3, 0.0)
    assert SampleConfig(method="euler_maruyama", w="sigma", last_step=None).time_range(lin) == (1.0, 0.0)
    assert SampleConfig(method="euler_maruyama", last_step=None).time_range(lin, "noise") == (1 - 1e-3, 1e-3)


def test_samplers_do_not_import_models():
    code = (
        "import sys, sit.samplers.sde, sit.samplers.ode, sit.samplers, sit.guidance, sit.objectives, sit.diffusion_coef; "
        "bad = [m for m in sys.modules if m.startswith(('sit.models', 'sit.data', 'sit.train', 'sit.evaluate', 'sit.cli'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_gaussian_cli(capsys, tmp_path):
    from sit.cli import main

    out = tmp_path / "demo.png"
    assert main(["demo-gaussian", "--num-samples", "300", "--num-steps", "4", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| heun |" in text and "| dopri5 |" in text and out.exists()
    assert main(["demo-gaussian", "--num-steps", "0"]) == 2


def test_noise_fn_per_sample_streams_make_samples_batch_independent():
    """With per-row seeded step noise (noise_fn), a sample depends only on its own seed."""

    def row_noise(seeds):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return lambda x: torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in gens])

    path = Linear()
    x0 = torch.randn(4, 3, dtype=torch.float64)
    for method in ("euler_maruyama", "sde_heun"):
        cfg = SampleConfig(method=method, num_steps=10)
        full, _ = sample(GAUSS.field(path), x0, cfg, path, noise_fn=row_noise([10, 11, 12, 13]))
        part, _ = sample(GAUSS.field(path), x0[[2, 0]], cfg, path, noise_fn=row_noise([12, 10]))
        torch.testing.assert_close(part, full[[2, 0]])
        other, _ = sample(GAUSS.field(path), x0, cfg, path, noise_fn=row_noise([20, 21, 22, 23]))
        assert not torch.allclose(other, full)


# ---------------------------------------------------------------- SDE: exact moments, weak order
def sde_exact_moments(method, w, n, path, last_step=None, **cfg):
    """Exact output mean and std of an SDE sampler for the Gaussian target (`sit.toy.sde_exact_moments`)."""
    c = SampleConfig(method=method, num_steps=n, w=w, last_step=last_step, **cfg)
    b, sd, _ = toy_sde_moments(GAUSS.field(path), path, c, 3, table=LossTable(t=[0.0, 1.0], loss=[0.5, 2.0]))
    return b, sd


def _sde_err(*args, **kw):
    b, sd = sde_exact_moments(*args, **kw)
    return float((b - MU).abs().max() + (sd - C).abs().max())


@pytest.mark.parametrize("w", ["sigma", "sin2", "kl", "constant"])
def test_sde_weak_order(w):
    """Euler-Maruyama is weak order 1 (error halves per doubling), the stochastic Heun order 2."""
    path = GVP()
    e1, e2 = (_sde_err("euler_maruyama", w, n, path) for n in (32, 64))
    assert 1.6 < e1 / e2 < 2.6, (w, e1, e2)
    h1, h2 = (_sde_err("sde_heun", w, n, path) for n in (32, 64))
    assert 3.0 < h1 / h2 < 5.2, (w, h1, h2)
    assert h2 < e2


@pytest.mark.parametrize("w", W_NAMES)
def test_sde_exact_moments_every_w(w):
    for path in (Linear(), GVP()):
        for method in ("euler_maruyama", "sde_heun"):
            err = _sde_err(method, w, 128, path, eta=0.5 if w == "kl_eta" else 0.0, w_scale=0.5)
            # w_KL is stiff just below t = 1 (h w / 2 > 1 in the first step): EM's largest error
            assert err < (6e-2 if method == "euler_maruyama" else 5e-3), (path, method, err)


# ---------------------------------------------------------------- NFE bookkeeping (one source)
@pytest.mark.parametrize("method", [m for m, r in SAMPLERS.items() if r.kind in ("ode", "sde", "multistep") and r.nfe_per_step])
def test_expected_nfe_matches_the_count_and_steps_for_nfe_inverts_it(method):
    from sit.samplers import nfe_per_step, steps_for_nfe

    path = GVP()
    variants = [{}]
    if method == "heun":
        variants.append({"heun_final_euler": True})
    if method in ("euler_maruyama", "sde_heun"):
        variants += [{"last_step": None}, {"last_step": None, "t_end": 0.01}]
    for extra in variants:
        for n in (1, 3, 6):
            cfg = SampleConfig(method=method, num_steps=n, **extra)
            counter = NFECounter(GAUSS.field(path))
            sample(counter, torch.zeros(2, 3, dtype=torch.float64), cfg, path)
            assert cfg.expected_nfe(path) == counter.nfe, (method, extra, n)
    per = nfe_per_step(method)
    for budget in (4, 9, 16):
        n = steps_for_nfe(method, budget)
        assert SampleConfig(method=method, num_steps=max(n, 1)).expected_nfe(path) <= budget or n == 0
        assert n >= budget // per - 1


def test_nfe_of_adaptive_methods_is_left_to_the_solver():
    from sit.samplers import nfe_per_step, steps_for_nfe

    assert nfe_per_step("dopri5") is None and SampleConfig(method="dopri5").expected_nfe(Linear()) is None
    with pytest.raises(ValueError, match="atol/rtol"):
        steps_for_nfe("dopri5", 10)
    with pytest.raises(ValueError, match="unknown sampler 'leapfrog'"):
        nfe_per_step("leapfrog")


def test_nfe_counter_counts_calls_and_rows_and_resets():
    c = NFECounter(lambda x, t: -x)
    c(torch.zeros(3, 2), torch.zeros(3))
    c(torch.zeros(5, 2), torch.zeros(5))
    assert (c.nfe, c.calls, c.rows) == (2, 2, 8)
    c.reset()
    assert (c.nfe, c.rows) == (0, 0)
    c.calls = 4
    assert c.nfe == 4


def test_choice_tuples_come_from_the_literals():
    from typing import get_args

    from sit.samplers import METHODS, Method

    assert METHODS == get_args(Method) and METHODS[:4] == ("euler", "heun", "euler_maruyama", "sde_heun")
    assert METHODS.count("euler") == 1 and "dopri5" in METHODS
