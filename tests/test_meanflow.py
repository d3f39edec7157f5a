"""MeanFlow (sit.train.meanflow, the meanflow sampler row): for Gaussian data N(mu, s^2 I) the
probability-flow ODE is linear, so the true average velocity u(z, r, t) has a closed form; the
MeanFlow target at the true u equals it (the loss vanishes) on Linear, GVP and VP; the objective's
JVP target is v - (t - r) du/dt (checked against central differences); the 1-step sampler with
the true u is the exact flow map; the second time embedding starts at zero; training resumes
exactly, runs in bf16, and `sit sample --method meanflow --num-steps 1` samples it."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sit.config import ConfigError, ModelConfig, TrainConfig
from sit.paths import get_path
from sit.train.meanflow import MeanFlowObjective, adaptive_loss, meanflow_target, sample_tr

MU, S = 0.7, 0.3


def gauss_u(path, z, r, t):
    """The true average velocity over [r, t] of N(MU, S^2) data on ``path`` (float64): the flow map
    is z_r = m_r + (S_r / S_t)(z - m_t), m = alpha MU, S_t^2 = alpha^2 S^2 + sigma^2."""
    def ms(tt):
        a, s = path.alpha(tt), path.sigma(tt)
        return (a * MU).view(-1, 1, 1, 1), torch.sqrt(a**2 * S**2 + s**2).view(-1, 1, 1, 1)

    (mt, st), (mr, sr) = ms(t), ms(r)
    return (z - (mr + sr / st * (z - mt))) / (t - r).view(-1, 1, 1, 1)


def gauss_v(path, z, t):
    """The true (marginal) velocity: d/dt of the flow map at r = t."""
    a, s, da, ds = (c.view(-1, 1, 1, 1) for c in path.coefficients(t))
    st = torch.sqrt(a**2 * S**2 + s**2)
    return da * MU + (a * da * S**2 + s * ds) / st**2 * (z - a * MU)


@pytest.mark.parametrize("name", ["linear", "gvp", "vp"])
def test_meanflow_target_at_the_true_average_velocity_equals_it(name):
    path = get_path(name)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.8 + 0.2
    r = t * torch.rand(6, generator=g, dtype=torch.float64) * 0.9
    z = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    v = gauss_v(path, z, t)
    u, u_tgt = meanflow_target(lambda zz, tt, rr: gauss_u(path, zz, rr, tt), z, t, r, v)
    torch.testing.assert_close(u_tgt, gauss_u(path, z, r, t), rtol=1e-9, atol=1e-9)
    assert float(adaptive_loss(u - u_tgt, 1.0, 1e-3).abs().max()) < 1e-12   # the loss vanishes at the true u
    torch.testing.assert_close(gauss_u(path, z, t - 1e-7, t), v, rtol=1e-5, atol=1e-5)  # u(z, t, t) = v
    # a wrong u is not a fixed point: the target moves away from it
    _, bad = meanflow_target(lambda zz, tt, rr: 1.1 * gauss_u(path, zz, rr, tt), z, t, r, v)
    assert float((bad - 1.1 * gauss_u(path, z, r, t)).abs().max()) > 1e-3


class GaussNet(nn.Module):
    """A 'network' in sit's convention (tau = 1 - t in, -u out, second time t - r) whose average
    velocity is the true one of the Gaussian on ``path``."""

    in_channels = out_channels = 1

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.config = ModelConfig(input_size=4, patch_size=2, in_channels=1, hidden_size=8, depth=1, num_heads=1,
                                  num_classes=2, learn_sigma=False, second_time=True, class_dropout_prob=0.0)

    def forward(self, x, tau, y=None, force_drop_ids=None, t2=None, hidden=()):
        t = 1 - tau
        r = t - (torch.zeros_like(t) if t2 is None else t2)
        x64, t64, r64 = x.double(), t.double(), r.double()
        near = (t64 - r64).abs() < 1e-9
        u = torch.where(near.view(-1, 1, 1, 1), gauss_v(self.path, x64, t64),
                        gauss_u(self.path, x64, torch.where(near, t64 - 1, r64), t64))
        return -u.to(x.dtype)


def test_objective_target_is_v_minus_interval_times_the_total_derivative():
    path = get_path("linear")
    net = GaussNet(path)
    mc = net.config
    obj = MeanFlowObjective(TrainConfig(objective="meanflow", meanflow_norm_p=0.0), mc)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    tr = torch.tensor([[0.9, 0.1], [0.6, 0.5], [0.3, 0.3], [0.99, 0.0], [0.5, 0.2]], dtype=torch.float64)
    out = obj.outputs(net, x, tr, eps, torch.zeros(5, dtype=torch.long))
    t, r = tr[:, 0], tr[:, 1]
    z = path.x_t(x, eps, t)
    v = eps - x                                   # the conditional velocity on Linear
    h = 1e-5
    ddt = (gauss_u(path, z + h * v, r, t + h) - gauss_u(path, z - h * v, r, t - h)) / (2 * h)
    ddt[2] = 0 * ddt[2]                           # r = t: the target is v itself
    want = v - (t - r).view(-1, 1, 1, 1) * ddt
    torch.testing.assert_close(out.target, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.pred[[0, 1, 3, 4]], gauss_u(path, z, r, t)[[0, 1, 3, 4]])
    torch.testing.assert_close(out.loss, (out.pred - out.target).float().pow(2).flatten(1).sum(1))  # p = 0: plain


def test_tr_draw_shares_and_order():
    g = torch.Generator().manual_seed(0)
    tr = sample_tr(20000, g, 0.25, -0.4, 1.0)
    t, r = tr[:, 0], tr[:, 1]
    assert bool((t >= r).all()) and 0 < float(r.min()) and float(t.max()) < 1
    assert abs(float((t != r).double().mean()) - 0.25) < 0.02
    assert float(sample_tr(50, torch.Generator().manual_seed(0), 0.0, 0.0, 1.0).diff(dim=1).abs().max()) == 0


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_meanflow_sampler_with_the_true_u_is_the_exact_flow_map(steps):
    from sit.network_sampler import ModelInfo, build_sampler
    from sit.objectives import velocity_field
    from sit.samplers import SampleConfig, sample

    path = get_path("linear")
    net = GaussNet(path)
    z1 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = MU + S * z1                             # the flow map of N(MU, S^2) from t = 1 to 0
    cfg = SampleConfig(method="meanflow", num_steps=steps)
    sampler = build_sampler(net, ModelInfo("linear", "velocity", "continuous"), cfg)
    x, info = sampler(z1, torch.zeros(8, dtype=torch.long))
    assert info["nfe"] == steps == cfg.expected_nfe(path)
    torch.testing.assert_close(x, want, rtol=1e-9, atol=1e-9)
    field = velocity_field(lambda xx, tt, yy, r=None: GaussNet(path)(xx, 1 - tt, yy, t2=None if r is None else tt - r).neg(),
                           path)
    x2, _ = sample(field, z1, cfg, path)
    torch.testing.assert_close(x2, want, rtol=1e-9, atol=1e-9)


def test_second_time_embedding_starts_at_zero_and_default_networks_have_none():
    from sit.models.sit import SiT

    base = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                       learn_sigma=False)
    torch.manual_seed(0)
    plain = SiT(base)
    for q in plain.parameters():
        if q.requires_grad:
            nn.init.normal_(q, std=0.05)
    assert not any(k.startswith("t2_embedder") for k in plain.state_dict())
    mf = SiT(ModelConfig(**{**base.__dict__, "second_time": True}))
    missing, unexpected = mf.load_state_dict(plain.state_dict(), strict=False)
    plain.eval(), mf.eval()  # no random label dropout
    assert sorted(missing) == sorted(f"t2_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")) and not unexpected
    x, t, y = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([1, 2, 3])
    want = plain(x, t, y)
    for t2 in (None, torch.rand(3)):
        assert torch.equal(mf(x, t, y, t2=t2), want)   # a plain SiT checkpoint is unchanged at any t - r
    with pytest.raises(ValueError, match="second_time"):
        plain(x, t, y, t2=t)
    from sit.config import to_dict

    assert "second_time" not in to_dict(base) and to_dict(mf.config)["second_time"] is True


TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                   learn_sigma=False, class_dropout_prob=0.1)


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=4, global_batch=16, lr=3e-3, log_every=1,
                ckpt_every=2, keep_last=5, ema_decay=0.9, quality=False, samples_per_class=2, sample_steps=2,
                progress=False, num_workers=0, cfg_scale=1.5, threads=1, objective="meanflow")
    base.update(kw)
    return TrainConfig(**base)


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "img_per_s"}
            for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_meanflow_trains_resumes_exactly_and_samples_in_one_step(tmp_path, capsys):
    from safetensors.torch import load_file

    from sit.cli import main
    from sit.train import train

    ref = train(tiny_cfg(tmp_path / "ref", meanflow_omega=2.0, meanflow_kappa=0.5), TINY)
    assert ref.net.config.second_time and all(r["objective"] == "meanflow" for r in records(ref.run_dir))
    part = train(tiny_cfg(tmp_path / "part", steps=2, meanflow_omega=2.0, meanflow_kappa=0.5), TINY)
    train(resume=part.run_dir, steps=4)
    assert records(part.run_dir) == records(ref.run_dir)
    for name in ("model", "ema"):
        a = load_file(str(ref.run_dir / "checkpoints/step-0000004" / f"{name}.safetensors"))
        b = load_file(str(part.run_dir / "checkpoints/step-0000004" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert float(load_file(str(ref.run_dir / "checkpoints/step-0000004/model.safetensors"))["t2_embedder.mlp.2.weight"]
                 .abs().max()) > 0   # the second time embedding trains
    out = tmp_path / "samples"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(ref.run_dir), "--method", "meanflow", "--num-steps", "1", "--num-samples", "4",
                 "--out", str(out), "--no-progress", "--threads", "1", "--cfg-scale", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else None
    assert manifest is None or "meanflow" in json.dumps(manifest)
    bf = train(tiny_cfg(tmp_path / "bf16", steps=2, precision="bf16"), TINY)
    assert all(r["loss"] == r["loss"] for r in records(bf.run_dir))   # finite (not NaN) in bf16


def test_bad_meanflow_settings_are_one_line_errors(tmp_path, capsys):
    from sit.cli import main
    from sit.train import train

    with pytest.raises(ConfigError, match="'meanflow' learns an average velocity"):
        TrainConfig(objective="meanflow", prediction="noise")
    with pytest.raises(ConfigError, match="meanflow_ratio must lie in"):
        TrainConfig(meanflow_ratio=1.5)
    assert main(["train", "--objective", "meanflow", "--meanflow-ratio", "2", "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("--meanflow-ratio must lie in [0, 1] (got 2.0)")
    plain = train(tiny_cfg(tmp_path / "plain", steps=1, ckpt_every=1, objective="sit"), TINY)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(plain.run_dir), "--method", "meanflow", "--num-steps", "1", "--num-samples", "2",
                 "--out", str(tmp_path / "s"), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs an average-velocity network" in err
    assert not list((tmp_path / "s").glob("*.npz"))   # nothing sampled


def test_gradient_through_the_jvp_equals_the_plain_forwards_gradient():
    """The JVP's primal output carries the network's graph: the loss gradient equals that of a plain
    forward against the same (detached) target."""
    from sit.models.sit import SiT

    mc = ModelConfig(**{**TINY.__dict__, "second_time": True})
    torch.manual_seed(0)
    net = SiT(mc).eval()
    for q in net.parameters():
        if q.requires_grad:
            nn.init.normal_(q, std=0.05)
    obj = MeanFlowObjective(TrainConfig(objective="meanflow"), mc)
    g = torch.Generator().manual_seed(3)
    x, eps, y = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g), torch.arange(6)
    tr = sample_tr(6, g, 0.5, -0.4, 1.0)
    out = obj.outputs(net, x, tr, eps, y)
    out.loss.sum().backward()
    want = [q.grad.clone() for q in net.parameters() if q.requires_grad]
    net.zero_grad()
    t, r = tr[:, 0], tr[:, 1]
    u = -net(out.x_t, 1 - t, y, t2=t - r)
    adaptive_loss(u - out.target, 1.0, 1e-3).sum().backward()
    got = [q.grad for q in net.parameters() if q.requires_grad]
    assert sum(float(w.abs().sum()) for w in want) > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_meanflow_two_process_ddp_equals_one_process(tmp_path):
    """The JVP runs through the DDP-wrapped network: 2 processes give the weights of 1."""
    from safetensors.torch import load_file
    from tiny_cli import train_two_processes

    from sit.cli import main

    flags = ["--objective", "meanflow", "--steps", "2", "--depth", "2", "--hidden-size", "32", "--num-heads", "2",
             "--patch-size", "2", "--batch", "16", "--lr", "3e-3", "--warmup", "0", "--log-every", "1",
             "--ckpt-every", "2", "--ema", "0.9", "--no-quality", "--samples-per-class", "2", "--no-progress",
             "--threads", "1", "--device", "cpu"]
    one = tmp_path / "one"
    assert main(["train", "--out", str(one), *flags]) == 0
    ddp = tmp_path / "ddp"
    p = train_two_processes(ddp, flags)
    assert p.returncode == 0, p.stderr[-3000:]
    a = load_file(str(ddp / "checkpoints" / "step-0000002" / "model.safetensors"))
    b = load_file(str(one / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_the_average_velocity_preview_sampler_needs_a_meanflow_objective():
    """A plain network has no second time: its 'average velocity' is its instantaneous one, so the
    meanflow row as a training preview is refused unless the run trains MeanFlow."""
    from sit.config import ConfigError, TrainConfig

    assert TrainConfig(objective="meanflow", sample_method="meanflow").sample_method == "meanflow"
    with pytest.raises(ConfigError, match="needs .*objective.* 'meanflow'"):
        TrainConfig(sample_method="meanflow")
