"""REPA as the REPA paper trains it: the loss and its gradient against an independent implementation of
the paper's formulas (several encoders), the projector initialisation, the encoder's position embedding
resampled once, flips as a data option, the encoder under bf16, and the one-flag preset."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sit.config import ModelConfig, TrainConfig, to_dict
from sit.train.repa import Encoder, RepaTerm, projector, resample_pos_embed


class PatchEncoder(Encoder):
    """A frozen stand-in: a fixed random linear map of each p x p patch of the image -> (B, (S/p)^2, dim)."""

    def __init__(self, patch: int, dim: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.p, self.dim, self.w = patch, dim, torch.randn(3 * patch * patch, dim, generator=g, dtype=torch.float64)

    def __call__(self, pixels):
        x = F.unfold(pixels.double(), self.p, stride=self.p)  # (B, 3 p^2, N)
        return x.transpose(1, 2) @ self.w


def _reference_loss(h, pixels, encoders, weights, grid):
    """REPA eq. 8 written out: for each encoder k, y*_n (its patch features, average-pooled to SiT's grid
    when finer), h_phi(h_n) = W3 silu(W2 silu(W1 h_n + b1) + b2) + b3, and
    L_k = -(1/N) sum_n <y*_n, h_phi(h_n)> / (|y*_n| |h_phi(h_n)|); L = (1/K) sum_k L_k, per sample."""
    def silu(v):
        return v / (1 + torch.exp(-v))

    B, N, _ = h.shape
    total = torch.zeros(B, dtype=torch.float64)
    for enc, (W1, b1, W2, b2, W3, b3) in zip(encoders, weights):
        z = enc(pixels)                                   # (B, M, dim), M = g_e^2
        ge = math.isqrt(z.shape[1])
        f = ge // grid
        zz = torch.zeros(B, N, z.shape[2], dtype=torch.float64)
        for i in range(grid):                             # token matching: mean of the f x f encoder patches
            for j in range(grid):
                cells = [z[:, (i * f + a) * ge + (j * f + b)] for a in range(f) for b in range(f)]
                zz[:, i * grid + j] = sum(cells) / len(cells)
        for b in range(B):
            acc = 0.0
            for n in range(N):
                u = W3 @ silu(W2 @ silu(W1 @ h[b, n] + b1) + b2) + b3
                v = zz[b, n]
                acc = acc + (u @ v) / (torch.sqrt(u @ u) * torch.sqrt(v @ v))
            total[b] = total[b] - acc / N
    return total / len(encoders)


def test_repa_loss_and_gradient_equal_the_papers_formulas_with_two_encoders():
    torch.manual_seed(0)
    grid, hidden = 4, 12
    encoders = [PatchEncoder(2, 5, seed=1), PatchEncoder(4, 7, seed=2)]   # 8x8 tokens pooled to 4x4; 4x4 as is
    term = RepaTerm(encoders, hidden, depth=1, coeff=0.5, proj_dim=9, grid=grid, init="xavier").double()
    h = torch.randn(3, grid * grid, hidden, dtype=torch.float64, requires_grad=True)
    pixels = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1
    got = term.loss(h, pixels)
    got.sum().backward()
    projs = [term.projector, *term.extra_projectors]
    weights = [[p.detach().clone().requires_grad_(True) for p in (m[0].weight, m[0].bias, m[2].weight, m[2].bias,
                                                                  m[4].weight, m[4].bias)] for m in projs]
    h2 = h.detach().clone().requires_grad_(True)
    want = _reference_loss(h2, pixels, encoders, weights, grid)
    want.sum().backward()
    assert torch.allclose(got.double(), want, atol=1e-6, rtol=0)
    assert torch.allclose(h.grad, h2.grad, atol=1e-7, rtol=1e-5)   # the gradient reaching the network (float32 cosines)
    for m, ws in zip(projs, weights):
        for p, w in zip((m[0].weight, m[0].bias, m[2].weight, m[2].bias, m[4].weight, m[4].bias), ws):
            assert torch.allclose(p.grad, w.grad, atol=1e-7, rtol=1e-5)
    assert len(list(term.state_dict())) == 12   # one projector per encoder; the encoders are not saved


def test_projector_init_xavier_or_torch_defaults():
    torch.manual_seed(3)
    x = projector(64, 256, 32, "xavier")
    for lin in (x[0], x[2], x[4]):
        bound = math.sqrt(6 / (lin.in_features + lin.out_features))
        assert torch.count_nonzero(lin.bias) == 0 and float(lin.weight.detach().abs().max()) <= bound
        assert float(lin.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform(-a, a): std a / sqrt 3
    torch.manual_seed(3)
    t = projector(64, 256, 32)
    torch.manual_seed(3)   # the default keeps today's modules and draws: the same weights as before the option
    old = nn.Sequential(nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, 32))
    assert all(torch.equal(a, b) for a, b in zip(t.state_dict().values(), old.state_dict().values()))


def test_position_embedding_resampled_once_with_antialiased_bicubic(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from sit.train.repa import Dinov2Encoder

    const = torch.ones(1, 1 + 37 * 37, 6) * 0.3
    assert torch.allclose(resample_pos_embed(const, 16), torch.ones(1, 1 + 256, 6) * 0.3, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 6, generator=g)
    out = resample_pos_embed(pos, 16)
    assert out.shape == (1, 257, 6) and torch.equal(out[:, 0], pos[:, 0])
    plain = F.interpolate(pos[:, 1:].reshape(1, 37, 37, 6).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic",
                          align_corners=False).permute(0, 2, 3, 1).reshape(1, 256, 6)
    assert not torch.allclose(out[:, 1:], plain, atol=1e-3)        # downsampling: the antialias filter matters
    # an antialiased 37 -> 16 field is smoother: its neighbour differences are smaller than plain bicubic's
    def rough(t):
        return float(t.reshape(16, 16, 6).diff(dim=0).abs().mean())
    assert rough(out[:, 1:]) < rough(plain)

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=2, image_size=20)).save_pretrained(tmp_path / "d")
    run = Dinov2Encoder(str(tmp_path / "d"), 16, torch.device("cpu"))
    res = Dinov2Encoder(str(tmp_path / "d"), 16, torch.device("cpu"), pos_embed="resample")
    assert run.model.embeddings.position_embeddings.shape[1] == 1 + 100     # 20 px / 2: 10 x 10
    assert res.model.embeddings.position_embeddings.shape[1] == 1 + 49      # resampled to 14 px / 2: 7 x 7
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a, b = run(x), res(x)
    assert a.shape == b.shape == (2, 49, 16) and not torch.allclose(a, b, atol=1e-4)


def test_flips_are_a_data_option_for_every_run(tmp_path):
    from PIL import Image

    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.vae import VAE

    assert "flip" not in to_dict(TrainConfig()) and to_dict(TrainConfig(flip=False))["flip"] is False
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "i" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "i" / c / f"{k}.png")
    extract_latents(ImageFolderDataset(tmp_path / "i", 16), VAE.tiny_random(0), tmp_path / "l", shard_size=4)
    from sit.train.data import build_data

    src = build_data(TrainConfig(latents=str(tmp_path / "l"), flip=False), torch.device("cpu"))
    ds = src.dataset
    assert ds.flip is False
    ds.sample = False
    for epoch in range(3):   # never the mirror's latent
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            assert np.array_equal(ds[i][0].numpy(), ds.space.to_network(ds.moments(i)[0, 0].astype(np.float32)))
    assert build_data(TrainConfig(latents=str(tmp_path / "l")), torch.device("cpu")).dataset.flip is True


def test_the_encoder_runs_in_bf16_when_training_does(tmp_path, monkeypatch):
    from transformers import Dinov2Config, Dinov2Model

    from sit.train import repa, train

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=2, image_size=8)).save_pretrained(tmp_path / "d")
    seen = []
    call = repa.Dinov2Encoder.__call__

    def spy(self, pixels):
        out = call(self, pixels)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(repa.Dinov2Encoder, "__call__", spy)
    mc = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                     learn_sigma=False)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        seen.clear()
        train(TrainConfig(out=str(tmp_path / precision), image_size=8, steps=1, global_batch=8, quality=False,
                          progress=False, num_workers=0, threads=1, samples_per_class=1, sample_steps=1,
                          repa_encoder=str(tmp_path / "d"), repa_proj_dim=8, precision=precision), mc)
        assert seen and set(seen) == {dtype}


def test_repa_preset_is_the_papers_recipe_in_one_flag(tmp_path, capsys):
    from sit.cli import main
    from sit.config import ConfigError
    from sit.generate.presets import PRESETS
    from sit.train.recipes import TRAIN_PRESETS, resolve_configs

    (tmp_path / "lat").mkdir()
    (tmp_path / "lat" / "index.json").write_text(json.dumps({
        "format": "sit-latents", "version": 1, "latent_shape": [4, 32, 32], "num_classes": 1000}))
    cfg, mc = resolve_configs({"preset": "repa-sit-xl2", "latents": str(tmp_path / "lat"), "repa_encoder": "dinov2-b"})
    assert (mc.depth, mc.hidden_size, mc.patch_size, mc.input_size, mc.num_classes) == (28, 1152, 2, 32, 1000)
    assert (cfg.repa_depth, cfg.repa_coeff, cfg.repa_proj_dim, cfg.repa_init, cfg.repa_pos_embed) == \
        (8, 0.5, 2048, "xavier", "resample")
    assert (cfg.flip, cfg.grad_clip, cfg.lr, cfg.global_batch, cfg.ema_decay, cfg.time_dist, cfg.steps) == \
        (False, 1.0, 1e-4, 256, 0.9999, "uniform", 4_000_000)
    assert to_dict(cfg)["preset"] == "repa-sit-xl2"            # the run records its preset
    cfg2, _ = resolve_configs({"preset": "repa-sit-xl2", "latents": str(tmp_path / "lat"), "repa_encoder": "d",
                               "steps": 400_000, "flip": True})
    assert (cfg2.steps, cfg2.flip) == (400_000, True)           # flags given win
    with pytest.raises(ConfigError, match="needs {repa_encoder}|needs .*repa_encoder"):
        resolve_configs({"preset": "repa-sit-xl2", "latents": str(tmp_path / "lat")})
    with pytest.raises(ConfigError, match="trains on image data"):
        resolve_configs({"preset": "repa-sit-xl2", "repa_encoder": "d"})
    s = PRESETS[TRAIN_PRESETS["repa-sit-xl2"]["sample_preset"]]   # REPA's published sampling settings
    assert (s.sample.method, s.sample.num_steps, s.sample.w, s.sample.last_step, s.sample.last_step_size) == \
        ("euler_maruyama", 250, "official-sigma", "mean", 0.04)
    assert (s.guidance.scale, s.guidance.channels, s.guidance.interval) == (1.8, None, (0.0, 0.7))
    assert main(["train", "--preset", "repa-sit-xl2", "--out", str(tmp_path / "r"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--preset repa-sit-xl2 trains on image data: give --latents (extracted with --pixels)" in err
