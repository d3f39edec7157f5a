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


@pytest.mark.parametrize("entry,said", [
    ({"step": 100, "sigma_rel": 0.05, "file": "step-0000100-sigma-0.0500.safetensors"}, "has no 'sha256'"),
    ({"step": "100", "sigma_rel": 0.05, "file": "f", "sha256": "0" * 64}, "a bad 'step'"),
    ("step-100", "entry 0 is not an object"),
])
def test_a_post_hoc_ema_index_entry_without_its_fields_is_one_line(tmp_path, entry, said):
    from sit.train.phema import reconstruct

    (tmp_path / "phema").mkdir()
    (tmp_path / "phema" / "index.json").write_text(__import__("json").dumps([entry]))
    with pytest.raises(ValueError, match=said) as e:
        reconstruct(tmp_path, 0.05)
    assert "\n" not in str(e.value) and "index.json" in str(e.value)


def test_a_reference_cache_entry_of_the_wrong_width_is_rebuilt(tmp_path):
    """An entry whose arrays verify (key, rows, sha256) but whose features have another width than the
    scorer's (a stale or foreign entry) is rebuilt with a message, not handed to the Fréchet distance."""
    import numpy as np

    from sit.evaluate.refstats import _digest_all
    from sit.evaluate.scorer import reference_features
    from sit.evaluate.scorers.pixel import PixelScorer
    from sit.io import save_npz_atomic

    imgs = np.random.default_rng(1).integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    lines = []
    good = reference_features(PixelScorer(), "toy", imgs, cache_dir=tmp_path, log=lines.append)
    (entry,) = tmp_path.glob("pixel-toy-*.npz")
    with np.load(entry) as z:
        key = str(z["key"])
    narrow = {"pixels": good["pixels"][:, :5].copy()}
    save_npz_atomic(entry, key=np.array(key), digest=np.array(_digest_all(narrow)), names=np.array(["pixels"]),
                    f_pixels=narrow["pixels"])
    again = reference_features(PixelScorer(), "toy", imgs, cache_dir=tmp_path, log=lines.append)
    assert again["pixels"].shape == (40, 64) and np.array_equal(again["pixels"], good["pixels"])
    assert any("is corrupt (shapes {'pixels': (40, 5)}" in ln and ln.endswith("recomputing") for ln in lines), lines


@pytest.mark.parametrize("argv,said", [
    (["sample", "--ckpt", "CK", "--method", "dpmpp2m", "--out", "OUT"], "unknown sampler 'dpmpp2m' (did you mean 'dpmpp_2m'?)"),
    (["sweep", "--ckpt", "CK", "--samplers", "heun,dpmpp2m", "--out", "OUT"], "'dpmpp2m' (did you mean 'dpmpp_2m'?)"),
    (["sample", "--ckpt", "CK", "--grid", "logsnrr", "--out", "OUT"], "'logsnrr' (did you mean 'logsnr'?)"),
    (["train", "--path", "vpp", "--out", "OUT"], "invalid choice: 'vpp' (did you mean 'vp'?)"),
])
def test_a_mistyped_value_gets_a_did_you_mean(ckpts, tmp_path, capsys, argv, said):
    subs = {"CK": ckpts["pixel"], "OUT": str(tmp_path / "out")}
    try:
        rc = main([subs.get(a, a) for a in argv])
    except SystemExit as e:   # argparse's own errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_record_field_in_a_plain_message_is_written_as_the_flag():
    from sit.commands._errors import cli_message, with_suggestion

    opts = {"train": {"--repa-encoder", "--out"}, "sample": {"--out"}}
    e = ValueError("TrainConfig.repa_encoder: no DINOv2 folder at 'digit-cnn'; or name an embedded encoder ['digits-cnn']")
    assert cli_message(e, "train", opts) == ("--repa-encoder: no DINOv2 folder at 'digit-cnn' (did you mean "
                                             "'digits-cnn'?); or name an embedded encoder ['digits-cnn']")
    # a field the command has no flag for keeps its record name
    assert cli_message(ValueError("TrainConfig.depth of the saved run is 0"), "sample", opts).startswith("TrainConfig.depth")
    assert with_suggestion("unknown grid 'zzz'; expected one of ['uniform', 'edm']") == \
        "unknown grid 'zzz'; expected one of ['uniform', 'edm']"


@pytest.mark.parametrize("command,extra,said", [
    ("sample", ["--grid", "shifted", "--shift", "1e30", "--num-steps", "4"],
     "--grid 'shifted' with --num-steps 4 and --shift 1e+30 from t = 1 to 0 repeats a time"),
    ("sample", ["--grid", "edm", "--rho", "1000", "--num-steps", "50"], "use fewer --num-steps or a milder --rho"),
    ("sweep", ["--samplers", "euler,heun:grid=shifted:shift=1e30", "--nfe", "8"],
     "--samplers 'heun:grid=shifted:shift=1e30' at 4 steps: grid 'shifted' with num_steps 4 and shift 1e+30"),
])
def test_a_degenerate_grid_names_its_flags_before_any_sample(ckpts, tmp_path, capsys, command, extra, said):
    out = tmp_path / "out"
    assert main([command, "--ckpt", ckpts["pixel"], *extra, "--num-samples", "4", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not (out / "manifest.json").exists() and not (out / "sweep.csv").exists()


@pytest.mark.parametrize("command", ["sample", "sweep", "train", "study", "extract"])
@pytest.mark.parametrize("where", ["loop", "loop/sub", "dangling"])
def test_an_output_behind_a_symlink_loop_or_to_nowhere_is_one_line(ckpts, tmp_path, capsys, command, where):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    out = str(tmp_path / where)
    argv = {"sample": ["sample", "--ckpt", ckpts["pixel"], "--num-samples", "2"],
            "sweep": ["sweep", "--ckpt", ckpts["pixel"], "--samplers", "euler", "--nfe", "2", "--num-samples", "4"],
            "train": ["train", "--steps", "1"], "study": ["study", "--list"],
            "extract": ["extract", "--data", str(tmp_path), "--vae", str(tmp_path / "no-vae")]}[command]
    assert main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    said = "is a symbolic link to" if where == "dangling" else "cannot be reached: a symbolic link on the way points back"
    assert err == [err[0]] and err[0].startswith(f"sit {command}: error: --out {out!r} ") and said in err[0], err
    assert "Errno" not in err[0]


def test_time_range_errors_name_both_flags_or_options(ckpts, tmp_path, capsys):
    assert main(["sample", "--ckpt", ckpts["pixel"], "--t-start", "0.5", "--t-end", "0.5", "--num-samples", "2",
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == "sit sample: error: --t-start must be > --t-end (got 0.5, 0.5)"
    assert main(["sweep", "--ckpt", ckpts["pixel"], "--samplers", "euler:t_start=0.5:t_end=0.6", "--nfe", "2",
                 "--num-samples", "4", "--out", str(tmp_path / "w"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == ("sit sweep: error: --samplers 'euler:t_start=0.5:t_end=0.6' at 2 steps: "
                                               "t_start must be > t_end (got 0.5, 0.6)")
