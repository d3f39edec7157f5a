"""`sit ema`: the reconstruction's coefficients sum to 1 (a constant network reconstructs to itself),
requests the snapshots cannot answer are refused in one line (a step between or beyond them, a
length reconstructed with a large error, tiny lengths, another run's snapshots), and the output is
a post-hoc EMA folder of its own: written whole with a manifest, never into another kind of folder
or over another request without --overwrite, verified by every reader."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from sit import checkpoints
from sit.cli import main
from sit.train.phema import PowerEMA, fit_error, reconstruct, solve_coefficients, write_snapshots

BASE = ["--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "4", "--batch", "8",
        "--lr", "3e-3", "--warmup", "0", "--log-every", "5", "--ckpt-every", "10", "--keep-last", "5", "--no-quality",
        "--samples-per-class", "1", "--sample-steps", "2", "--no-progress", "--threads", "1", "--steps", "20"]
FLAGS = [*BASE, "--phema-sigmas", "0.05", "0.1", "--phema-every", "5"]


def test_coefficients_sum_to_one_and_a_constant_network_reconstructs_to_itself(tmp_path):
    steps = [t for t in range(10, 101, 10) for _ in (0, 1)]
    sigmas = [0.05, 0.10] * 10
    for s in (0.04, 0.07, 0.15):
        assert solve_coefficients(steps, sigmas, 100, s).sum() == pytest.approx(1.0, abs=1e-12)
    # a network that never changes: every tracked EMA is it, and so must be any reconstruction
    torch.manual_seed(0)
    net = nn.Linear(7, 5)
    pema = PowerEMA(net, (0.05, 0.10))
    for t in range(1, 101):
        pema.update(net, t)
        if t % 10 == 0:
            write_snapshots(tmp_path, pema, t)
    for s in (0.06, 0.08):
        sd, info = reconstruct(tmp_path, s)
        assert info["fit_error"] < 0.05
        assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items()), s  # was scaled by 0.99..1.003


def test_fit_error_is_zero_for_a_tracked_length_and_grows_outside():
    steps = [t for t in range(100, 601, 100) for _ in (0, 1)]
    sigmas = [0.05, 0.10] * 6
    assert fit_error(steps, sigmas, 600, 0.05) < 1e-6
    assert fit_error(steps, sigmas, 600, 0.075) < 0.03
    assert fit_error(steps, sigmas, 600, 0.01) > 0.5  # the coefficients of +-4.2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("phema")
    a, b = root / "a", root / "b"
    assert main(["train", "--out", str(a), *FLAGS]) == 0
    assert main(["train", "--out", str(b), *FLAGS, "--seed", "1"]) == 0
    return a, b


def _err(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_sit_ema_refuses_what_cannot_be_reconstructed(runs, tmp_path, capsys):
    a, b = runs
    ema = ["ema", "--ckpt", str(a), "--out", str(tmp_path / "o")]
    err = _err(capsys, [*ema, "--sigma-rel", "0.05", "--step", "12"])
    assert "--step 12 is between snapshots" in err and "5, 10, 15, 20" in err
    err = _err(capsys, [*ema, "--sigma-rel", "0.05", "--step", "5000"])
    assert "after the last snapshot" in err
    err = _err(capsys, [*ema, "--sigma-rel", "0.01"])
    assert "--sigma-rel 0.01" in err and "relative error" in err and "lengths within it: from" in err
    for argv in ([*ema, "--sigma-rel", "1e-300"], ["train", "--out", str(tmp_path / "t"), *BASE,
                                                   "--phema-sigmas", "1e-300", "--phema-every", "5"]):
        err = _err(capsys, argv)
        assert "1e-300" in err and "OverflowError" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()
    # snapshots of another run copied into the run folder
    c = tmp_path / "c"
    shutil.copytree(a, c)
    shutil.rmtree(c / "phema")
    shutil.copytree(b / "phema", c / "phema")
    err = _err(capsys, ["ema", "--ckpt", str(c), "--sigma-rel", "0.05", "--out", str(tmp_path / "o")])
    assert "is not this run's (it records another run)" in err
    # an index written before snapshots named their run is still read (and its cadence checked)
    index = json.loads((a / "phema" / "index.json").read_text())
    shutil.rmtree(c / "phema")
    shutil.copytree(a / "phema", c / "phema")
    (c / "phema" / "index.json").write_text(json.dumps([{k: v for k, v in e.items() if k != "run"} for e in index]))
    assert main(["ema", "--ckpt", str(c), "--sigma-rel", "0.07", "--out", str(tmp_path / "o")]) == 0


def test_sit_ema_output_is_a_verified_folder_of_its_own(runs, tmp_path, capsys):
    a, b = runs
    ck = a / "checkpoints" / "step-0000020"
    sample = tmp_path / "samples"
    sample.mkdir()
    (sample / "manifest.json").write_text(json.dumps({"kind": "sample-set", "settings": {}}))
    export = tmp_path / "export"
    (export / "transformer").mkdir(parents=True)
    (export / "sit_diffusers.json").write_text("{}")
    for out, says in ((ck, "inside the checkpoint folder"), (b, "is a run folder"), (sample, "is a sample folder"),
                      (export, "is a diffusers export folder")):
        err = _err(capsys, ["ema", "--ckpt", str(a), "--sigma-rel", "0.07", "--out", str(out), "--overwrite"])
        assert says in err, err
    checkpoints.verify(ck)  # untouched
    assert checkpoints.resolve(b).parent.parent == b

    e = tmp_path / "ema"
    assert main(["ema", "--ckpt", str(a), "--sigma-rel", "0.07", "--out", str(e)]) == 0
    manifest = json.loads((e / "manifest.json").read_text())
    assert manifest["kind"] == "posthoc-ema" and manifest["step"] == 20
    assert set(manifest["files"]) == {"config.json", "ema.safetensors", "phema.json"}
    first = (e / "ema.safetensors").read_bytes()
    assert main(["ema", "--ckpt", str(a), "--sigma-rel", "0.07", "--out", str(e)]) == 0  # the same request again
    assert (e / "ema.safetensors").read_bytes() == first
    err = _err(capsys, ["ema", "--ckpt", str(a), "--sigma-rel", "0.08", "--out", str(e)])
    assert "another request (sigma_rel 0.07 at step 20" in err and "--overwrite" in err
    assert json.loads((e / "phema.json").read_text())["sigma_rel"] == 0.07
    assert main(["ema", "--ckpt", str(a), "--sigma-rel", "0.08", "--out", str(e), "--overwrite"]) == 0
    info = json.loads((e / "phema.json").read_text())
    assert info["sigma_rel"] == 0.08 and 0 <= info["fit_error"] < 0.05
    assert sum(c["weight"] for c in info["coefficients"]) == pytest.approx(1.0)

    # read like a checkpoint, verified; nothing is written inside it, nothing resumes from it
    assert main(["info", str(e)]) == 0
    assert main(["convert", str(e), str(tmp_path / "conv.safetensors")]) == 0
    net, meta = checkpoints.load(e)
    assert meta.step == 20
    assert main(["sample", "--ckpt", str(e), "--out", str(tmp_path / "s"), "--num-samples", "2", "--method", "euler",
                 "--num-steps", "1", "--no-progress", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["checkpoint"] == str(e)
    err = _err(capsys, ["sample", "--ckpt", str(a), "--out", str(e / "s"), "--num-samples", "2"])
    assert "inside the checkpoint folder" in err
    err = _err(capsys, ["train", "--resume", str(e)])
    assert "post-hoc EMA folder" in err
    raw = bytearray((e / "ema.safetensors").read_bytes())
    raw[-1] ^= 1
    (e / "ema.safetensors").write_bytes(bytes(raw))
    err = _err(capsys, ["info", str(e)])
    assert "ema.safetensors is corrupt: sha256 mismatch" in err
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.load(e)
    assert np.isfinite(sum(float(v.sum()) for v in net.state_dict().values()))
