"""Every rule about a sampler is read from its row of `sit.samplers.SAMPLERS`: the preview sampler
of `sit train` accepts every continuous row (names and kinds torch-free in `sit.sampler_kinds`),
NFE counts come from the row (no per-name cases), and an ODE row and an SDE row added at run time
work in `sit sample`, a training preview and `sit sweep`, SDE options included."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sit.cli import main
from sit.config import ConfigError, TrainConfig
from sit.paths import GVP, Linear
from sit.samplers import SAMPLERS, SampleConfig, SamplerRow, sample, sample_euler_maruyama, steps_for_nfe
from sit.samplers._common import NFECounter, check_grid, run_steps, t_vec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELD_KINDS = ("ode", "sde", "multistep")  # the rows that sample a velocity field v(x, t)


def test_the_preview_sampler_is_checked_without_torch_and_the_names_are_the_tables():
    code = ("import sys, json; import sit.sampler_kinds as k; from sit.config import TrainConfig; "
            "TrainConfig(sample_method='dpmpp_2m'); TrainConfig(sample_method='rk4'); t = 'torch' in sys.modules; "
            "static = dict(k.KINDS); import sit.samplers as s; "
            "print(json.dumps([t, static, {n: r.kind for n, r in s.SAMPLERS.items()}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    torch_loaded, static, table = json.loads(r.stdout)
    assert not torch_loaded
    assert static and all(table.get(n) == k for n, k in static.items())  # every name listed is a row of that kind


def test_every_continuous_row_is_a_preview_sampler_and_discrete_rows_are_refused():
    for name, row in SAMPLERS.items():
        if row.kind == "discrete":
            with pytest.raises(ConfigError, match="sample_method 'dd.*discrete-time"):
                TrainConfig(sample_method=name)
        elif row.kind == "average":  # an average-velocity row previews MeanFlow runs only
            assert TrainConfig(objective="meanflow", sample_method=name).sample_method == name
        else:
            assert TrainConfig(sample_method=name).sample_method == name
    with pytest.raises(ConfigError, match="'leapfrog' is not a row of the sampler table"):
        TrainConfig(sample_method="leapfrog")


def _toy_midpoint(field, x, grid, cfg, path, ctx):
    """Explicit midpoint on eq. (2), written against the row interface only."""
    def step(i, t, tn, x):
        h = tn - t
        v = field(x, t_vec(t, x)).to(x.dtype)
        return x + h * field(x + 0.5 * h * v, t_vec(t + 0.5 * h, x)).to(x.dtype), v

    return run_steps(check_grid(grid), x, step, progress=ctx.progress, desc="toy", callback=ctx.callback,
                     return_trajectory=ctx.return_trajectory)


CALLS: list = []


def _toy_em(field, x, grid, cfg, path, ctx):
    """Euler-Maruyama through the row interface: the SDE options arrive as the row's w_t, grid and noise."""
    CALLS.append((cfg.method, ctx.w.name, len(grid) - 1, cfg.last_step))
    return sample_euler_maruyama(field, x, grid, path=path, w=ctx.w, last_step=cfg.last_step, noise_fn=ctx.noise_fn,
                                 **ctx.common)


def _three_stage(field, x, grid, cfg, path, ctx):
    """3 evaluations per step, 2 in the last one when it ends at t = 0 (a row's own NFE rule)."""
    g = check_grid(grid)
    for i in range(len(g) - 1):
        t, tn = float(g[i]), float(g[i + 1])
        stages = 2 if (i == len(g) - 2 and tn == 0.0) else 3
        x = x + (tn - t) * sum(field(x, t_vec(t, x)) for _ in range(stages)) / stages
    return x


def test_the_nfe_rule_is_the_rows(monkeypatch):
    monkeypatch.setitem(SAMPLERS, "toy3", SamplerRow(_three_stage, 3, "ode", "a test's 3-stage method",
                                                     saves_last=lambda cfg, ends_at_0: ends_at_0))
    path = Linear()
    for n in (1, 2, 5):
        cfg = SampleConfig(method="toy3", num_steps=n)
        counter = NFECounter(lambda x, t: -x)
        sample(counter, torch.zeros(2, 3), cfg, path)
        assert cfg.expected_nfe(path) == counter.nfe == 3 * n - 1
    assert SampleConfig(method="toy3", num_steps=2, t_end=0.1).expected_nfe(path) == 6
    assert steps_for_nfe("toy3", 8, last_step=None) == 2 and steps_for_nfe("toy3", 9) == 3


@pytest.mark.parametrize("method", [m for m, r in SAMPLERS.items() if r.kind in FIELD_KINDS and r.nfe_per_step])
def test_every_fixed_step_row_spends_the_nfe_it_announces(method):
    path = GVP()
    for n in (1, 4):
        cfg = SampleConfig(method=method, num_steps=n)
        counter = NFECounter(lambda x, t: -0.5 * x)
        sample(counter, torch.ones(2, 3, dtype=torch.float64), cfg, path, generator=torch.Generator().manual_seed(0))
        assert cfg.expected_nfe(path) == counter.nfe, (method, n)
        assert steps_for_nfe(method, counter.nfe, last_step=cfg.last_step) == n


