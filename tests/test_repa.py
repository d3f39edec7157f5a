"""The objective seam (extra loss terms owning modules) and REPA (sit.train.repa): a toy term with
an owned parameter trains, checkpoints and resumes bit-identically; REPA's loss is the formula;
token grids are matched by pooling; a tiny random DINOv2 trains a step; bad encoders are one line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sit.cli import main
from sit.config import ModelConfig, TrainConfig
from sit.train import builders as objective_mod
from sit.train import train
from sit.train.builders import LossTerm, build_objective
from sit.train.repa import default_depth, match_grid, repa_loss

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                   num_classes=10, learn_sigma=False, class_dropout_prob=0.1)


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=6, global_batch=16, lr=3e-3, log_every=1,
                ckpt_every=3, keep_last=5, ema_decay=0.9, quality=False, samples_per_class=2, sample_steps=2,
                progress=False, num_workers=0, cfg_scale=1.5, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def records(run: Path) -> list[dict]:
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines() if l.strip()]


class ToyTerm(LossTerm):
    """((h_1 * w).mean over channels - mean(x))^2 averaged over tokens: reads block 1's output from
    the objective's outputs and owns the parameter w, so it moves both w and the network."""

    name = "toy"
    coeff = 0.3
    hidden_blocks = (1,)

    def __init__(self, width: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, out):
        h = out.hidden[1]  # (B, T, D)
        return ((h * self.w).mean(-1) - out.x.flatten(1).mean(1, keepdim=True)).pow(2).mean(-1)


@pytest.fixture
def toy_term(monkeypatch):
    monkeypatch.setattr(objective_mod, "TERM_BUILDERS", [lambda cfg, mc, device: ToyTerm(mc.hidden_size)])


