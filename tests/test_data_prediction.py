"""x-prediction (prediction "data", JiT): conversions to every prediction on every path against the
Gaussian closed form, the clamp at the singular end, loss identities between prediction spaces,
samplers and guidance on a data model, and `sit train --prediction data --loss-space velocity`."""

import json

import pytest
import torch

from sit import objectives as O
from sit.config import ConfigError, TrainConfig, to_dict
from sit.guidance.guided import GuidedModel
from sit.models.field import ModelField
from sit.paths import GVP, VP, Linear
from sit.samplers import SAMPLERS, SampleConfig, sample

PATHS = [Linear(), GVP(), VP()]
IDS = ["linear", "gvp", "vp"]
MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
C = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)


def gaussian(path, x, t, mu=MU, c=C):
    """Exact {velocity, score, noise, data} for x* ~ N(mu, diag c^2) (math.md section 7)."""
    a, s, da, ds = (v[:, None] for v in path.coefficients(t))
    var = a * a * c * c + s * s
    score = -(x - a * mu) / var
    noise = s * (x - a * mu) / var
    data = mu + a * c * c * (x - a * mu) / var
    return {"velocity": da * data + ds * noise, "score": score, "noise": noise, "data": data}


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_data_conversions_match_closed_form_for_every_pair(path):
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.89 + 0.1   # sigma_t >= 0.05: above the clamp
    assert (path.sigma(t) >= O.DATA_SIGMA_MIN).all()
    x = torch.randn(64, 3, generator=g, dtype=torch.float64) * 2
    outs = gaussian(path, x, t)
    tol = dict(rtol=1e-9, atol=1e-9)
    assert "data" in O.PREDICTIONS
    for src in O.PREDICTIONS:
        torch.testing.assert_close(O.to_velocity(path, src, outs[src], x, t), outs["velocity"], **tol)
        torch.testing.assert_close(O.from_velocity(path, src, outs["velocity"], x, t), outs[src], **tol)
        torch.testing.assert_close(O.to_x_star(path, src, outs[src], x, t), outs["data"], **tol)
        for dst in O.PREDICTIONS:
            torch.testing.assert_close(O.convert(path, src, dst, outs[src], x, t), outs[dst], **tol)
    torch.testing.assert_close(O.velocity_from_data(path, outs["data"], x, t), outs["velocity"], **tol)
    torch.testing.assert_close(O.noise_from_data(path, outs["data"], x, t), outs["noise"], **tol)
    torch.testing.assert_close(O.score_from_data(path, outs["data"], x, t), outs["score"], **tol)


def test_data_to_velocity_clamps_sigma_as_jit():
    """Linear: v = (x - x_hat) / max(t, 0.05) (JiT's (z - x)/(1 - t).clamp_min(0.05) in its time);
    finite at t = 0; sigma_min=0 gives the exact (unclamped) conversion below the clamp."""
    path = Linear()
    g = torch.Generator().manual_seed(1)
    x, xh = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.0, 0.01, 0.05, 0.5], dtype=torch.float64)
    v = O.velocity_from_data(path, xh, x, t)
    torch.testing.assert_close(v, (x - xh) / t.clamp_min(0.05)[:, None], rtol=1e-12, atol=1e-12)
    assert torch.isfinite(v).all() and torch.isfinite(O.score_from_data(path, xh, x, t)).all()
    t2 = torch.full((4,), 0.01, dtype=torch.float64)
    outs = gaussian(path, x, t2)
    torch.testing.assert_close(O.velocity_from_data(path, outs["data"], x, t2, sigma_min=0.0), outs["velocity"])
    assert not torch.allclose(O.velocity_from_data(path, outs["data"], x, t2), outs["velocity"])
    with pytest.raises(ValueError, match="sigma_min"):
        O.velocity_from_data(path, xh, x, t, sigma_min=-1.0)


def _batch(seed, shape=(32, 2, 3)):
    g = torch.Generator().manual_seed(seed)
    x_star = torch.randn(*shape, dtype=torch.float64, generator=g)
    eps = torch.randn(*shape, dtype=torch.float64, generator=g)
    out = torch.randn(*shape, dtype=torch.float64, generator=g)
    t = torch.rand(shape[0], dtype=torch.float64, generator=g) * 0.9 + 0.05
    return x_star, eps, out, t