@pytest.fixture
def toy_rows(monkeypatch):
    monkeypatch.setitem(SAMPLERS, "toy_ode", SamplerRow(_toy_midpoint, 2, "ode", "a test's midpoint"))
    monkeypatch.setitem(SAMPLERS, "toy_sde", SamplerRow(_toy_em, 1, "sde", "a test's Euler-Maruyama"))
    CALLS.clear()
    yield
    CALLS.clear()


def _tiny_ckpt(d):
    import sit.models.checkpoint as ckpt_mod
    from sit.config import ModelConfig
    from sit.models.sit import SiT

    torch.manual_seed(0)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return str(ckpt_mod.save_model(net, d / "model", {"path": "linear", "prediction": "velocity",
                                                      "time_input": "continuous"}))


def _sample(ckpt, out, *extra):
    assert main(["sample", "--ckpt", ckpt, "--num-samples", "3", "--batch-size", "3", "--labels", "1,2,3",
                 "--save-latents", "npy", "--out", str(out), "--no-progress", "--threads", "1", *extra]) == 0
    return np.load(os.path.join(out, "latents.npy")), json.loads((out / "manifest.json").read_text())


def test_toy_ode_and_sde_rows_work_in_sample_sweep_and_training_previews(toy_rows, tmp_path):
    assert SampleConfig(method="toy_sde", w="sin2").is_sde and not SampleConfig(method="toy_ode").is_sde
    ckpt = _tiny_ckpt(tmp_path)
    # sit sample: the SDE row gets w_t, the last-step grid and the per-sample noise of euler_maruyama
    toy, m = _sample(ckpt, tmp_path / "toy_sde", "--method", "toy_sde", "--num-steps", "4")
    ref, _ = _sample(ckpt, tmp_path / "em", "--method", "euler_maruyama", "--num-steps", "4")
    np.testing.assert_array_equal(toy, ref)
    assert m["nfe_per_sample"] == [4] and CALLS[-1] == ("toy_sde", "sigma", 4, "mean")
    toy, m = _sample(ckpt, tmp_path / "toy_ode", "--method", "toy_ode", "--num-steps", "3")
    ref, _ = _sample(ckpt, tmp_path / "mid", "--method", "midpoint", "--num-steps", "3")
    np.testing.assert_allclose(toy, ref, rtol=1e-5, atol=1e-5)
    assert m["nfe_per_sample"] == [6]
    # sit sweep: an SDE option of the toy row reaches it, and its points equal euler_maruyama's
    out = tmp_path / "sw"
    assert main(["sweep", "--ckpt", ckpt, "--samplers", "toy_sde:w=sin2,euler_maruyama:w=sin2,toy_ode",
                 "--nfe", "2,4", "--num-samples", "8", "--batch-size", "8", "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    from sit.evaluate.plots import read_csv

    rows = read_csv(out / "sweep.csv")
    got = {(r["sampler"], int(r["nfe"])): r for r in rows}
    assert set(got) == {(s, n) for s in ("toy_sde:w=sin2", "euler_maruyama:w=sin2", "toy_ode") for n in (2, 4)}
    for n in (2, 4):
        assert got[("toy_sde:w=sin2", n)]["fid"] == got[("euler_maruyama:w=sin2", n)]["fid"]
    assert ("toy_sde", "sin2", 4, "mean") in CALLS
    # a training preview with each row (the flag's choices are the table's rows, read when parsed)
    flags = ["--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2", "--batch", "16",
             "--steps", "1", "--no-quality", "--samples-per-class", "1", "--sample-steps", "2", "--no-progress",
             "--threads", "1", "--num-workers", "0"]
    for method in ("toy_sde", "toy_ode"):
        run = tmp_path / f"run_{method}"
        CALLS.clear()
        assert main(["train", "--out", str(run), "--sample-method", method, *flags]) == 0
        assert (run / "samples" / "final.png").is_file()
        cfg = json.loads((run / "run_config.json").read_text())
        assert cfg["train"]["sample_method"] == method
        assert CALLS == ([("toy_sde", "sigma", 2, "mean")] if method == "toy_sde" else [])


def test_a_study_spec_names_any_row_of_its_kind(toy_rows):
    from sit.study.eval_sampler import spec_method

    assert spec_method({"kind": "ode", "nfe": 8}) == "heun" and spec_method({"kind": "sde", "nfe": 8}) == "euler_maruyama"
    assert spec_method({"kind": "ode", "nfe": 8, "method": "toy_ode"}) == "toy_ode"
    assert spec_method({"kind": "ode", "nfe": 8, "method": "dpmpp_2m"}) == "dpmpp_2m"
    assert spec_method({"kind": "sde", "nfe": 8, "method": "toy_sde"}) == "toy_sde"
    with pytest.raises(ValueError, match="method 'toy_sde' is not a sampler row of kind ode / multistep"):
        spec_method({"kind": "ode", "nfe": 8, "method": "toy_sde"})
    assert steps_for_nfe("toy_ode", 8) == 4 and steps_for_nfe("heun", 8) == 4 and steps_for_nfe("euler_maruyama", 8) == 8
