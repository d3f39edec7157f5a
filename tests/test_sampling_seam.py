"""The seam `sit.network_sampler.build_sampler` and the sampler table `sit.samplers.SAMPLERS`: a sampler
added by one table row runs through `sit sample` and `sit sweep`; autoguidance (guide = the model
itself is unguided; NFE counts the guide); guidance rules validated once."""

import json
import os

import numpy as np
import pytest
import torch

import sit.models.checkpoint as ckpt_mod
from sit.cli import main
from sit.config import ModelConfig
from sit.guidance import GuidanceConfig, Guide
from sit.guidance.guided import GuidedModel
from sit.models.sit import SiT
from sit.paths import Linear
from sit.samplers import SAMPLERS, SampleConfig, SamplerRow
from sit.samplers._common import check_grid, run_steps, t_vec


def _tiny(d, name, seed=0, num_classes=10, dropout=0.1, meta=None):
    torch.manual_seed(seed)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                      num_classes=num_classes, class_dropout_prob=dropout)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    meta = meta or {"path": "linear", "prediction": "velocity", "time_input": "continuous"}
    return str(ckpt_mod.save_model(net, d / name, meta))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("seam")
    dit = {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}
    return {"model": _tiny(d, "model"), "guide": _tiny(d, "guide", seed=1), "other": _tiny(d, "other", num_classes=7),
            "dit": _tiny(d, "dit", meta=dit)}


def _toy_midpoint(field, x, grid, cfg, path, ctx):
    """Explicit midpoint on eq. (2), written against the row interface only."""
    def step(i, t, tn, x):
        h = tn - t
        v = field(x, t_vec(t, x)).to(x.dtype)
        return x + h * field(x + 0.5 * h * v, t_vec(t + 0.5 * h, x)).to(x.dtype), v

    return run_steps(check_grid(grid), x, step, progress=ctx.progress, desc="toy", callback=ctx.callback,
                     return_trajectory=ctx.return_trajectory)


def _latents(out):
    return np.load(os.path.join(out, "latents.npy"))


def _sample(ckpt, out, *extra):
    args = ["sample", "--ckpt", ckpt, "--num-samples", "4", "--batch-size", "4", "--labels", "1,2,3,4",
            "--save-latents", "npy", "--out", str(out), "--no-progress", *extra]
    assert main(args) == 0
    return _latents(out), json.loads((out / "manifest.json").read_text())