def _mf(z):
    return z.reshape(z.shape[0], -1).mean(1)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_loss_identities_between_spaces(path):
    x_star, eps, out, t = _batch(2)
    t = t.clone()
    t[:4] = torch.tensor([0.0, 0.01, 0.02, 0.04]) if not path.singular_at_0 else t[:4]  # below the clamp too
    model = lambda x, tt, y: out  # noqa: E731
    a, s, da, ds = (v[:, None, None] for v in path.coefficients(t))
    D = a * ds - da * s
    # x-prediction, loss on x: ||x_hat - x*||^2
    r = O.training_losses(model, path, x_star, O.LossConfig("data"), t=t, eps=eps)
    torch.testing.assert_close(r["loss"], _mf((out - x_star) ** 2))
    torch.testing.assert_close(r["target"], x_star)
    # JiT: x-prediction, loss on v = (D / max(sigma, 0.05))^2 ||x_hat - x*||^2 (clamp in prediction and target)
    rv = O.training_losses(model, path, x_star, O.LossConfig("data", loss_space="velocity"), t=t, eps=eps)
    torch.testing.assert_close(rv["loss"], _mf((D / s.clamp_min(O.DATA_SIGMA_MIN)) ** 2 * (out - x_star) ** 2))
    # noise prediction with the loss on v is L_s_lambda (loss_weight "velocity"), away from the ends
    inner = t.clamp(0.05, 0.95)
    ln = O.training_losses(model, path, x_star, O.LossConfig("noise", loss_space="velocity"), t=inner, eps=eps)
    lw = O.training_losses(model, path, x_star, O.LossConfig("noise", "velocity"), t=inner, eps=eps)
    torch.testing.assert_close(ln["loss"], lw["loss"], rtol=1e-9, atol=1e-12)
    # velocity prediction with the loss on x: (sigma / D)^2 ||v - v*||^2
    a, s, da, ds = (v[:, None, None] for v in path.coefficients(inner))
    lx = O.training_losses(model, path, x_star, O.LossConfig("velocity", loss_space="data"), t=inner, eps=eps)
    torch.testing.assert_close(lx["loss"], _mf((s / (a * ds - da * s)) ** 2 * (out - da * x_star - ds * eps) ** 2))
    # the own space named explicitly is the default loss
    same = O.training_losses(model, path, x_star, O.LossConfig("data", loss_space="data"), t=t, eps=eps)
    torch.testing.assert_close(same["loss"], r["loss"])


def test_exact_data_prediction_zeroes_the_jit_loss_gradient_direction():
    """E[x* | x_t] beats a perturbed x-prediction on the expected JiT loss (MC, Gaussian target)."""
    path = Linear()
    g = torch.Generator().manual_seed(0)
    x_star = MU + C * torch.randn(20000, 3, dtype=torch.float64, generator=g)
    cfg = O.LossConfig("data", loss_space="velocity", t_min=0.1, t_max=0.9)
    exact = lambda x, t, y: gaussian(path, x, t)["data"]  # noqa: E731
    worse = lambda x, t, y: 0.9 * gaussian(path, x, t)["data"]  # noqa: E731
    l0 = O.training_losses(exact, path, x_star, cfg, generator=torch.Generator().manual_seed(5))["loss"].mean()
    l1 = O.training_losses(worse, path, x_star, cfg, generator=torch.Generator().manual_seed(5))["loss"].mean()
    assert l0 < l1


def test_loss_config_refuses_weight_with_data_or_space():
    with pytest.raises(ValueError, match="loss_weight"):
        O.LossConfig("data", "velocity")
    with pytest.raises(ValueError, match="loss_weight"):
        O.LossConfig("noise", "velocity", loss_space="velocity")
    with pytest.raises(ValueError, match="loss_space"):
        O.LossConfig("data", loss_space="x")


def test_time_ranges_of_a_data_model():
    assert Linear().train_t_range("data") == (0.0, 1.0)
    assert Linear().sample_t_range("data") == (1.0, 0.0)
    assert VP().sample_t_range("data") == (1.0, 1e-3)


