"""Guidance as one record and one table (`sit.guidance`): the guide rides in `GuidanceConfig` (its
path, then its identity and network once `load_guide` has read it), "a guide needs a scale" is one
rule, and a toy strategy added by one module (here: this file's `wrap`) plus its record and one row
of `STRATEGIES` works through `build_sampler`, and `sit sample` / `sit sweep` with its generated flag."""

import dataclasses
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import sit.models.checkpoint as ckpt_mod
from sit.config import ConfigError, ModelConfig
from sit.generate.spec import SampleSpec
from sit.guidance import (
    NEEDS_NOTHING,
    STRATEGIES,
    GuidanceConfig,
    Guide,
    StrategyRow,
    flag_field,
    guidance_flag_fields,
    guidance_from_flags,
)
from sit.guidance.guided import GuidedModel
from sit.models.sit import SiT
from sit.network_sampler import ModelInfo, build_sampler, prediction_fn
from sit.samplers import SampleConfig

META = {"path": "linear", "prediction": "velocity", "time_input": "continuous"}


def _tiny(d, name, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                      num_classes=10, class_dropout_prob=0.1)
    net = SiT(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return str(ckpt_mod.save_model(net, d / name, META))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("strategies"), "model")


# ---- the toy strategy: its record and its module's wrap (guide away from another class, not the null one)

@dataclasses.dataclass(frozen=True)
class OtherLabel:
    """Guide away from class ``label``'s prediction instead of the null label's."""

    label: int = flag_field(0, "guide away from this class instead of the null label", flag="--guide-label",
                            metavar="K", parse=int)


def wrap(model_fn, guidance, *, null_class=None, guide_fn=None):
    return GuidedModel(model_fn, guidance, guidance.guide.label)  # one batched call, `label` for the null rows


@pytest.fixture
def toy_row(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "other_label", StrategyRow(OtherLabel, wrap, NEEDS_NOTHING, "a test's toy"))


# ---- one record, one rule, one loader

def test_the_guide_rides_in_the_record_and_is_stored_as_its_identity(ckpt):
    from sit import checkpoints
    from sit.generate.glue import latent_sampler, load_guide

    net, meta = checkpoints.load(ckpt)
    cfg = GuidanceConfig(scale=2.0)
    assert load_guide(cfg, meta) is cfg  # CFG loads nothing
    unloaded = GuidanceConfig(scale=2.0, guide=Guide(ckpt))
    with pytest.raises(ValueError, match="not loaded"):
        SampleSpec(guidance=unloaded).to_json()  # no identity is ever stored for an unread guide
    with pytest.raises(ValueError, match="not loaded"):
        build_sampler(net, meta, SampleConfig(method="euler", num_steps=2), unloaded)
    loaded = load_guide(unloaded, meta)
    assert loaded.guide.identity == checkpoints.identity(checkpoints.resolve(ckpt)) and loaded.guide.loaded
    assert loaded.guide.path == ckpt and loaded.guide.meta.path == "linear"
    # the stored form is the one it always was: the guide's identity in place of the record
    assert SampleSpec(guidance=loaded).to_json()["guidance"] == {"scale": 2.0, "channels": None, "interval": None,
                                                                  "guide": loaded.guide.identity}
    x0, y = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2])
    sampler, desc = latent_sampler(net, meta, SampleConfig(method="euler", num_steps=2), loaded)
    x, info = sampler(x0, y)
    plain, _ = latent_sampler(net, meta, SampleConfig(method="euler", num_steps=2))
    torch.testing.assert_close(x, plain(x0, y)[0], rtol=1e-5, atol=1e-5)  # the model as its own guide: unguided
    assert info["guide_nfe"] == 2 and desc["guide"]["identity"] == loaded.guide.identity


def test_the_seam_takes_the_record_alone():
    from sit.generate.glue import build_latent_sampler, latent_sampler

    for fn in (build_sampler, latent_sampler, build_latent_sampler):
        names = set(inspect.signature(fn).parameters)
        assert not names & {"guide_net", "guide_meta", "guide_identity", "cfg_scale"}, fn.__name__


