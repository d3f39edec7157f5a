"""Every input of the newer commands keeps the promises of the older ones: autoguidance across
latent spaces and without a scale, one rule for sampler-only fields in `sit sample` and
`sit sweep`, and the guide's errors naming the guide's flag."""

import pytest
import torch

import sit.models.checkpoint as ckpt_mod
from sit.cli import main
from sit.config import ModelConfig
from sit.models.sit import SiT
from sit.samplers import SAMPLERS, SamplerRow


def _tiny(d, name, channels=1, data=None, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=channels, hidden_size=32, depth=2, num_heads=2,
                      num_classes=10, class_dropout_prob=0.1)
    meta = {"path": "linear", "prediction": "velocity", "time_input": "continuous"}
    if data is not None:
        meta["data"] = data
    return str(ckpt_mod.save_model(SiT(cfg), d / name, meta))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("guards")
    return {"pixel": _tiny(d, "pixel"),
            "lat": _tiny(d, "lat", 4, {"scale_factor": 0.18215}),
            "lat_same": _tiny(d, "lat_same", 4, {"scale_factor": 0.18215}, seed=1),
            "lat_scale1": _tiny(d, "lat_scale1", 4, {"scale_factor": 1.0}, seed=1),
            "lat_norm": _tiny(d, "lat_norm", 4, {"scale_factor": 0.18215, "latent_norm": {
                "kind": "channel", "mean": [0.0, 0.1, 0.0, 0.0], "std": [1.0, 1.0, 2.0, 1.0]}}, seed=1)}


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("guide,what", [("lat_scale1", "scale 0.18215 vs 1.0"),
                                        ("lat_norm", "normalisation mean None vs (0.0, 0.1, 0.0, 0.0)")])
@pytest.mark.parametrize("command", ["sample", "sweep"])
def test_a_guide_of_another_latent_space_is_refused(ckpts, tmp_path, capsys, guide, what, command):
    out = tmp_path / "out"
    extra = ["--num-samples", "4"] if command == "sample" else ["--nfe", "2", "--num-samples", "4"]
    assert main([command, "--ckpt", ckpts["lat"], "--guide-ckpt", ckpts[guide], "--cfg-scale", "2", *extra,
                 "--out", str(out), "--no-progress"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith(f"sit {command}: error: --guide-ckpt ")
    assert "another latent space" in err[0] and what in err[0]
    assert not (out / "manifest.json").exists() and not (out / "sweep.csv").exists()


def test_a_guide_of_the_same_latent_space_is_accepted():
    from sit.checkpoints import RunMeta
    from sit.generate.glue import check_guide_space

    m = ModelConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2)
    official = RunMeta(model=m)  # an official checkpoint: no data record, 0.18215
    check_guide_space(official, RunMeta(model=m, data={"scale_factor": 0.18215}))
    with pytest.raises(ValueError, match="shift 0.0 vs 0.5"):
        check_guide_space(official, RunMeta(model=m, data={"scale_factor": 0.18215, "shift_factor": 0.5}))


@pytest.mark.parametrize("command", ["sample", "sweep"])
def test_guide_ckpt_without_a_cfg_scale_is_refused_not_ignored(ckpts, tmp_path, capsys, command):
    extra = ["--num-samples", "4"] if command == "sample" else ["--nfe", "2", "--num-samples", "4"]
    out = tmp_path / "out"
    assert main([command, "--ckpt", ckpts["pixel"], "--guide-ckpt", ckpts["pixel"], *extra, "--out", str(out),
                 "--no-progress"]) == 2
    err = _err(capsys)
    assert err == [f"sit {command}: error: --guide-ckpt needs --cfg-scale other than 1 (1 = guidance off: the guide "
                   "would never be called); give --cfg-scale, e.g. 2"]
    assert not out.exists()


def test_the_guides_errors_name_the_guide_flag(ckpts, tmp_path, capsys):
    samples = tmp_path / "s"
    assert main(["sample", "--ckpt", ckpts["pixel"], "--num-samples", "2", "--out", str(samples),
                 "--no-progress"]) == 0
    capsys.readouterr()
    for guide, said in [(samples, "is a sample folder"), (tmp_path / "missing", "no checkpoint at"),
                        (samples / "manifest.json", "unknown checkpoint type")]:
        assert main(["sample", "--ckpt", ckpts["pixel"], "--guide-ckpt", str(guide), "--cfg-scale", "2",
                     "--num-samples", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = _err(capsys)
        assert len(err) == 1 and err[0].startswith("sit sample: error: --guide-ckpt ") and said in err[0], err
        assert "--ckpt" not in err[0].replace("--guide-ckpt", "")


@pytest.mark.parametrize("sampler,said", [
    ("dpmpp_2m:w=sigma", "w applies to SDE methods only (got method dpmpp_2m, a multistep sampler)"),
    ("heun:last_step=tweedie", "last_step applies to SDE methods only"),
    ("euler:atol=0.001", "atol applies to adaptive solvers only"),
    ("heun:num_steps=3", "num_steps is set by --nfe"),
    ("dopri5:rtol=0.01", "set by --tolerances"),
])
def test_sweep_refuses_fields_its_sampler_would_ignore(ckpts, tmp_path, capsys, sampler, said):
    out = tmp_path / "sw"
    assert main(["sweep", "--ckpt", ckpts["pixel"], "--samplers", f"euler,{sampler}", "--nfe", "2",
                 "--num-samples", "4", "--out", str(out), "--no-progress"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and err[0].startswith(f"sit sweep: error: --samplers {sampler!r}: ") and said in err[0], err
    assert not out.exists()


def test_the_sde_rule_reads_the_row_kind(ckpts, tmp_path, capsys, monkeypatch):
    """A row added to the table as "sde" takes w in both commands; one added as "ode" refuses it."""
    row = SAMPLERS["euler_maruyama"]
    monkeypatch.setitem(SAMPLERS, "my_sde", SamplerRow(row.run, 1, "sde", "a test's SDE"))
    monkeypatch.setitem(SAMPLERS, "my_ode", SamplerRow(SAMPLERS["euler"].run, 1, "ode", "a test's ODE"))
    assert main(["sample", "--ckpt", ckpts["pixel"], "--method", "my_sde", "--w", "sigma", "--num-steps", "2",
                 "--num-samples", "2", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", "--ckpt", ckpts["pixel"], "--method", "my_ode", "--w", "sigma", "--num-steps", "2",
                 "--num-samples", "2", "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert _err(capsys)[-1] == "sit sample: error: --w applies to SDE methods only (got --method my_ode, an ode sampler)"
    assert main(["sweep", "--ckpt", ckpts["pixel"], "--samplers", "my_ode:w=sigma", "--nfe", "2",
                 "--num-samples", "4", "--out", str(tmp_path / "sw"), "--no-progress"]) == 2
    assert "w applies to SDE methods only" in _err(capsys)[-1]
