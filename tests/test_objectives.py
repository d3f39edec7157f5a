"""Conversions (eq. 9), losses (6), (7), L_s_lambda, likelihood weighting; float64 closed forms."""

import math

import pytest
import torch

from sit import objectives as O
from sit.paths import GVP, VP, CustomPath, Linear

PATHS = [Linear(), GVP(), VP()]
IDS = ["linear", "gvp", "vp"]


def gaussian_fields(path, x, t, mu, c):
    """Exact score, noise, x_hat* and velocity for x* ~ N(mu, diag c^2) (math.md section 7)."""
    a, s, da, ds = (v[:, None] for v in path.coefficients(t))
    var = a * a * c * c + s * s
    score = -(x - a * mu) / var
    noise = s * (x - a * mu) / var
    x_star = mu + a * c * c * (x - a * mu) / var
    return score, noise, x_star, da * x_star + ds * noise


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_conversions_match_closed_form_and_round_trip(path):
    g = torch.Generator().manual_seed(0)
    B, D = 64, 3
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    c = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    t = torch.rand(B, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * 2
    score, noise, x_star, v = gaussian_fields(path, x, t, mu, c)
    tol = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(O.score_from_velocity(path, v, x, t), score, **tol)
    torch.testing.assert_close(O.noise_from_velocity(path, v, x, t), noise, **tol)
    torch.testing.assert_close(O.x_star_from_velocity(path, v, x, t), x_star, **tol)
    torch.testing.assert_close(O.velocity_from_score(path, score, x, t), v, **tol)
    torch.testing.assert_close(O.velocity_from_noise(path, noise, x, t), v, **tol)
    torch.testing.assert_close(O.x_star_from_score(path, score, x, t), x_star, **tol)
    torch.testing.assert_close(O.x_star_from_noise(path, noise, x, t), x_star, **tol)
    torch.testing.assert_close(O.noise_from_score(path, score, x, t), noise, **tol)
    torch.testing.assert_close(O.score_from_noise(path, noise, x, t), score, **tol)
    outs = {"velocity": v, "score": score, "noise": noise}
    for src in outs:  # (data: tests/test_data_prediction.py, where sigma_t clears the clamp)
        torch.testing.assert_close(O.to_velocity(path, src, outs[src], x, t), v, **tol)
        torch.testing.assert_close(O.from_velocity(path, src, v, x, t), outs[src], **tol)
        torch.testing.assert_close(O.to_x_star(path, src, outs[src], x, t), x_star, **tol)
        for dst in outs:
            torch.testing.assert_close(O.convert(path, src, dst, outs[src], x, t), outs[dst], **tol)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_velocity_to_noise_and_x_star_finite_at_endpoints(path):
    x = torch.randn(2, 4, dtype=torch.float64)
    v = torch.randn(2, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    e = O.noise_from_velocity(path, v, x, t)
    xs = O.x_star_from_velocity(path, v, x, t)
    assert torch.isfinite(e).all() and torch.isfinite(xs).all()
    # they invert (1) and (3): x = alpha x_hat* + sigma eps_hat
    a, s, _, _ = path.coefficients(t)
    torch.testing.assert_close(a[:, None] * xs + s[:, None] * e, x)
    if path.name != "vp":  # VP at t = 0 returns the limit (eps_hat = 0, x_hat* = x)
        _, _, da, ds = path.coefficients(t)
        torch.testing.assert_close(da[:, None] * xs + ds[:, None] * e, v)
    # the score from a velocity at t = 1 is finite (Linear: -x_1 ... any v), singular at t = 0
    s1 = O.score_from_velocity(path, v[:1], x[:1], torch.tensor([1.0], dtype=torch.float64))
    assert torch.isfinite(s1).all()


def test_low_precision_prediction_uses_float32_coefficients():
    path = Linear()
    x = torch.randn(4, 3)
    v = torch.randn(4, 3).to(torch.bfloat16)
    t = torch.full((4,), 0.3)
    s = O.score_from_velocity(path, v, x, t)
    assert s.dtype == torch.bfloat16
    ref = O.score_from_velocity(path, v.float(), x, t)
    torch.testing.assert_close(s.float(), ref, rtol=1e-2, atol=1e-2)


def test_velocity_field_converts_and_expands_t():
    path = GVP()
    mu, c = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64) * 0.5
    calls = []

    def model_fn(x, t, y):
        calls.append((t.shape, y))
        return gaussian_fields(path, x, t, mu, c)[1]  # noise prediction

    field = O.velocity_field(model_fn, path, "noise", y="label")
    x = torch.randn(5, 3, dtype=torch.float64)
    v = field(x, torch.tensor(0.4, dtype=torch.float64))
    t = torch.full((5,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(v, gaussian_fields(path, x, t, mu, c)[3])
    assert calls == [(torch.Size([5]), "label")]


# ---------------------------------------------------------------- losses
def _random_model(pred_scale=1.0):
    w = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * pred_scale

    def model_fn(x, t, y):
        return x @ w + t[:, None]

    return model_fn


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_score_loss_velocity_weight_equals_velocity_loss_of_converted_model(path):
    g = torch.Generator().manual_seed(1)
    x_star = torch.randn(32, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(32, 3, dtype=torch.float64, generator=g)
    t = torch.rand(32, dtype=torch.float64, generator=g) * 0.9 + 0.05
    score_model = _random_model()
    ls = O.training_losses(score_model, path, x_star, O.LossConfig("score", "velocity"), t=t, eps=eps)
    conv = O.velocity_field(score_model, path, "score")
    lv = O.training_losses(lambda x, tt, y: conv(x, tt), path, x_star, O.LossConfig("velocity"), t=t, eps=eps)
    torch.testing.assert_close(ls["loss"], lv["loss"], rtol=1e-9, atol=1e-12)
    # noise prediction with the same weight: the same numbers for eps_hat = -sigma s
    noise_model = lambda x, tt, y: -path.sigma(tt)[:, None] * score_model(x, tt, y)  # noqa: E731
    ln = O.training_losses(noise_model, path, x_star, O.LossConfig("noise", "velocity"), t=t, eps=eps)
    torch.testing.assert_close(ln["loss"], lv["loss"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_loss_formulas(path):
    g = torch.Generator().manual_seed(2)
    x_star = torch.randn(16, 2, 3, dtype=torch.float64, generator=g)
    eps = torch.randn(16, 2, 3, dtype=torch.float64, generator=g)
    t = torch.rand(16, dtype=torch.float64, generator=g) * 0.9 + 0.05
    out = torch.randn(16, 2, 3, dtype=torch.float64, generator=g)
    model = lambda x, tt, y: out  # noqa: E731
    a, s, da, ds = (v[:, None, None] for v in path.coefficients(t))
    lam = path.lam(t)[:, None, None]
    mf = lambda z: z.reshape(16, -1).mean(1)  # noqa: E731
    r = O.training_losses(model, path, x_star, O.LossConfig("velocity"), t=t, eps=eps)
    torch.testing.assert_close(r["loss"], mf((out - da * x_star - ds * eps) ** 2))
    torch.testing.assert_close(r["x_t"], a * x_star + s * eps)
    r = O.training_losses(model, path, x_star, O.LossConfig("score"), t=t, eps=eps)
    torch.testing.assert_close(r["loss"], mf((s * out + eps) ** 2))
    torch.testing.assert_close(r["target"], -eps / s)
    r = O.training_losses(model, path, x_star, O.LossConfig("noise"), t=t, eps=eps)
    torch.testing.assert_close(r["loss"], mf((out - eps) ** 2))
    r = O.training_losses(model, path, x_star, O.LossConfig("score", "likelihood"), t=t, eps=eps)
    # (lambda / sigma^2) ||sigma s + eps||^2 = (1/2) w_KL ||s + eps / sigma||^2
    torch.testing.assert_close(r["loss"], mf(0.5 * path.w_kl(t)[:, None, None] * (out + eps / s) ** 2))
    torch.testing.assert_close(r["loss"], mf(lam * (out + eps / s) ** 2))


def test_exact_score_minimises_expected_loss():
    """The closed-form score of a Gaussian target beats a perturbed one on the (MC) expected loss."""
    path = Linear()
    mu, c = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x_star = mu + c * torch.randn(20000, 2, dtype=torch.float64, generator=g)
    exact = lambda x, t, y: gaussian_fields(path, x, t, mu, c)[0]  # noqa: E731
    worse = lambda x, t, y: 1.1 * gaussian_fields(path, x, t, mu, c)[0]  # noqa: E731
    for pred, model in [("score", exact), ("velocity", O.velocity_field(exact, path, "score"))]:
        fn = model if pred == "score" else (lambda x, t, y, m=model: m(x, t))
        cfg = O.LossConfig(pred, t_min=0.1, t_max=0.9)
        l0 = O.training_losses(fn, path, x_star, cfg, generator=torch.Generator().manual_seed(5))["loss"].mean()
        bad = worse if pred == "score" else (lambda x, t, y: O.velocity_field(worse, path, "score")(x, t))
        l1 = O.training_losses(bad, path, x_star, cfg, generator=torch.Generator().manual_seed(5))["loss"].mean()
        assert l0 < l1


def test_default_time_ranges_and_sampling():
    assert O.LossConfig("velocity").t_range(Linear()) == (0.0, 1.0)
    assert O.LossConfig("score").t_range(GVP()) == (1e-3, 1 - 1e-3)
    assert O.LossConfig("noise").t_range(VP()) == (1e-5, 1.0)
    assert O.LossConfig("velocity", t_min=0.2).t_range(Linear()) == (0.2, 1.0)
    x = torch.zeros(4000, 2)
    r = O.training_losses(lambda x, t, y: x, GVP(), x, O.LossConfig("score"), generator=torch.Generator().manual_seed(0))
    assert r["loss"].shape == (4000,) and r["t"].shape == (4000,)
    assert r["t"].min() >= 1e-3 and r["t"].max() <= 1 - 1e-3
    assert abs(r["t"].mean().item() - 0.5) < 0.02
    r = O.training_losses(
        lambda x, t, y: x, Linear(), x, O.LossConfig(time_dist="logit_normal", loc=1.0), generator=torch.Generator().manual_seed(0)
    )
    # median of sigmoid(1 + N(0, 1)) is sigmoid(1)
    assert abs(r["t"].median().item() - 1 / (1 + math.exp(-1))) < 0.03


def test_generator_reproducible_and_custom_path():
    path = CustomPath(lambda t: 1 - t**2, lambda t: t)
    x = torch.randn(8, 3)
    cfg = O.LossConfig("velocity")
    m = lambda x, t, y: x * 0.5  # noqa: E731
    r1 = O.training_losses(m, path, x, cfg, generator=torch.Generator().manual_seed(7))
    r2 = O.training_losses(m, path, x, cfg, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(r1["loss"], r2["loss"])
    torch.testing.assert_close(r1["target"], (-2 * r1["t"])[:, None] * x + r1["eps"])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(prediction="x0"), "prediction"),
        (dict(prediction="score", loss_weight="sigma"), "loss_weight"),
        (dict(prediction="velocity", loss_weight="likelihood"), "loss_weight"),
        (dict(time_dist="beta"), "time_dist"),
        (dict(t_min=-0.1), "t_min"),
        (dict(t_max=1.5), "t_max"),
        (dict(t_min=0.5, t_max=0.2), "t_min"),
        (dict(time_dist="logit_normal", scale=0.0), "scale"),
    ],
)
def test_loss_config_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        O.LossConfig(**kwargs)


def test_bad_prediction_names_it():
    with pytest.raises(ValueError, match="'x0'"):
        O.to_velocity(Linear(), "x0", torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1))
    with pytest.raises(ValueError, match="shape"):
        O.training_losses(lambda x, t, y: x[:, :1], Linear(), torch.zeros(2, 3), O.LossConfig())