def test_a_guide_without_a_scale_is_one_rule():
    for make in (lambda: GuidanceConfig(guide=Guide("g")),
                 lambda: guidance_from_flags(GuidanceConfig(), {"guide_ckpt": "g", "cfg_scale": 1.0})):
        with pytest.raises(ConfigError) as e:
            make()
        assert (e.value.record, e.value.field) == ("GuidanceConfig", "guide") and "other than 1" in str(e.value)
    assert guidance_from_flags(GuidanceConfig(), {"guide_ckpt": "g", "cfg_scale": 2.0}).guide == Guide("g")
    assert guidance_from_flags(GuidanceConfig(scale=1.5), {"guide_ckpt": ""}).guide is None  # "" = not given
    with pytest.raises(ValueError, match="record of a guidance strategy"):
        GuidanceConfig(scale=2.0, guide="abc")  # the old placeholder string is no guide


def test_the_rules_that_need_the_model_are_one_method():
    """`check_model`: what `sit sample` checks before sampling and the seam checks again."""
    for g, kw, field in [(GuidanceConfig(scale=2.0, interval=(0.1, 0.9)), dict(discrete=True), "interval"),
                         (GuidanceConfig(scale=2.0, channels=5), dict(discrete=False, in_channels=4), "channels"),
                         (GuidanceConfig(scale=2.0), dict(discrete=False, has_classes=False), "scale")]:
        with pytest.raises(ConfigError) as e:
            g.check_model(**kw)
        assert e.value.field == field
    GuidanceConfig(scale=2.0, guide=Guide("g")).check_model(discrete=False, has_classes=False)  # autoguidance: no null label
    GuidanceConfig(scale=2.0, channels=4, interval=(0.1, 0.9)).check_model(discrete=False, in_channels=4)


def test_the_record_is_torch_free_and_carries_its_flags():
    code = "import sys, sit.guidance; assert not [m for m in sys.modules if m.startswith('torch')], 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    flags = {f.metadata["flag"]: (rec.__name__, f.name) for rec, f in guidance_flag_fields()}
    assert flags == {"--cfg-scale": ("GuidanceConfig", "scale"), "--cfg-channels": ("GuidanceConfig", "channels"),
                     "--cfg-interval": ("GuidanceConfig", "interval"), "--guide-ckpt": ("Guide", "path")}
    g = guidance_from_flags(GuidanceConfig(), {"cfg_scale": 2.0, "cfg_channels": "3", "cfg_interval": "0.1,0.9"})
    assert g == GuidanceConfig(scale=2.0, channels=3, interval=(0.1, 0.9))


# ---- a toy strategy by one module + its record + one row

def test_a_toy_strategy_by_one_row_runs_through_build_sampler(ckpt, toy_row):
    from sit import checkpoints

    net, meta = checkpoints.load(ckpt)
    info = ModelInfo.of(meta)
    x0, y = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 2, 3])
    one_step = SampleConfig(method="euler", num_steps=1)
    toy = GuidanceConfig(scale=3.0, guide=OtherLabel(7))
    assert toy.strategy == "other_label"
    x, out = build_sampler(net, info, one_step, toy)(x0, y)
    f = prediction_fn(net, info)
    t = torch.ones(3)
    v = 3.0 * f(x0, t, y) - 2.0 * f(x0, t, torch.full_like(y, 7))  # the guided velocity at t = 1
    torch.testing.assert_close(x, x0 - v, rtol=1e-5, atol=1e-5)  # one Euler step from t = 1 to 0
    assert out["nfe"] == 1 and out["guide_nfe"] == 0  # one batched call
    # guiding away from the null label is classifier-free guidance, exactly
    a, _ = build_sampler(net, info, SampleConfig(method="heun", num_steps=3), GuidanceConfig(scale=3.0, guide=OtherLabel(10)))(x0, y)
    b, _ = build_sampler(net, info, SampleConfig(method="heun", num_steps=3), GuidanceConfig(scale=3.0))(x0, y)
    assert torch.equal(a, b)
    assert SampleSpec(guidance=toy).to_json()["guidance"]["guide"] == {"label": 7}


