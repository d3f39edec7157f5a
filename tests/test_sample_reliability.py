"""`sit sample` reliability (issue 11): folder lock, identity of a set (weights, spec hash in every
part), broken parts / truncated npz redone, non-finite samples refused, bad --noise files."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_cli import TINY_SAMPLE_FLAGS, one_line, snapshot

from sit.cli import main
from sit.config import ModelConfig
from sit.generate.engine import generate
from sit.models.checkpoint import save_model
from sit.models.sit import SiT


def _net(scale=0.05, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, scale)
    return net


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(save_model(_net(), tmp_path_factory.mktemp("ck") / "tiny", {"path": "linear"}))


@pytest.fixture(scope="module")
def ema_model_dir(tmp_path_factory):
    """A checkpoint folder with different EMA and raw weights."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("em")
    src = save_model(_net(), d / "src", {"path": "linear"})
    ck = d / "step-0000010"
    ck.mkdir()
    meta = json.loads(open(str(src).replace(".safetensors", ".json")).read())
    (ck / "config.json").write_text(json.dumps(dict(meta, step=10)))  # the store checks name and config agree
    sd = load_file(str(src))
    save_file(sd, str(ck / "ema.safetensors"))
    save_file({k: v * 1.5 if k.startswith("final_layer.linear") else v for k, v in sd.items()}, str(ck / "model.safetensors"))
    return ck


def _sample(ckpt, out, *extra):
    return main(["sample", "--ckpt", str(ckpt), "--method", "euler", "--num-steps", "2", "--num-samples", "4",
                 "--batch-size", "2", "--out", str(out), "--no-progress", *extra])


def _arrays(out):
    with np.load(os.path.join(out, "samples.npz")) as z:
        return z["arr_0"].copy(), z["arr_1"].copy()


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


# --- 2. one folder, two runs -------------------------------------------------------------------


def test_second_run_on_a_locked_folder_is_refused(ckpt, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        assert _sample(ckpt, out) == 2
        _one_line_error(capsys, "in use by process", str(holder.pid))
        assert not (out / "samples.npz").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its stale lock is taken over, and released after the run
    assert _sample(ckpt, out) == 0
    assert not (out / ".lock").exists() and (out / "samples.npz").is_file()


# --- 3. weights and every setting are the set's identity ---------------------------------------


def _interrupted(ckpt_dir, out, capsys):
    """A complete EMA run with its parts kept, then made 'interrupted': npz and one part gone."""
    assert _sample(ckpt_dir, out, "--keep-parts") == 0
    (out / "samples.npz").unlink()
    (out / "parts" / "part-00000002-00000004.npz").unlink()
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(m, complete=False)))
    capsys.readouterr()