def test_toy_term_trains_checkpoints_and_resumes_bit_identically(tmp_path, toy_term):
    from safetensors.torch import load_file

    from sit import checkpoints

    ref = train(tiny_cfg(tmp_path / "ref"), TINY)
    recs = records(ref.run_dir)
    assert [r["step"] for r in recs] == list(range(1, 7)) and all("loss_toy" in r for r in recs)
    ck = ref.run_dir / "checkpoints" / "step-0000006"
    manifest = json.loads((ck / "manifest.json").read_text())
    assert "objective.safetensors" in manifest["files"]
    w = load_file(str(ck / "objective.safetensors"))["0.w"]
    assert not torch.equal(w, torch.linspace(0.5, 1.5, 32))  # the owned parameter was trained by AdamW
    opt = torch.load(ck / "optimizer.pt", weights_only=True)
    n_net = sum(1 for p in ref.net.parameters() if p.requires_grad)
    assert len(opt["state"]) == n_net + 1  # AdamW holds the term's parameter too

    # stop at 3, resume to 6: every logged number and every saved tensor equals the uninterrupted run
    part = train(tiny_cfg(tmp_path / "part", steps=3), TINY)
    assert part.step == 3
    train(resume=part.run_dir, steps=6)
    assert [{k: v for k, v in r.items() if k != "img_per_s"} for r in records(part.run_dir)] == \
           [{k: v for k, v in r.items() if k != "img_per_s"} for r in recs]
    ck2 = part.run_dir / "checkpoints" / "step-0000006"
    for name in ("model", "ema", "objective"):
        a, b = load_file(str(ck / f"{name}.safetensors")), load_file(str(ck2 / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    # the network alone reaches readers, exports and the identity; the term's file is verified
    net, meta = checkpoints.load(ref.run_dir)
    assert set(net.state_dict()) == set(load_file(str(ck / "ema.safetensors")))
    (ck / "objective.safetensors").write_bytes(b"\0" * manifest["files"]["objective.safetensors"]["size"])
    with pytest.raises(checkpoints.CheckpointError, match="objective.safetensors is corrupt"):
        checkpoints.verify(ck)


def test_paper_objective_has_no_terms_and_writes_the_same_files(tmp_path):
    res = train(tiny_cfg(tmp_path / "r", steps=3), TINY)
    ck = res.run_dir / "checkpoints" / "step-0000003"
    assert not (ck / "objective.safetensors").exists()
    assert "repa_encoder" not in json.loads((ck / "config.json").read_text())["train"]  # configs unchanged
    assert all(not k.startswith("loss_") or k == "loss_t_bins" for r in records(res.run_dir) for k in r)


def test_repa_loss_is_the_negative_mean_patch_cosine():
    g = torch.Generator().manual_seed(0)
    zt, z = torch.randn(3, 5, 7, generator=g, dtype=torch.float64), torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    want = torch.tensor([-sum(float(torch.dot(zt[b, n], z[b, n]) / (zt[b, n].norm() * z[b, n].norm())) for n in range(5)) / 5
                         for b in range(3)], dtype=torch.float64)
    assert torch.allclose(repa_loss(zt, z).double(), want, atol=1e-6)
    assert torch.allclose(repa_loss(z, 2.5 * z), torch.full((3,), -1.0), atol=1e-6)  # aligned: -1, scale-free
    with pytest.raises(ValueError, match="differ"):
        repa_loss(zt, z[:, :4])


def test_token_grids_are_pooled_or_interpolated_to_sits():
    z = torch.arange(2 * 64 * 3, dtype=torch.float32).view(2, 64, 3)  # 8x8 grid
    assert torch.equal(match_grid(z, 8), z)
    pooled = match_grid(z, 4)  # 2x2 blocks averaged
    m = z.transpose(1, 2).reshape(2, 3, 8, 8)
    assert torch.allclose(pooled[:, 0], m[:, :, :2, :2].mean((-1, -2)))
    assert torch.allclose(pooled[:, 5], m[:, :, 2:4, 2:4].mean((-1, -2)))
    assert match_grid(z, 16).shape == (2, 256, 3)
    with pytest.raises(ValueError, match="square"):
        match_grid(z[:, :10], 4)
    assert [default_depth(d) for d in (28, 24, 12, 4, 1)] == [8, 7, 4, 2, 1]


def test_tiny_random_dinov2_from_a_local_folder_trains(tmp_path, capsys):
    from transformers import Dinov2Config, Dinov2Model

    from sit.train.repa import Dinov2Encoder

    torch.manual_seed(0)
    folder = tmp_path / "dinov2"
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=2, image_size=8)).save_pretrained(folder)
    enc = Dinov2Encoder(str(folder), 8, torch.device("cpu"))
    assert enc.resolution == 8 and enc(torch.zeros(2, 1, 8, 8)).shape == (2, 16, 16)  # 4x4 patches, CLS dropped
    assert Dinov2Encoder(str(folder), 256, torch.device("cpu")).resolution == 224  # REPA: 224 px for 256 px images
    res = train(tiny_cfg(tmp_path / "r", steps=2, ckpt_every=2, repa_encoder=str(folder), repa_proj_dim=8), TINY)
    recs = records(res.run_dir)
    assert len(recs) == 2 and all(-1.0 <= r["loss_repa"] <= 1.0 for r in recs)
    capsys.readouterr()
    assert main(["info", str(res.run_dir)]) == 0  # `sit info` shows the alignment settings
    out = capsys.readouterr().out
    assert f"REPA: encoder {folder}, block 1 of 2, lambda 0.5, projector MLP width 8" in out