def test_a_toy_strategy_takes_its_flags_from_its_record(toy_row):
    assert ("OtherLabel", "label") in {(rec.__name__, f.name) for rec, f in guidance_flag_fields()}
    g = guidance_from_flags(GuidanceConfig(), {"cfg_scale": 2.0, "guide_label": "4"})
    assert g.guide == OtherLabel(4) and g.strategy == "other_label"
    with pytest.raises(ValueError, match=r"one strategy: --guide-ckpt \(autoguidance\) and --guide-label \(other_label\)"):
        guidance_from_flags(GuidanceConfig(), {"cfg_scale": 2.0, "guide_label": "4", "guide_ckpt": "g"})
    with pytest.raises(ConfigError, match="other than 1"):
        guidance_from_flags(GuidanceConfig(), {"guide_label": "4"})


def test_a_toy_strategy_runs_through_sit_sample_and_sweep_with_its_generated_flag(ckpt, toy_row, tmp_path, capsys):
    """The toy record's flag (--guide-label, from its field's metadata) in `sit sample` and `sit sweep`;
    guiding away from the null label (10) gives the CFG samples exactly."""
    from sit.cli import main
    from sit.evaluate.plots import read_csv

    assert "--guide-label K" in _help("sample", capsys) and "--guide-label K" in _help("sweep", capsys)
    common = ["--ckpt", ckpt, "--num-samples", "4", "--batch-size", "4", "--labels", "1,2,3,4", "--method", "heun",
              "--num-steps", "3", "--cfg-scale", "3", "--save-latents", "npy", "--no-progress"]
    assert main(["sample", *common, "--guide-label", "10", "--out", str(tmp_path / "toy")]) == 0
    assert main(["sample", *common, "--out", str(tmp_path / "cfg")]) == 0
    toy, cfg = (np.load(tmp_path / d / "latents.npy") for d in ("toy", "cfg"))
    np.testing.assert_array_equal(toy, cfg)
    settings = json.loads((tmp_path / "toy" / "manifest.json").read_text())["settings"]
    assert settings["guidance"]["guide"] == {"label": 10}
    assert "guide" not in json.loads((tmp_path / "cfg" / "manifest.json").read_text())["settings"]["guidance"]
    sweep = ["sweep", "--ckpt", ckpt, "--samplers", "euler", "--nfe", "2", "--num-samples", "8", "--batch-size", "8",
             "--cfg-scale", "3", "--no-progress"]
    assert main([*sweep, "--guide-label", "10", "--out", str(tmp_path / "sw_toy")]) == 0
    assert main([*sweep, "--out", str(tmp_path / "sw_cfg")]) == 0
    assert read_csv(tmp_path / "sw_toy" / "sweep.csv")[0]["fid"] == read_csv(tmp_path / "sw_cfg" / "sweep.csv")[0]["fid"]
    capsys.readouterr()
    assert main(["sample", *common, "--guide-label", "3", "--guide-ckpt", ckpt, "--out", str(tmp_path / "two")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sit sample: error: guidance takes one strategy: --guide-ckpt (autoguidance) and --guide-label "
                   "(other_label) were both given"]


def _help(command, capsys) -> str:
    from sit.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def test_sweep_loads_the_guide_through_the_record(ckpt, tmp_path):
    """`sit sweep --guide-ckpt`: the same loader and record as `sit sample` (the model as its own guide
    gives the unguided points, at twice the NFE)."""
    from sit.cli import main
    from sit.evaluate.plots import read_csv

    common = ["sweep", "--ckpt", ckpt, "--samplers", "euler", "--nfe", "2", "--num-samples", "8", "--batch-size", "8",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--cfg-scale", "3", "--guide-ckpt", ckpt, "--out", str(tmp_path / "auto")]) == 0
    plain, auto = (read_csv(tmp_path / d / "sweep.csv")[0] for d in ("plain", "auto"))
    assert int(plain["nfe"]) == 2 and int(auto["nfe"]) == 4
    assert float(auto["fid"]) == pytest.approx(float(plain["fid"]), rel=1e-4)
