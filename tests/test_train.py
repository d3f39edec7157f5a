"""sit train: the loop lowers the loss, resumes exactly after SIGKILL, refuses corrupt checkpoints,
skips non-finite steps, and `--dry-run` prints the resolved config. Tiny models on 8x8 digits."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sit.checkpoints import CheckpointError, find_resumable, list_checkpoints  # noqa: E402
from sit.checkpoints import verify as verify_checkpoint  # noqa: E402
from sit.cli import main  # noqa: E402
from sit.config import ModelConfig, TrainConfig  # noqa: E402
from sit.train import Callbacks, NonFiniteLossError, StepSampler, train  # noqa: E402

HELPER = Path(__file__).with_name("train_kill_helper.py")

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                   num_classes=10, learn_sigma=False, class_dropout_prob=0.1)
TINY_FLAGS = ["--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2", "--batch", "16",
              "--lr", "3e-3", "--warmup", "0", "--log-every", "1", "--ckpt-every", "3", "--keep-last", "5",
              "--no-quality", "--samples-per-class", "2", "--sample-steps", "2", "--no-progress", "--threads", "1"]


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=8, global_batch=16, lr=3e-3, log_every=1,
                ckpt_every=3, keep_last=5, ema_decay=0.9, quality=False, samples_per_class=2, sample_steps=2,
                progress=False, num_workers=0, cfg_scale=1.5, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def losses(run: Path) -> dict[int, float]:
    recs = [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


def test_step_sampler_covers_epoch_and_splits_ranks():
    s = StepSampler(n=40, global_batch=8, grad_accum=2, world_size=2, rank=0, seed=1)
    r1 = StepSampler(n=40, global_batch=8, grad_accum=2, world_size=2, rank=1, seed=1)
    one = StepSampler(n=40, global_batch=8, grad_accum=1, world_size=1, rank=0, seed=1)
    seen = []
    for step in range(5):  # one epoch
        glob = one.indices(step, 0)[1]
        parts = torch.cat([s.indices(step, 0)[1], r1.indices(step, 0)[1], s.indices(step, 1)[1], r1.indices(step, 1)[1]])
        assert torch.equal(parts, glob)
        seen.append(glob)
    assert sorted(torch.cat(seen).tolist()) == list(range(40))
    assert s.position(7) == {"epoch": 1, "index": 16}


def test_loss_decreases(tmp_path):
    res = train(tiny_cfg(tmp_path / "r", steps=40, log_every=10, ckpt_every=40, lt_table=True), TINY)
    ls = losses(res.run_dir)
    assert ls[40] < 0.8 * ls[10], ls
    out = res.run_dir
    assert (out / "loss_curve.png").is_file() and (out / "samples.png").is_file()
    ck = list_checkpoints(out)[-1]
    assert ck.name == "step-0000040"
    meta = json.loads((ck / "config.json").read_text())
    assert meta["model"]["depth"] == 2 and meta["train"]["steps"] == 40 and meta["time_input"] == "continuous"
    # the checkpoint loads through the model loader (the EMA weights by default)
    from sit.models.checkpoint import load_model

    net, m = load_model(ck)  # one checkpoint folder (a run folder is the store's to resolve)
    assert m["path"] == "linear" and m["prediction"] == "velocity"
    from sit import checkpoints

    net2, rm = checkpoints.load(out)
    assert rm.path == "linear" and rm.step == 40 and rm.train["steps"] == 40
    # the L_t table (sit.lt) is stored with the final checkpoint
    from sit.diffusion_coef import LossTable

    table = LossTable.load(ck / "lt_table.json")
    assert len(table.t) == 50 and table.dim == 64 and table.reduction == "mean"
    assert all(v > 0 for v in table.loss)
    for (k, a), b in zip(net.state_dict().items(), res.ema.state_dict().values()):
        assert torch.equal(a, b), k


def test_exact_resume_after_sigkill(tmp_path):
    flags = ["--steps", "8", "--ema", "0.9", "--cfg-scale", "1.5", *TINY_FLAGS]
    assert main(["train", "--out", str(tmp_path / "ref"), *flags]) == 0  # uninterrupted reference
    ref_losses = losses(tmp_path / "ref")
    run = tmp_path / "killed"
    cmd = [sys.executable, str(HELPER), "7", "--out", str(run), *flags]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    before_kill = losses(run)
    assert max(before_kill) == 7  # step 7 was logged, its checkpoint (6) is older
    assert [c.name for c in list_checkpoints(run)] == ["step-0000003", "step-0000006"]
    p = subprocess.run([sys.executable, "-m", "sit.cli", "train", "--resume", str(run), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    got = losses(run)
    assert sorted(got) == list(range(1, 9))
    assert got[7] == before_kill[7]  # step 7 recomputed after the resume: bit-identical
    for s in range(1, 9):
        assert abs(got[s] - ref_losses[s]) <= 1e-6 * max(1.0, abs(ref_losses[s])), (s, got[s], ref_losses[s])
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "step-0000008" / "ema.safetensors"))
    b = load_file(str(tmp_path / "ref" / "checkpoints" / "step-0000008" / "ema.safetensors"))
    # (the in-process reference may differ from subprocesses in the last float bits)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5


def test_corrupt_checkpoint_is_refused_and_previous_used(tmp_path):
    ref = train(tiny_cfg(tmp_path / "ref", steps=6), TINY)
    run = tmp_path / "run"
    shutil.copytree(ref.run_dir, run)
    newest = run / "checkpoints" / "step-0000006"
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(newest)
    msgs = []
    ck, _ = find_resumable(run, log=msgs.append)
    assert ck.name == "step-0000003"
    assert any("step-0000006" in m and "truncated" in m for m in msgs)
    # a flipped byte of the same size is caught by the hash
    g = run / "checkpoints" / "step-0000003" / "ema.safetensors"
    b = bytearray(g.read_bytes())
    b[-1] ^= 0xFF
    g.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        find_resumable(run, log=msgs.append)
    # resume (from step 3 of a fresh copy with only 6 corrupt) repeats the reference losses
    run2 = tmp_path / "run2"
    shutil.copytree(ref.run_dir, run2)
    (run2 / "checkpoints" / "step-0000006" / "state.json").write_text("{not json")
    res = train(resume=run2)
    assert res.step == 6
    assert losses(run2) == pytest.approx(losses(ref.run_dir), rel=1e-6)


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    def nan_at_3(step, loss):  # step is 0-based: the 3rd step
        return loss * float("nan") if step == 2 else loss

    cfg = tiny_cfg(tmp_path / "a", steps=4, ckpt_every=100)

    res = train(cfg, TINY, callbacks=Callbacks(on_losses=nan_at_3))
    recs = [json.loads(l) for l in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    bad = [r for r in recs if r.get("nonfinite")]
    assert len(bad) == 1 and bad[0]["step"] == 3 and len(bad[0]["bad_t"]) == 16
    assert all(0 <= t <= 1 for t in bad[0]["bad_t"])
    assert [r for r in recs if r["step"] == 3 and "loss" in r][0]["skipped"] == 1
    assert all(torch.isfinite(p).all() for p in res.net.parameters())

    def nan_from_2(step, loss):
        return loss + float("inf") if step >= 1 else loss

    cfg = tiny_cfg(tmp_path / "b", steps=20, ckpt_every=100, max_nonfinite=3)
    with pytest.raises(NonFiniteLossError, match="3 non-finite") as e:
        train(cfg, TINY, callbacks=Callbacks(on_losses=nan_from_2))
    assert "step-0000004" in str(e.value)
    ck = tmp_path / "b" / "checkpoints" / "step-0000004"
    state = verify_checkpoint(ck)
    assert state["step"] == 4 and state["consecutive_nonfinite"] == 3
    from safetensors.torch import load_file

    assert all(torch.isfinite(v).all() for v in load_file(str(ck / "model.safetensors")).values())


@pytest.mark.parametrize("flags", [
    ["--path", "gvp", "--prediction", "score", "--loss-weight", "likelihood"],
    ["--path", "vp", "--prediction", "noise", "--time-dist", "logit_normal", "--precision", "bf16"],
    ["--time", "discrete"],
])
def test_other_objectives_run(tmp_path, flags):
    out = tmp_path / "r"
    rc = main(["train", "--out", str(out), "--steps", "2", "--grad-accum", "2", "--label-dropout", "0.2", *TINY_FLAGS, *flags])
    assert rc == 0
    ls = losses(out)
    assert len(ls) == 2 and all(v is not None and v == v for v in ls.values())
    meta = json.loads((out / "run_config.json").read_text())
    if "discrete" in flags:
        assert meta["time_input"] == "discrete" and meta["path"] == "ddpm" and meta["model"]["learn_sigma"] is True


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--dry-run"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["train"]["dataset"] == "digits" and d["model"]["in_channels"] == 1 and d["model"]["num_classes"] == 10
    assert main(["train", "--dry-run", "--dataset", "mnist_5k", "--path", "gvp", "--prediction", "noise",
                 "--loss-weight", "velocity", "--model", "SiT-S/4", "--lr", "2e-4"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["path"] == "gvp" and d["prediction"] == "noise" and d["loss_weight"] == "velocity"
    assert d["model"]["hidden_size"] == 384 and d["model"]["input_size"] == 32 and d["train"]["lr"] == 2e-4


def test_bad_flag_values_are_one_line_errors(capsys):
    assert main(["train", "--dry-run", "--prediction", "velocity", "--loss-weight", "likelihood"]) == 2
    assert "needs prediction 'score' or 'noise'" in capsys.readouterr().err


def _image_folder(root: Path, n_per_class: int = 8, size: int = 16):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_real_data_paths_images_and_latents(tmp_path):
    """--data (ImageFolder through a VAE folder) and --latents (sit extract shards) both train."""
    pytest.importorskip("diffusers")
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.vae import VAE

    _image_folder(tmp_path / "imgs")
    vae = VAE.tiny_random(0)
    vae.model.save_pretrained(tmp_path / "vae")
    common = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "8",
              "--steps", "2", "--log-every", "1", "--ckpt-every", "2", "--num-workers", "0", "--no-progress",
              "--threads", "1", "--sample-steps", "2", "--samples-per-class", "2"]
    out = tmp_path / "run_img"
    assert main(["train", "--data", str(tmp_path / "imgs"), "--vae", str(tmp_path / "vae"), "--image-size", "16",
                 "--out", str(out), *common]) == 0
    meta = json.loads((out / "run_config.json").read_text())
    assert meta["model"]["in_channels"] == 4 and meta["model"]["input_size"] == 8 and meta["model"]["num_classes"] == 2
    assert len(losses(out)) == 2 and (out / "samples" / "final.png").is_file()
    # the VAE posterior noise is seeded by (seed, step, micro-batch): a second run repeats the losses
    out2 = tmp_path / "run_img2"
    assert main(["train", "--data", str(tmp_path / "imgs"), "--vae", str(tmp_path / "vae"), "--image-size", "16",
                 "--out", str(out2), "--no-quality", *common]) == 0
    assert losses(out2) == losses(out)

    extract_latents(ImageFolderDataset(tmp_path / "imgs", 16), vae, tmp_path / "lat", shard_size=8)
    out = tmp_path / "run_lat"
    assert main(["train", "--latents", str(tmp_path / "lat"), "--out", str(out), *common]) == 0
    assert len(losses(out)) == 2 and all(v == v for v in losses(out).values())


def test_sigterm_checkpoints_and_stops(tmp_path):
    import signal

    def term_at_2(step, loss):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by train(): finish the step, checkpoint, stop
        return loss

    res = train(tiny_cfg(tmp_path / "r", steps=50, ckpt_every=100, sample_every=2), TINY,
                callbacks=Callbacks(on_losses=term_at_2))
    assert res.status == "terminated" and res.step == 2
    assert [c.name for c in list_checkpoints(res.run_dir)] == ["step-0000002"]
    assert (res.run_dir / "samples" / "step-0000002.png").is_file()  # periodic EMA grid
    assert signal.getsignal(signal.SIGTERM) is not None


def test_compiled_training_matches_eager(tmp_path):
    """--compile (torch.compile of the network in the loop) trains the same run as eager, up to the
    compiler's float reordering."""
    eager = losses(train(tiny_cfg(tmp_path / "eager", steps=3, ckpt_every=3), TINY).run_dir)
    comp = losses(train(tiny_cfg(tmp_path / "comp", steps=3, ckpt_every=3, compile=True), TINY).run_dir)
    assert sorted(comp) == [1, 2, 3]
    assert list(comp.values()) == pytest.approx(list(eager.values()), rel=1e-3)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, float("inf")])
