"""The modern block (LightningDiT: SwiGLU, RMSNorm, 2-D RoPE, QK-norm): closed forms of the parts,
independence of the options, defaults equal to the official network (no new keys, configs and
identities unchanged), flags generated from the fields, checkpoints record them, resume and sample."""

import dataclasses
import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from sit.config import ConfigError, ModelConfig, from_dict, to_dict
from sit.models.modern import RMSNorm, SwiGLU, apply_rope, rope_tables, swiglu_hidden
from sit.models.sit import SiT, param_count

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                   learn_sigma=False)
ALL = dict(swiglu=True, rmsnorm=True, rope=True, qk_norm=True)


def test_defaults_are_the_official_network_and_configs_unchanged():
    assert to_dict(ModelConfig()) == {k: v for k, v in dataclasses.asdict(ModelConfig()).items()
                                      if k not in (*ModelConfig.MODERN_FIELDS, "second_time")}
    keys = set(SiT(TINY).state_dict())
    assert not any(k.endswith(("norm1.weight", "norm2.weight", "q_norm.weight", "norm_final.weight", "w12.weight"))
                   for k in keys)
    assert {k for k in keys if "blocks.0.mlp" in k} == {f"blocks.0.mlp.{n}.{w}" for n in ("fc1", "fc2")
                                                        for w in ("weight", "bias")}
    mc = dataclasses.replace(TINY, **ALL)
    assert from_dict(ModelConfig, json.loads(json.dumps(to_dict(mc)))) == mc


@pytest.mark.parametrize("combo", list(itertools.product([False, True], repeat=4)))
def test_each_option_is_independent_and_counted(combo):
    mc = dataclasses.replace(TINY, **dict(zip(ModelConfig.MODERN_FIELDS, combo)))
    net = SiT(mc)
    assert net.num_params() == param_count(mc)
    keys = set(net.state_dict())
    assert any(".w12." in k for k in keys) == mc.swiglu
    assert any(k.endswith("norm1.weight") for k in keys) == mc.rmsnorm
    assert any("q_norm" in k for k in keys) == mc.qk_norm
    assert any("q_norm.bias" in k for k in keys) == (mc.qk_norm and not mc.rmsnorm)  # LayerNorm without --rmsnorm
    assert not any("rope" in k for k in keys)  # rebuilt from the config, never stored
    x = torch.randn(2, 1, 8, 8)
    assert torch.isfinite(net(x, torch.rand(2), torch.tensor([1, 2]))).all()


def test_rmsnorm_and_swiglu_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=g, dtype=torch.float64)
    n = RMSNorm(16).double()
    with torch.no_grad():
        n.weight.copy_(torch.randn(16, generator=g))
    torch.testing.assert_close(n(x), x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * n.weight)
    m = SwiGLU(16, 8).double()
    a, b = (x @ m.w12.weight.T + m.w12.bias).split(8, dim=-1)
    torch.testing.assert_close(m(x), (F.silu(a) * b) @ m.w3.weight.T + m.w3.bias)
    assert swiglu_hidden(1152, 4.0) == 3072  # LightningDiT's int(2/3 * 4608)


def test_rope_logits_depend_only_on_relative_position():
    """With the same q and k at every token, q_m . k_n after 2-D RoPE depends only on the offset
    (row_m - row_n, col_m - col_n); rotations keep norms; token (0, 0) is unrotated."""
    g, hd = 4, 8
    cos, sin = rope_tables(g, hd)
    q = torch.randn(hd).expand(1, 1, g * g, hd)
    k = torch.randn(hd).expand(1, 1, g * g, hd)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(rq[0, 0, 0], q[0, 0, 0])
    logits = (rq @ rk.transpose(-1, -2))[0, 0]
    pos = [(i, j) for i in range(g) for j in range(g)]
    by_offset = {}
    for m, (i1, j1) in enumerate(pos):
        for n, (i2, j2) in enumerate(pos):
            by_offset.setdefault((i1 - i2, j1 - j2), []).append(float(logits[m, n]))
    assert all(max(v) - min(v) < 1e-4 for v in by_offset.values())
    assert len({round(v[0], 3) for v in by_offset.values()}) > g  # positions do matter
    with pytest.raises(ConfigError, match="rope"):
        dataclasses.replace(TINY, hidden_size=36, num_heads=6, rope=True)  # head dim 6


def test_modern_models_refuse_official_and_diffusers_export(tmp_path):
    from sit.models.checkpoint import export_official
    from sit.models.diffusers_format import DiffusersFormatError, diffusers_config

    mc = dataclasses.replace(TINY, rope=True)
    with pytest.raises(ConfigError, match="rope"):
        export_official(SiT(mc), tmp_path / "m.pt")
    with pytest.raises(DiffusersFormatError, match="rope"):
        diffusers_config(mc)


def test_flags_train_record_resume_and_sample(tmp_path):
    from sit.checkpoints import load
    from sit.cli import main
    from sit.network_sampler import build_sampler
    from sit.samplers import SampleConfig

    flags = ["--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2", "--batch", "16",
             "--log-every", "1", "--ckpt-every", "2", "--no-quality", "--samples-per-class", "1", "--sample-steps", "2",
             "--no-progress", "--threads", "1", "--swiglu", "--rmsnorm", "--rope", "--qk-norm"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert main(["train", "--out", str(ref), "--steps", "4", *flags]) == 0
    assert main(["train", "--out", str(run), "--steps", "2", *flags]) == 0
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--steps", "6", "--no-rope"]) == 2  # the architecture is fixed

    def losses(d):
        recs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {r["step"]: r["loss"] for r in recs if "loss" in r}

    a, b = losses(ref), losses(run)
    assert sorted(b) == [1, 2, 3, 4]
    for s in (3, 4):
        assert abs(a[s] - b[s]) <= 1e-6 * max(1.0, abs(a[s]))
    net, meta = load(run)
    assert all(getattr(net.config, f) for f in ModelConfig.MODERN_FIELDS)
    assert meta.model == net.config
    sampler = build_sampler(net, meta, SampleConfig(method="heun", num_steps=2))
    x, info = sampler(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), torch.randn_like)
    assert torch.isfinite(x).all() and info["nfe"] == 4