def test_resume_with_other_weights_is_refused_naming_the_field(ema_model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    _interrupted(ema_model_dir, out, capsys)
    assert _sample(ema_model_dir, out, "--weights", "model") == 2
    _one_line_error(capsys, "different settings", "weights")
    assert not (out / "samples.npz").exists()
    # the same weights resume, and give the set of a fresh EMA run
    assert _sample(ema_model_dir, out) == 0
    assert _sample(ema_model_dir, tmp_path / "fresh") == 0
    for a, b in zip(_arrays(out), _arrays(tmp_path / "fresh")):
        assert np.array_equal(a, b)
    # and a fresh raw-weights set is different (so a mixed set would have been wrong)
    assert _sample(ema_model_dir, tmp_path / "raw", "--weights", "model") == 0
    assert not np.array_equal(_arrays(tmp_path / "raw")[0], _arrays(out)[0])


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_parts_of_other_settings_are_not_adopted_without_a_manifest(ema_model_dir, tmp_path, capsys, damage):
    out = tmp_path / "s"
    _interrupted(ema_model_dir, out, capsys)
    if damage == "deleted":
        (out / "manifest.json").unlink()
    else:
        (out / "manifest.json").write_text('{"settings": {"chec')
    assert _sample(ema_model_dir, out, "--weights", "model") == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and "not adopted" in err
    assert not (out / "samples.npz").exists()
    assert sorted(os.listdir(out / "parts")) == ["part-00000000-00000002.npz"]  # left as it was
    # with the settings they were made with, the parts are adopted again
    assert _sample(ema_model_dir, out) == 0
    assert json.loads((out / "manifest.json").read_text())["last_run"]["generated"] == 2


# --- 5. broken parts and a truncated npz are redone --------------------------------------------

KW = dict(seed=3, latent_shape=(1, 6, 6), num_classes=10, progress=False,
          sampler_fn=lambda x0, y, noise: (torch.tanh(x0 + 0.7 * noise(x0)), {"nfe": 1}))


def test_part_with_a_bad_crc_is_regenerated(tmp_path, capsys):
    ref = generate(tmp_path / "ref", num_samples=6, batch_size=2, **KW)
    out = tmp_path / "run"
    generate(out, num_samples=6, batch_size=2, max_batches=2, **KW)
    part = out / "parts" / "part-00000002-00000004.npz"
    data = bytearray(part.read_bytes())
    data[300] ^= 0xFF  # inside images.npy's data: the zip directory still reads, the CRC fails
    part.write_bytes(bytes(data))
    res = generate(out, num_samples=6, batch_size=2, **KW)
    assert "is broken" in capsys.readouterr().err and res.num_generated == 4
    z, zr = np.load(res.npz), np.load(ref.npz)
    assert np.array_equal(z["arr_0"], zr["arr_0"]) and np.array_equal(z["arr_1"], zr["arr_1"])


def test_truncated_npz_of_a_complete_set_is_rebuilt(ckpt, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(ckpt, out) == 0
    good = _arrays(out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and len(m["npz_sha256"]) == 64
    data = (out / "samples.npz").read_bytes()
    (out / "samples.npz").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert _sample(ckpt, out) == 0
    assert "does not match the sha256" in capsys.readouterr().err
    for a, b in zip(_arrays(out), good):
        assert np.array_equal(a, b)
    # a sound complete set is left alone
    assert _sample(ckpt, out) == 0
    assert "nothing to do" in capsys.readouterr().out


# --- 7. non-finite samples are an error, never images ------------------------------------------


def test_nan_weights_are_an_error_naming_samples_and_checkpoint(tmp_path, capsys):
    net = _net()
    with torch.no_grad():
        net.final_layer.linear.bias[0] = float("nan")
    ck = save_model(net, tmp_path / "nan", {"path": "linear"})
    out = tmp_path / "s"
    assert _sample(ck, out) == 2
    _one_line_error(capsys, "samples [0, 1]", "not finite", str(ck))
    assert not (out / "samples.npz").exists() and not list((out / "parts").glob("part-*"))
    assert json.loads((out / "manifest.json").read_text())["complete"] is False


def test_non_finite_noise_file_is_refused(ckpt, tmp_path, capsys):
    x0 = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    x0[2, 0, 3, 3] = np.inf
    np.save(tmp_path / "n.npy", x0)
    assert _sample(ckpt, tmp_path / "s", "--noise", str(tmp_path / "n.npy")) == 2
    _one_line_error(capsys, "n.npy", "NaN/inf in samples [2]")
    assert not (tmp_path / "s").exists()  # refused before anything was loaded or written


# --- 11, 12: bad guidance channels, empty / truncated noise files -------------------------------


def test_cfg_channels_beyond_the_model_is_an_error(ckpt, tmp_path, capsys):
    assert _sample(ckpt, tmp_path / "s", "--cfg-scale", "2", "--cfg-channels", "5") == 2
    _one_line_error(capsys, "--cfg-channels 5", "1 channel")


@pytest.mark.parametrize("kind", ["empty.npy", "empty.safetensors", "truncated.npy", "truncated.safetensors"])
def test_empty_or_truncated_noise_file_one_line_exit_2(ckpt, tmp_path, capsys, kind):
    from safetensors.numpy import save_file

    x0 = np.zeros((4, 1, 8, 8), np.float32)
    p = tmp_path / kind
    if kind.startswith("empty"):
        p.write_bytes(b"")
    else:
        full = tmp_path / ("full" + p.suffix)
        np.save(full, x0) if p.suffix == ".npy" else save_file({"noise": x0}, str(full))
        p.write_bytes(full.read_bytes()[:120])
    assert _sample(ckpt, tmp_path / "s", "--noise", str(p)) == 2
    _one_line_error(capsys, str(p))


def test_sit_lt_beside_a_checkpoint_keeps_its_sample_sets_valid(ema_model_dir, tmp_path):
    """Issue 14.4: `sit lt` writes lt_table.json into the checkpoint folder; the same `sit sample`
    into the same folder afterwards must still be accepted (identity = weights + config)."""
    ck = tmp_path / "step-0000010"
    shutil.copytree(ema_model_dir, ck)
    out = tmp_path / "s"
    assert _sample(ck, out) == 0
    before = _arrays(out)
    assert main(["lt", "--ckpt", str(ck), "--t-points", "3", "--samples-per-t", "4", "--batch-size", "4"]) == 0
    assert (ck / "lt_table.json").is_file()
    assert _sample(ck, out) == 0
    after = _arrays(out)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("seed", ["0", "1"])
def test_complete_set_with_a_lost_manifest_is_never_replaced(tiny_run_and_samples, tmp_path, seed, capsys):
    run, _ = tiny_run_and_samples
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--png-folder", "--seed", "0", *TINY_SAMPLE_FLAGS]) == 0
    (out / "manifest.json").unlink()
    before = snapshot(out)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--png-folder", "--seed", seed, *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "samples.npz", "images/ (4 PNG files)", "no readable manifest.json", "cannot be proven")
    assert snapshot(out) == before


def test_a_file_of_a_checkpoint_folder_says_pass_the_folder(tiny_run_and_samples, tmp_path, capsys):
    run, _ = tiny_run_and_samples
    ck = run / "checkpoints" / "step-0000002"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(ck / "ema.safetensors"), "--out", str(tmp_path / "s"), *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "is one file of the checkpoint folder", f"--ckpt {ck}")
    assert main(["info", str(ck / "model.safetensors")]) == 2
    one_line(capsys, "pass the folder")


@pytest.mark.parametrize("seed", [str(2**64 - 2), str(2**64 + 5)])
def test_seed_overflow_is_named_before_any_part_is_written(tiny_run_and_samples, tmp_path, seed, capsys):
    run, _ = tiny_run_and_samples
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--seed", seed, *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, f"--seed {seed}", "SEED + 3")
    assert not out.exists()


def test_rerun_of_a_complete_set_makes_the_asked_outputs_and_says_nothing_was_generated(tiny_run_and_samples, tmp_path, capsys):
    run, _ = tiny_run_and_samples
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--out", str(out), *TINY_SAMPLE_FLAGS]) == 0
    npz = (out / "samples.npz").read_bytes()
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--grid-png", "--png-folder", *TINY_SAMPLE_FLAGS]) == 0
    text = capsys.readouterr().out
    assert "nothing to do" in text and "0 samples generated now" in text and "wrote" + " " + str(out / "samples.npz") not in text
    assert (out / "grid.png").is_file() and len(list((out / "images").glob("*.png"))) == 4
    assert (out / "samples.npz").read_bytes() == npz