def test_toy_sampler_added_by_one_row_runs_through_sample_and_sweep(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SAMPLERS, "toy_midpoint", SamplerRow(_toy_midpoint, 2, "ode", "a test's midpoint"))
    assert SampleConfig(method="toy_midpoint", num_steps=5).expected_nfe(Linear()) == 10
    toy, m = _sample(ckpts["model"], tmp_path / "toy", "--method", "toy_midpoint", "--num-steps", "3")
    assert "NFE per sample actually spent: 6" in capsys.readouterr().out and m["nfe_per_sample"] == [6]
    ref, _ = _sample(ckpts["model"], tmp_path / "mid", "--method", "midpoint", "--num-steps", "3")  # torchdiffeq's
    np.testing.assert_allclose(toy, ref, rtol=1e-5, atol=1e-5)
    out = tmp_path / "sw"
    assert main(["sweep", "--ckpt", ckpts["model"], "--samplers", "toy_midpoint,euler", "--nfe", "2,4",
                 "--num-samples", "8", "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    from sit.evaluate.plots import read_csv

    rows = read_csv(out / "sweep.csv")
    assert [(r["sampler"], int(r["nfe"])) for r in rows] == [("toy_midpoint", 2), ("toy_midpoint", 4),
                                                             ("euler", 2), ("euler", 4)]
    monkeypatch.delitem(SAMPLERS, "toy_midpoint")
    with pytest.raises(ValueError, match="unknown sampler 'toy_midpoint'"):
        SampleConfig(method="toy_midpoint")


@pytest.mark.parametrize("extra", [
    ["--method", "heun", "--num-steps", "3"],
    ["--method", "dpmpp_2m", "--num-steps", "4", "--grid", "logsnr", "--cfg-interval", "0.2,0.9"],
    ["--method", "euler_maruyama", "--num-steps", "4"],
])
def test_autoguidance_with_the_model_itself_is_unguided(ckpts, tmp_path, extra):
    plain, mp = _sample(ckpts["model"], tmp_path / "plain", *extra)
    auto, ma = _sample(ckpts["model"], tmp_path / "auto", *extra, "--cfg-scale", "3", "--guide-ckpt", ckpts["model"])
    np.testing.assert_allclose(auto, plain, rtol=1e-5, atol=1e-5)
    s = ma["settings"]
    assert s["guidance"]["guide"] == s["checkpoint"] and len(s["checkpoint"]) == 64  # both identities in the spec
    assert "guide" not in mp["settings"]["guidance"]  # CFG / unguided sets keep their former identity
    n = mp["nfe_per_sample"][0]
    if "--cfg-interval" not in extra:
        assert ma["nfe_per_sample"] == [2 * n]  # NFE counts the guide's evaluations
    else:
        assert n < ma["nfe_per_sample"][0] < 2 * n
    assert ma["sampler"]["guide"]["identity"] == s["guidance"]["guide"]


def test_autoguidance_of_a_dit_model_with_itself_is_unguided(ckpts, tmp_path):
    plain, mp = _sample(ckpts["dit"], tmp_path / "p", "--method", "ddpm", "--num-steps", "3")
    auto, ma = _sample(ckpts["dit"], tmp_path / "a", "--method", "ddpm", "--num-steps", "3", "--cfg-scale", "4",
                       "--guide-ckpt", ckpts["dit"])
    np.testing.assert_allclose(auto, plain, rtol=1e-5, atol=1e-5)
    assert ma["nfe_per_sample"] == [2 * mp["nfe_per_sample"][0]] == [6]


def test_autoguidance_differs_from_cfg_and_checks_the_guide(ckpts, tmp_path, capsys):
    cfg, _ = _sample(ckpts["model"], tmp_path / "cfg", "--method", "euler", "--num-steps", "2", "--cfg-scale", "2")
    auto, m = _sample(ckpts["model"], tmp_path / "ag", "--method", "euler", "--num-steps", "2", "--cfg-scale", "2",
                      "--guide-ckpt", ckpts["guide"])
    assert not np.allclose(cfg, auto, atol=1e-4)
    assert m["settings"]["guidance"]["guide"] != m["settings"]["checkpoint"]
    capsys.readouterr()
    assert main(["sample", "--ckpt", ckpts["model"], "--guide-ckpt", ckpts["other"], "--cfg-scale", "2",
                 "--num-samples", "2", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "sit sample: error: the guide network must match the model's num_classes (model 10, guide 7)"


def test_guided_model_with_a_guide_uses_the_same_labels():
    calls = []

    def main_fn(x, t, y):
        calls.append(("main", y.tolist()))
        return x + y[:, None].float()

    def guide_fn(x, t, y):
        calls.append(("guide", y.tolist()))
        return x * 0 + 0.5 * y[:, None].float()

    g = GuidanceConfig(scale=3.0, guide=Guide("guide", "id")).wrap(main_fn, None, guide_fn)
    x, t, y = torch.ones(3, 2), torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1, 2, 3])
    out = g(x, t, y)
    c, u = x + y[:, None].float(), 0.5 * y[:, None].float()
    torch.testing.assert_close(out, 3 * c - 2 * u)
    assert calls == [("main", [1, 2, 3]), ("guide", [1, 2, 3])] and g.nfe == 1 and g.guide_nfe == 1
    calls.clear()
    gi = GuidedModel(main_fn, GuidanceConfig(scale=3.0, interval=(0.3, 1.0)), None, guide_fn=guide_fn)
    out = gi(x, t, y)
    assert calls == [("main", [1, 2, 3]), ("guide", [2, 3])]
    torch.testing.assert_close(out[0], c[0])
    with pytest.raises(ValueError, match="autoguidance needs"):
        GuidanceConfig(scale=2.0, guide=Guide("guide", "id")).wrap(main_fn, 10)
    with pytest.raises(ValueError, match="label dropout"):
        GuidanceConfig(scale=2.0).wrap(main_fn, None)
    # unconditional models (y None) can be autoguided too
    calls.clear()
    ga = GuidedModel(lambda x, t, y: x + 1, 2.0, None, guide_fn=lambda x, t, y: x)
    torch.testing.assert_close(ga(x, t, None), x + 2)


def test_guidance_rules_are_checked_once():
    from sit.generate.spec import parse_interval

    for bad in [(0.5, 0.5), (0.7, 0.2), (-0.1, 0.5)]:
        with pytest.raises(ValueError, match="t_lo < t_hi"):
            GuidanceConfig(scale=2.0, interval=bad)
        with pytest.raises(ValueError, match="GuidanceConfig.interval"):
            parse_interval(f"{bad[0]},{bad[1]}")
    assert parse_interval("0,1") == GuidanceConfig(interval=(0, 1)).interval == (0.0, 1.0)


def test_w_names_are_normalised(ckpts, tmp_path, capsys):
    assert SampleConfig(w="KL_ETA").w == "kl_eta" and SampleConfig(w="W_KL").w == "kl"
    # --w KL_ETA with eta > 0 now looks for the L_t table like --w kl_eta
    assert main(["sample", "--ckpt", ckpts["model"], "--method", "euler_maruyama", "--num-steps", "2", "--w", "KL_ETA",
                 "--eta", "1", "--t-start", "0.999", "--num-samples", "2", "--out", str(tmp_path / "w"),
                 "--no-progress"]) == 2
    assert "--w kl_eta needs the model's L_t table" in capsys.readouterr().err


def test_no_null_label_is_one_rule():
    from sit.network_sampler import null_class, preview_guidance

    with_dropout = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2,
                               num_classes=10, class_dropout_prob=0.1)
    without = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2,
                          num_classes=10, class_dropout_prob=0.0)
    assert null_class(with_dropout) == 10 and null_class(without) is None
    assert null_class(SiT(with_dropout)) == 10
    assert preview_guidance(2.0, with_dropout).scale == 2.0 and not preview_guidance(2.0, without).active


def test_the_seam_sits_below_the_programs():
    import subprocess
    import sys

    code = ("import sys, sit.network_sampler, sit.samplers.multistep; "
            "bad = [m for m in sys.modules if m.startswith(('sit.train', 'sit.generate', 'sit.study', 'sit.commands', "
            "'sit.cli', 'sit.evaluate'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_repeats_average_with_error_bars():
    from sit.commands.sweep import mean_rows

    rows = [{"sampler": "a", "method": "heun", "num_steps": 2, "tol": "", "nfe": 4, "seed": s, "fid": f,
             "accuracy": 1.0, "seconds": 1.0} for s, f in ((0, 1.0), (10, 3.0), (20, 5.0))]
    rows.append({"sampler": "a", "method": "heun", "num_steps": 1, "tol": "", "nfe": 2, "seed": 0, "fid": 9.0,
                 "accuracy": 0.5, "seconds": 1.0})
    out, errors = mean_rows(rows)
    assert out[0]["fid"] == 3.0 and out[0]["fid_std"] == 2.0 and out[0]["repeats"] == 3 and out[0]["nfe"] == 4
    assert out[1]["fid_std"] == 0.0 and errors == {"a": [0.0, 2.0]}  # sorted by NFE for the plot
