"""`sit likelihood`, `sit pathlength`, `sit sweep` (and `sit lt`'s bar) end to end on a tiny random SiT (8x8x1)."""

import json

import pytest
import torch

from sit.cli import main
from sit.config import ModelConfig
from sit.evaluate.plots import read_csv
from sit.models import checkpoint as ckpt_mod
from sit.models.sit import SiT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    d = tmp_path_factory.mktemp("ckpt")
    return str(ckpt_mod.save_model(net, d / "tiny", {"path": "linear", "prediction": "velocity", "time_input": "continuous"}))


def _run_dir(root, ckpt, steps_scales):
    """RUN/checkpoints/step-N/{config.json, ema.safetensors}; output layer scaled by s (v scales by s)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(ckpt)
    meta = json.loads(open(ckpt.replace(".safetensors", ".json")).read())
    for step, s in steps_scales:
        d = root / "checkpoints" / f"step-{step:07d}"
        d.mkdir(parents=True)
        save_file({k: v * s if k.startswith("final_layer.linear") else v for k, v in sd.items()}, str(d / "ema.safetensors"))
        (d / "config.json").write_text(json.dumps(dict(meta, step=step)))
    return root


def test_likelihood_default_is_hutchinson_with_probe_error_and_says_when_data_runs_out(tiny, tmp_path, capsys):
    out = tmp_path / "h.csv"
    argv = ["likelihood", "--ckpt", tiny, "--method", "euler", "--num-steps", "2", "--num-samples", "500"]
    assert main(argv + ["--probes", "8", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "holds 179 points; using all 179 (--num-samples 500 asked)" in cap.out
    assert "Hutchinson, 8 Rademacher probe(s)" in cap.out and "probe noise alone: +-" in cap.out
    assert "sample" in cap.err  # the tqdm bar (unit "sample") on stderr
    hut = read_csv(out)
    assert len(hut) == 179
    assert main(argv + ["--divergence", "exact", "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "divergence exact" in cap.out and cap.err == ""
    exact = read_csv(tmp_path / "e.csv")
    # the Hutchinson estimate is unbiased: per sample within a few of its probe standard errors
    z = [(float(h["nats"]) - float(e["nats"])) / (float(h["nats_probe_stderr"]) + 1e-9) for h, e in zip(hut, exact)]
    assert sum(abs(v) < 4 for v in z) >= 0.97 * len(z)
    assert all(float(e["nats_probe_stderr"]) == 0.0 for e in exact)


def test_likelihood_bad_probes_is_one_line_error(tiny, capsys):
    assert main(["likelihood", "--ckpt", tiny, "--probes", "0"]) == 2
    assert "--probes must be >= 1 (got 0)" in capsys.readouterr().err


def test_pathlength_draws_one_curve_per_run_against_step(tiny, tmp_path, capsys):
    from sit.commands.pathlength import curves

    a = _run_dir(tmp_path / "runA", tiny, [(100, 1.0), (300, 0.5)])
    b = _run_dir(tmp_path / "runB", tiny, [(100, 2.0), (200, 1.0)])
    out = tmp_path / "pl"
    assert main(["pathlength", "--ckpts", str(a), str(b), "--num-points", "32", "--out", str(out)]) == 0
    assert "path length" in capsys.readouterr().err  # the bar
    rows = read_csv(out / "pathlength.csv")
    assert [r["run"] for r in rows] == [str(a)] * 2 + [str(b)] * 2
    for r in rows:
        for k in ("path_length", "stderr", "step"):
            r[k] = float(r[k])
    series, errors, xlabel = curves(rows)
    assert xlabel == "training step" and list(series) == [str(a), str(b)]
    assert series[str(a)][0] == [100.0, 300.0] and series[str(b)][0] == [100.0, 200.0]
    # common random numbers: v scaled by s scales C(v) by s^2 across runs too
    assert series[str(b)][1][0] == pytest.approx(4 * series[str(a)][1][0], rel=1e-5)
    assert (out / "pathlength.png").stat().st_size > 1000


def test_sweep_points_per_method():
    from sit.commands.sweep import sweep_points

    assert sweep_points("heun", {}, [2, 3, 8], [1e-2]) == [(1, {}), (4, {})]
    assert sweep_points("sde_heun", {}, [3, 7], [1e-2]) == [(2, {}), (4, {})]
    assert sweep_points("sde_heun", {"last_step": None}, [3, 7], [1e-2]) == [(1, {}), (3, {})]
    assert sweep_points("rk4", {}, [2, 8], [1e-2]) == [(2, {})]
    assert sweep_points("dopri5", {}, [2, 8], [1e-2, 1e-3]) == [(1, {"atol": 1e-2, "rtol": 1e-2}),
                                                                (1, {"atol": 1e-3, "rtol": 1e-3})]


def test_sweep_summary_wording():
    from sit.commands.sweep import summarize, summary_line

    rows = [{"sampler": "ref", "nfe": 16, "fid": 20.0}, {"sampler": "a", "nfe": 8, "fid": 30.0},
            {"sampler": "a", "nfe": 16, "fid": 20.5}, {"sampler": "b", "nfe": 8, "fid": 40.0}]
    lines = {r["sampler"]: summary_line(r, 0.05) for r in summarize(rows, "ref", 0.05)}
    assert "reaches FID <= 21 (within 5% of ref's 20 at NFE 16) at NFE 16" in lines["a"]
    assert "never comes within 5% of ref's 20 at NFE 16 at the NFEs tried (best FID 40 at NFE 8)" in lines["b"]
    assert "not reached" not in " ".join(lines.values())


def test_sweep_adaptive_solver_sweeps_tolerances_at_their_real_nfe(tiny, tmp_path, capsys):
    out = tmp_path / "sw"
    rc = main(["sweep", "--ckpt", tiny, "--samplers", "euler,dopri5", "--nfe", "2,4", "--tolerances", "1e-1,1e-7",
               "--num-samples", "8", "--batch-size", "8", "--out", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "sweep" in cap.err and ("at the NFEs tried" in cap.out or "reaches FID" in cap.out)
    rows = read_csv(out / "sweep.csv")
    assert [(r["sampler"], r["tol"]) for r in rows] == [("euler", ""), ("euler", ""), ("dopri5", "0.1"), ("dopri5", "1e-07")]
    nfe_loose, nfe_tight = int(rows[2]["nfe"]), int(rows[3]["nfe"])
    assert nfe_tight > nfe_loose >= 6  # dopri5: 6 evaluations per step at least once; tighter costs more
    with pytest.raises(ValueError, match="--tolerances must hold numbers > 0"):
        from sit.commands.sweep import parse_float_list

        parse_float_list("1e-2,-1", "--tolerances")


def test_lt_progress_bar(tiny, tmp_path, capsys):
    run = _run_dir(tmp_path / "run", tiny, [(7, 1.0)])
    assert main(["lt", "--ckpt", str(run), "--t-points", "3", "--samples-per-t", "8", "--out", str(tmp_path / "lt")]) == 0
    assert "L_t" in capsys.readouterr().err
    assert main(["lt", "--ckpt", str(run), "--t-points", "3", "--samples-per-t", "8", "--out", str(tmp_path / "lt2"),
                 "--no-progress"]) == 0
    assert "L_t:" not in capsys.readouterr().err


def test_likelihood_csv_rows_name_their_samples(tiny, tmp_path):
    """Issue 22: the index column is 0, 1, 2, ... and row i is sample i whatever the batch size."""
    argv = ["likelihood", "--ckpt", tiny, "--method", "euler", "--num-steps", "2", "--num-samples", "7",
            "--divergence", "exact", "--no-progress"]
    assert main(argv + ["--batch-size", "3", "--out", str(tmp_path / "b3.csv")]) == 0
    assert main(argv + ["--batch-size", "7", "--out", str(tmp_path / "b7.csv")]) == 0
    b3, b7 = read_csv(tmp_path / "b3.csv"), read_csv(tmp_path / "b7.csv")
    assert [int(r["index"]) for r in b3] == list(range(7)) == [int(r["index"]) for r in b7]
    for r3, r7 in zip(b3, b7):
        assert float(r3["nats"]) == pytest.approx(float(r7["nats"]), rel=1e-4, abs=1e-4)


def test_likelihood_eta_waits_for_a_real_rate(tiny, capsys):
    """Issue 22: no ETA from the first tiny solver steps (it read "4194:15:25"); it appears once 5% is done."""
    import re

    assert main(["likelihood", "--ckpt", tiny, "--method", "euler", "--num-steps", "40", "--num-samples", "8",
                 "--batch-size", "8", "--probes", "1"]) == 0
    frames = re.split(r"[\r\n]", capsys.readouterr().err)
    bars = [f for f in frames if "likelihood" in f and "/8" in f]
    early = [f for f in bars if re.search(r"\| 0/8", f)]
    assert early and not any("<" in f for f in early)  # under 5% of 8 samples (0.4): no ETA yet
    assert any(re.search(r"<\d", f) for f in bars)
    assert not any(re.search(r"<\d{3,}:", f) for f in bars)


def test_sweep_checks_every_sampler_before_the_first_point(tiny, tmp_path, capsys, monkeypatch):
    """Issue 22: a bad second sampler is an error before anything is loaded or sampled."""
    monkeypatch.setattr("sit.checkpoints.load", lambda *a, **k: pytest.fail("loaded before checking the samplers"))
    assert main(["sweep", "--ckpt", tiny, "--samplers", "euler,heun:grid=wobbly", "--nfe", "2,4", "--num-samples", "4",
                 "--out", str(tmp_path / "sw"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--samplers 'heun:grid=wobbly'" in err and "wobbly" in err
    assert not (tmp_path / "sw").exists()