@pytest.mark.parametrize("method", [m for m, row in SAMPLERS.items() if row.kind in ("ode", "sde", "multistep")])
def test_every_sampler_on_an_exact_data_model_reaches_the_target(method):
    """The exact x-prediction of a Gaussian, through velocity_field, samples N(mu, c^2) with every
    continuous sampler (the clamp only acts below sigma = 0.05)."""
    path = Linear()
    model = lambda x, t, y: gaussian(path, x, t)["data"]  # noqa: E731
    field = O.velocity_field(model, path, "data")
    steps = 100 if method in ("euler", "euler_maruyama", "sde_heun") else 10  # (explicit_adams diverges at 100 on v too)
    cfg = SampleConfig(method=method, num_steps=steps)
    x0 = torch.randn(4000, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x, info = sample(field, x0, cfg, path, prediction="data", generator=torch.Generator().manual_seed(4))
    assert info["t_end"] == 0.0 or method in ("euler_maruyama", "sde_heun")
    torch.testing.assert_close(x.mean(0), MU, atol=0.12, rtol=0.05)
    torch.testing.assert_close(x.std(0), C, atol=0.12, rtol=0.05)


def test_guidance_on_data_prediction_equals_guidance_on_velocity():
    """CFG mixes predictions linearly and the data -> velocity conversion is affine at fixed (x, t),
    so guiding the x-prediction and converting equals guiding the converted velocities."""
    path = Linear()
    g = torch.Generator().manual_seed(7)
    W = torch.randn(11, 3, 3, generator=g, dtype=torch.float64)
    model = lambda x, t, y: torch.einsum("bi,bij->bj", x, W[y]) + t[:, None]  # noqa: E731
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    y = torch.arange(6) % 10
    guided_data = O.velocity_field(GuidedModel(model, 3.0, 10), path, "data", y=y)(x, t)
    vel = lambda xx, tt, yy: O.to_velocity(path, "data", model(xx, tt, yy), xx, tt)  # noqa: E731
    guided_vel = GuidedModel(vel, 3.0, 10)(x, t, y)
    torch.testing.assert_close(guided_data, guided_vel, rtol=1e-10, atol=1e-10)


def test_model_field_passes_a_data_prediction_unchanged():
    net = torch.nn.Identity()
    net.in_channels = net.out_channels = 2

    class Net(torch.nn.Module):
        in_channels = out_channels = 2

        def forward(self, x, tau, y):
            return x * tau[:, None, None, None]

    x, t = torch.randn(3, 2, 4, 4), torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(ModelField(Net(), "data")(x, t), x * (1 - t)[:, None, None, None])
    torch.testing.assert_close(ModelField(Net(), "velocity")(x, t), -x * (1 - t)[:, None, None, None])


def test_train_config_loss_space_is_omitted_by_default_and_checked():
    assert "loss_space" not in to_dict(TrainConfig())
    assert to_dict(TrainConfig(prediction="data", loss_space="velocity"))["loss_space"] == "velocity"
    with pytest.raises(ConfigError, match="loss_weight"):
        TrainConfig(prediction="data", loss_weight="velocity")
    with pytest.raises(ValueError, match="loss_space"):
        TrainConfig(loss_space="pixels")


def test_sit_train_x_prediction_with_velocity_loss_trains_and_samples(tmp_path):
    from sit.checkpoints import load
    from sit.cli import main
    from sit.network_sampler import build_sampler

    out = tmp_path / "r"
    rc = main(["train", "--out", str(out), "--steps", "3", "--depth", "1", "--hidden-size", "32", "--num-heads", "2",
               "--patch-size", "4", "--batch", "16", "--log-every", "1", "--ckpt-every", "3", "--no-quality",
               "--samples-per-class", "1", "--sample-steps", "2", "--no-progress", "--threads", "1",
               "--prediction", "data", "--loss-space", "velocity"])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else None
    run = json.loads((out / "run_config.json").read_text())
    assert run["prediction"] == "data"
    assert cfg is None or cfg.get("loss_space") == "velocity"
    net, meta = load(out)
    assert meta.prediction == "data"
    sampler = build_sampler(net, meta, SampleConfig(method="dpmpp_2m", num_steps=3))
    x0 = torch.randn(2, 1, 8, 8)
    x, info = sampler(x0, torch.tensor([1, 2]), torch.randn_like)
    assert torch.isfinite(x).all() and info["nfe"] == 3
