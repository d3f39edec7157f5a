"""`sit sample` and the measurement commands end to end on a tiny random SiT (8x8x1 pixels)."""

import json
import os

import numpy as np
import pytest
import torch

import sit.models.checkpoint as ckpt_mod
from sit.cli import main
from sit.config import ModelConfig
from sit.models.sit import SiT


def _tiny(tmp_path, name, meta, in_channels=1):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=in_channels, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)  # away from the all-zero adaLN-Zero init, so the field is not trivial
    return str(ckpt_mod.save_model(net, tmp_path / name, meta))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "sit": _tiny(d, "tiny_sit", {"path": "linear", "prediction": "velocity", "time_input": "continuous"}),
        "dit": _tiny(d, "tiny_dit", {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}),
        # RGB pixels: the DiT preset guides channels 0..2, which a 1-channel model does not have
        "dit3": _tiny(d, "tiny_dit3", {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}, in_channels=3),
    }


def _npz(d):
    z = np.load(os.path.join(d, "samples.npz"))
    return z["arr_0"], z["arr_1"]


def test_sample_cli_writes_npz_png_manifest(ckpts, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sample", "--ckpt", ckpts["sit"], "--method", "euler", "--num-steps", "3", "--labels", "1,2,3",
               "--num-samples", "5", "--batch-size", "2", "--cfg-scale", "2", "--grid-png", "--png-folder",
               "--save-latents", "npy", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "NFE per sample actually spent: 3" in capsys.readouterr().out
    imgs, labels = _npz(out)
    assert imgs.shape == (5, 8, 8, 3) and imgs.dtype == np.uint8
    assert labels.tolist() == [1, 2, 3, 1, 2]
    assert (imgs[..., 0] == imgs[..., 1]).all()  # grey repeated to 3 channels
    assert len(os.listdir(out / "images")) == 5 and (out / "grid.png").is_file()
    assert np.load(out / "latents.npy").shape == (5, 1, 8, 8)
    m = json.loads((out / "manifest.json").read_text())
    s = m["settings"]
    assert m["complete"] and m["nfe_per_sample"] == [3]
    assert m["run_meta"]["path"] == "linear" and m["run_meta"]["prediction"] == "velocity"
    assert s["guidance"] == {"scale": 2.0, "channels": None, "interval": None}
    assert s["sample"]["method"] == "euler" and s["sample"]["num_steps"] == 3 and s["sample"]["kind"] == "continuous"
    assert m["sampler"]["config"]["num_steps"] == 3 and s["weights"] == "ema" and s["labels"] == [1, 2, 3]
    assert len(s["checkpoint"]) == 64 and s["precision"] == "fp32" and len(m["spec_sha256"]) == 64
    assert m["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("kind, method", [("sit", "heun"), ("sit", "euler_maruyama"), ("dit", "ddpm")])
def test_batch_size_does_not_change_samples(ckpts, tmp_path, kind, method):
    """Sample i comes from seed i (initial noise and SDE / ancestral step noise), whatever the
    batch size. The network's float32 results may differ by ~1e-7 between batch shapes, hence allclose."""
    runs = []
    for bs in (2, 3):
        out = tmp_path / f"b{bs}"
        rc = main(["sample", "--ckpt", ckpts[kind], "--method", method, "--num-steps", "3", "--num-samples", "5",
                   "--batch-size", str(bs), "--cfg-scale", "1.5", "--save-latents", "npy", "--out", str(out),
                   "--no-progress"])
        assert rc == 0
        runs.append((np.load(out / "latents.npy"), *_npz(out)))
    (la, ia, ya), (lb, ib, yb) = runs
    assert np.array_equal(ya, yb)
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-5)
    assert np.abs(ia.astype(int) - ib.astype(int)).max() <= 1
    assert np.abs(la).max() > 0.1  # the samples are not trivial


def test_discrete_ddpm_and_preset_override(ckpts, tmp_path, capsys):
    out = tmp_path / "d"
    rc = main(["sample", "--ckpt", ckpts["dit3"], "--preset", "dit-ddpm250", "--num-steps", "4", "--num-samples", "3",
               "--batch-size", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "NFE per sample actually spent: 4" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["preset"] == "dit-ddpm250" and m["settings"]["sample"] == {"kind": "discrete", "method": "ddpm",
                                                                         "num_steps": 4, "eta": 0.0}
    assert m["settings"]["guidance"]["scale"] == 1.5 and m["settings"]["guidance"]["channels"] == 3
    assert _npz(out)[0].shape == (3, 8, 8, 3)


@pytest.mark.parametrize("argv, msg", [
    (["--num-steps", "0"], "--num-steps must be >= 1"),
    (["--method", "bogus"], "bogus"),
    (["--cfg-scale", "nan"], "--cfg-scale"),
    (["--labels", "3,99"], "outside"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--cfg-interval", "0.5,0.2"], "--cfg-interval"),
    (["--w", "zzz", "--method", "euler_maruyama"], "zzz"),
    (["--method", "ddpm"], "discrete-time"),
    (["--noise", "missing.npy"], "missing.npy"),
])
def test_bad_options_one_line_exit_2(ckpts, tmp_path, capsys, argv, msg):
    rc = main(["sample", "--ckpt", ckpts["sit"], "--num-samples", "2", "--num-steps", "2", "--out", str(tmp_path / "x"),
               "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert msg in err and len(err.splitlines()) == 1


def test_argparse_choice_error_exit_2(ckpts, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--ckpt", ckpts["sit"], "--precision", "fp8", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_explicit_noise_file(ckpts, tmp_path):
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)).numpy()
    np.save(tmp_path / "n.npy", x0)
    outs = []
    for name, extra in (("a", ["--noise", str(tmp_path / "n.npy"), "--seed", "0"]), ("b", ["--seed", "0"])):
        out = tmp_path / name
        assert main(["sample", "--ckpt", ckpts["sit"], "--method", "euler", "--num-steps", "2", "--num-samples", "2",
                     "--labels", "4", "--save-latents", "npy", "--out", str(out), "--no-progress", *extra]) == 0
        outs.append(np.load(out / "latents.npy"))
    assert not np.allclose(outs[0], outs[1])  # the file's noise, not the seeded noise, was used


def test_sweep_smoke(ckpts, tmp_path):
    out = tmp_path / "sw"
    rc = main(["sweep", "--ckpt", ckpts["sit"], "--samplers", "euler,heun", "--nfe", "2,4", "--num-samples", "20",
               "--batch-size", "20", "--out", str(out)])
    assert rc == 0
    from sit.evaluate.plots import read_csv

    rows = read_csv(out / "sweep.csv")
    assert [(r["sampler"], int(r["nfe"])) for r in rows] == [("euler", 2), ("euler", 4), ("heun", 2), ("heun", 4)]
    assert all(float(r["fid"]) >= 0 for r in rows)
    assert (out / "sweep.png").stat().st_size > 1000 and (out / "summary.csv").is_file()
    # --compile (compile_for_inference, fp32): the same points up to float reordering
    rc = main(["sweep", "--ckpt", ckpts["sit"], "--samplers", "euler,heun", "--nfe", "2,4", "--num-samples", "20",
               "--batch-size", "20", "--out", str(tmp_path / "swc"), "--compile"])
    assert rc == 0
    rows_c = read_csv(tmp_path / "swc" / "sweep.csv")
    assert [float(r["fid"]) for r in rows_c] == pytest.approx([float(r["fid"]) for r in rows], rel=1e-3)


def _run_dir(tmp_path, ckpt, scales):
    """A training-run layout RUN/checkpoints/step-XXXXXXX/{config.json, ema.safetensors} whose
    checkpoints differ only by a factor on the output layer (so v scales by that factor)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(ckpt)
    meta = json.loads(open(ckpt.replace(".safetensors", ".json")).read())
    run = tmp_path / "run"
    for step, s in scales:
        d = run / "checkpoints" / f"step-{step:07d}"
        d.mkdir(parents=True)
        save_file({k: v * s if k.startswith("final_layer.linear") else v for k, v in sd.items()}, str(d / "ema.safetensors"))
        (d / "config.json").write_text(json.dumps(dict(meta, step=step)))
    return run


def test_pathlength_scales_as_v_squared(ckpts, tmp_path):
    """Common random numbers across checkpoints: halving v exactly quarters C(v)."""
    run = _run_dir(tmp_path, ckpts["sit"], [(100, 1.0), (200, 0.5)])
    out = tmp_path / "pl"
    assert main(["pathlength", "--ckpts", str(run), "--num-points", "64", "--out", str(out)]) == 0
    from sit.evaluate.plots import read_csv

    rows = read_csv(out / "pathlength.csv")
    assert [int(r["step"]) for r in rows] == [100, 200]
    c1, c2 = float(rows[0]["path_length"]), float(rows[1]["path_length"])
    assert c2 == pytest.approx(c1 / 4, rel=1e-5) and float(rows[0]["stderr"]) > 0
    assert (out / "pathlength.png").stat().st_size > 1000


def test_lt_stores_table_used_by_kl_eta_sampling(ckpts, tmp_path):
    run = _run_dir(tmp_path, ckpts["sit"], [(7, 1.0)])
    ck = run / "checkpoints" / "step-0000007"
    out = tmp_path / "lt"
    assert main(["lt", "--ckpt", str(run), "--t-points", "5", "--samples-per-t", "16", "--out", str(out)]) == 0
    from sit.diffusion_coef import LossTable
    from sit.evaluate.plots import read_csv

    table = LossTable.load(ck / "lt_table.json")
    assert table.t == (0.0, 0.25, 0.5, 0.75, 1.0) and table.dim == 64 and table.reduction == "mean"
    rows = read_csv(out / "lt.csv")
    assert [float(r["L_t"]) for r in rows] == pytest.approx(list(table.loss))
    assert float(rows[2]["sigma_t"]) == pytest.approx(0.5) and float(rows[2]["w_KL"]) == pytest.approx(2.0)  # Linear: w_KL = 2t/(1-t)
    assert (out / "lt.png").stat().st_size > 1000
    s = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--method", "euler_maruyama", "--num-steps", "3", "--w", "kl_eta",
                 "--eta", "1", "--num-samples", "2", "--out", str(s), "--no-progress"]) == 0
    m = json.loads((s / "manifest.json").read_text())
    assert m["loss_table_file"].endswith("lt_table.json") and m["loss_table"]["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(m["settings"]["loss_table_sha256"]) == 64


def test_kl_eta_without_table_is_a_clear_error(ckpts, tmp_path, capsys):
    run = _run_dir(tmp_path, ckpts["sit"], [(1, 1.0)])
    rc = main(["sample", "--ckpt", str(run), "--method", "euler_maruyama", "--w", "kl_eta", "--eta", "1",
               "--num-samples", "2", "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 2 and "sit lt" in capsys.readouterr().err


def test_likelihood_smoke(ckpts, tmp_path, capsys):
    out = tmp_path / "bpd.csv"
    assert main(["likelihood", "--ckpt", ckpts["sit"], "--num-samples", "4", "--method", "euler", "--num-steps", "2",
                 "--out", str(out)]) == 0
    assert "+-" in capsys.readouterr().out
    from sit.evaluate.plots import read_csv

    rows = read_csv(out)
    assert len(rows) == 4 and all(np.isfinite(float(r["bpd"])) for r in rows)


def test_last_step_none_reaches_the_sampler(ckpts, tmp_path):
    out = tmp_path / "ls"
    assert main(["sample", "--ckpt", ckpts["sit"], "--method", "euler_maruyama", "--last-step", "none",
                 "--num-steps", "2", "--num-samples", "1", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "manifest.json").read_text())["settings"]["sample"]
    assert cfg["last_step"] is None and cfg["method"] == "euler_maruyama"


@pytest.mark.parametrize("precision", ["bf16", "bf16-weights"])
def test_bf16_sampling_stays_close_to_fp32(ckpts, tmp_path, precision):
    """bf16 autocast and bf16 weights change the samples only by rounding (latents within a few
    percent of their scale; the manifest records the precision)."""
    outs = {}
    for pr in ("fp32", precision):
        out = tmp_path / pr
        assert main(["sample", "--ckpt", ckpts["sit"], "--method", "heun", "--num-steps", "4", "--labels", "1,2",
                     "--num-samples", "4", "--cfg-scale", "2", "--save-latents", "npy", "--precision", pr,
                     "--out", str(out), "--no-progress"]) == 0
        outs[pr] = np.load(next(out.glob("*.npy")))
        assert json.loads((out / "manifest.json").read_text())["settings"]["precision"] == pr
    ref, low = outs["fp32"], outs[precision]
    assert low.dtype == np.float32 and low.shape == ref.shape
    assert np.abs(low - ref).max() < 0.05 * np.abs(ref).max()
    assert not np.array_equal(low, ref)  # it did run in lower precision