def test_bad_repa_settings_are_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "no-dinov2"
    assert main(["train", "--repa-encoder", str(missing), "--steps", "1", "--out", str(tmp_path / "r"),
                 "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no DINOv2 folder" in err and "save_pretrained" in err
    assert main(["train", "--repa-encoder", "digits-cnn", "--repa-depth", "9", "--steps", "1",
                 "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--repa-depth 9 exceeds the network's 4 blocks" in err  # the flag, not the field
    from sit.config import ConfigError

    with pytest.raises(ConfigError, match=r"TrainConfig.repa_coeff must be a finite number >= 0") as e:  # the library names the field
        TrainConfig(repa_coeff=-1.0)
    assert (e.value.record, e.value.field) == ("TrainConfig", "repa_coeff")
    assert main(["train", "--repa-coeff", "-1", "--out", str(tmp_path / "r3"), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("--repa-coeff must be a finite number >= 0 (got -1.0)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_repa_two_process_ddp_equals_one_process(tmp_path):
    """The projector is outside the DDP-wrapped network: its gradients are averaged by the loop."""
    from safetensors.torch import load_file

    flags = ["--steps", "3", "--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2",
             "--batch", "16", "--lr", "3e-3", "--warmup", "0", "--log-every", "1", "--ckpt-every", "3", "--ema", "0.9",
             "--no-quality", "--samples-per-class", "2", "--sample-steps", "2", "--no-progress", "--threads", "1",
             "--repa-encoder", "digits-cnn", "--repa-proj-dim", "16", "--device", "cpu"]
    one = tmp_path / "one"
    assert main(["train", "--out", str(one), *flags]) == 0  # also caches the encoder for the subprocesses
    ddp = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(_free_port()), "-m", "sit.cli", "train", "--out", str(ddp), *flags],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((ddp / "ddp_check.json").read_text())["ranks_identical"]
    for name in ("model", "objective"):
        a = load_file(str(ddp / "checkpoints" / "step-0000003" / f"{name}.safetensors"))
        b = load_file(str(one / "checkpoints" / "step-0000003" / f"{name}.safetensors"))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5, name
    ra, rb = records(ddp), records(one)
    assert [r["loss_repa"] for r in ra] == pytest.approx([r["loss_repa"] for r in rb], rel=1e-5)


def test_cosine_velocity_term_is_one_minus_the_channel_cosine_of_the_velocity():
    from sit.models.field import ModelField
    from sit.models.sit import SiT
    from sit.paths import get_path
    from sit.train.terms import CosineVelocityTerm

    torch.manual_seed(0)
    net = SiT(TINY)
    for q in net.final_layer.parameters():  # adaLN-Zero starts at 0: give the output a direction
        nn.init.normal_(q, std=0.1)
    cfg = TrainConfig(cosine_coeff=1.0)
    term = CosineVelocityTerm(cfg, TINY)
    x, eps = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    t, y = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1, 2, 3])
    path = get_path("linear")
    v = ModelField(net, "velocity", "continuous")(path.x_t(x, eps, t), t, y)  # the paper-time velocity
    out = build_objective(cfg, TINY).outputs(net, x, t, eps, y)
    assert torch.equal(out.pred, v)  # the objective hands over the velocity, sign flipped once
    got = term(out)
    target = -x + eps  # Linear: alpha_dot x* + sigma_dot eps
    want = torch.stack([torch.stack([1 - torch.dot(v[b, :, i, j], target[b, :, i, j])
                                     / (v[b, :, i, j].norm() * target[b, :, i, j].norm())
                                     for i in range(8) for j in range(8)]).mean() for b in range(3)])
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="cosine_coeff needs prediction 'velocity'"):
        TrainConfig(cosine_coeff=1.0, prediction="score")


def test_cosine_term_and_grad_checkpointing_train(tmp_path):
    plain = records(train(tiny_cfg(tmp_path / "a", steps=3, ckpt_every=3, cosine_coeff=1.0), TINY).run_dir)
    ckpt = records(train(tiny_cfg(tmp_path / "b", steps=3, ckpt_every=3, cosine_coeff=1.0, grad_checkpointing=True),
                         TINY).run_dir)
    assert all(0.0 <= r["loss_cos"] <= 2.0 for r in plain)
    assert [r["loss"] for r in ckpt] == pytest.approx([r["loss"] for r in plain], rel=1e-6)
    assert [r["loss_cos"] for r in ckpt] == pytest.approx([r["loss_cos"] for r in plain], rel=1e-6)


def test_demo_presets_live_in_the_library_and_match_the_cli():
    import argparse

    from sit.commands.train import add_arguments, resolve
    from sit.train.recipes import demo_configs

    p = argparse.ArgumentParser()
    add_arguments(p)
    for argv, dataset, kw in ([], "digits", {}), (["--dataset", "mnist_5k"], "mnist_5k", {}), \
            (["--repa-encoder", "digits-cnn"], "digits", {"repa_encoder": "digits-cnn"}):
        assert resolve(p.parse_args(argv)) == demo_configs(dataset, **kw), argv