def test_clip_grad_norm_is_torchs_bit_for_bit(max_norm):
    """sit.train.clip_grad_norm skips torch's multiply-by-1.0 when the norm is under max_norm:
    the same norm and the same gradients, bit for bit, whether or not it clips."""
    from sit.train import clip_grad_norm

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=g) for s in ((7, 5), (11,), (3, 2, 2))]
    ours = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
    ref = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
    for a, b, x in zip(ours, ref, grads):
        a.grad, b.grad = x.clone(), x.clone()
    norm = clip_grad_norm(ours, max_norm)
    assert norm == float(torch.nn.utils.clip_grad_norm_(ref, max_norm))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, ref))
    assert (norm > max_norm) == (not torch.equal(ours[0].grad, grads[0]))  # 3.0 and inf leave them untouched


def test_fused_adamw_is_adamw_and_shares_its_state_dict():
    """make_adamw (torch's fused kernel) takes the same steps as the official per-tensor AdamW up to
    float rounding, and the two load each other's state dicts (checkpoints written before the
    switch resume)."""
    from sit.train import load_adamw_state, make_adamw

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(64, 9, generator=g)
    steps = [torch.randn(64, 9, generator=g) for _ in range(30)]
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    fused = make_adamw([a], 1e-2, weight_decay=0.05, betas=(0.9, 0.95))
    plain = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.05, betas=(0.9, 0.95), foreach=False)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    for grad in steps:
        a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        plain.step()
    assert (a - w0).abs().max() > 0.1  # it moved
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # state dicts cross over: a fused optimizer resumes the plain one's moments, and back
    c = torch.nn.Parameter(b.detach().clone())
    resumed = make_adamw([c], 1e-2, weight_decay=0.05, betas=(0.9, 0.95))
    load_adamw_state(resumed, copy.deepcopy(plain.state_dict()))  # (state_dict() shares the moment tensors)
    assert resumed.param_groups[0]["fused"]  # torch's load_state_dict alone would take the saved fused=None
    back = torch.optim.AdamW([torch.nn.Parameter(a.detach().clone())], lr=1e-2, foreach=False)
    back.load_state_dict(copy.deepcopy(fused.state_dict()))
    c.grad = b.grad = steps[0].clone()
    resumed.step()
    plain.step()
    torch.testing.assert_close(c, b, rtol=0, atol=1e-6)
    assert float(back.state_dict()["state"][0]["step"]) == 30
