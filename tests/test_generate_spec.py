"""Typed records of `sit sample` (issue 10): GuidanceConfig, SampleSpec identity, presets, and the
CLI building and validating them before anything is loaded."""

import dataclasses
import json

import pytest
import torch

from sit.cli import main
from sit.generate.presets import DEFAULT_SAMPLE, PRESETS
from sit.generate.spec import DiscreteSampleConfig, SampleSpec, parse_channels, parse_interval
from sit.guidance import GuidanceConfig
from sit.guidance.guided import GuidedModel
from sit.io import differing_fields
from sit.samplers import SampleConfig

MISSING = "/nonexistent/ckpt-that-is-never-read.safetensors"


def test_guidance_config_is_frozen_and_validated():
    g = GuidanceConfig(scale=2, channels=3, interval=[0.1, 0.9])
    assert g.scale == 2.0 and isinstance(g.scale, float) and g.interval == (0.1, 0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.scale = 3.0
    for bad, word in ((dict(scale=float("nan")), "GuidanceConfig.scale"), (dict(channels=0), "channels"),
                      (dict(interval=(0.8, 0.2)), "interval"), (dict(scale=True), "GuidanceConfig.scale")):
        with pytest.raises(ValueError, match=word):
            GuidanceConfig(**bad)
    assert not GuidanceConfig().active and GuidanceConfig().wrap(abs, None) is abs


def test_guided_model_takes_a_guidance_config():
    def fn(x, t, y):
        return x * (1.0 + y.view(-1, 1).to(x.dtype)) + t.view(-1, 1)

    x, t, y = torch.randn(3, 4, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64), torch.tensor([0, 1, 2])
    a = GuidedModel(fn, GuidanceConfig(scale=3.0, channels=2), 10)(x, t, y)
    b = GuidedModel(fn, 3.0, 10, channels=2)(x, t, y)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[:, 2:], 3.0 * a[:, 2:])  # channels 2.. kept conditional
    with pytest.raises(ValueError, match="GuidanceConfig"):
        GuidedModel(fn, GuidanceConfig(scale=3.0), 10, channels=2)


def test_spec_identity_hash_and_named_differences():
    a = SampleSpec(checkpoint="c" * 64, sample=SampleConfig(method="euler", num_steps=4), labels=(1, 2))
    b = dataclasses.replace(a, weights="model", sample=dataclasses.replace(a.sample, num_steps=5))
    assert a.sha256() == SampleSpec(**{f.name: getattr(a, f.name) for f in dataclasses.fields(a)}).sha256()
    assert a.sha256() != b.sha256()
    assert differing_fields(a.to_json(), b.to_json()) == ["sample.num_steps", "weights"]
    assert json.loads(json.dumps(a.to_json())) == a.to_json() and a.to_json()["labels"] == [1, 2]
    with pytest.raises(ValueError, match="weights"):
        SampleSpec(weights="emma")
    with pytest.raises(TypeError, match="SampleConfig"):
        SampleSpec(sample={"method": "heun"})
    with pytest.raises(ValueError, match="ddim only"):
        DiscreteSampleConfig(method="ddpm", eta=0.5)


def test_presets_are_typed_records():
    for name, p in PRESETS.items():
        assert isinstance(p.sample, (SampleConfig, DiscreteSampleConfig)) and isinstance(p.guidance, GuidanceConfig), name
        assert p.about
    assert PRESETS["sit-xl2-sde"].sample.last_step_size == 0.04 and PRESETS["sit-xl2-ode"].guidance.channels == 3


def test_flag_parsers():
    assert parse_channels("all") is None and parse_channels("3") == 3
    assert parse_interval("0.1,0.9") == (0.1, 0.9) and parse_interval(None) is None
    with pytest.raises(ValueError, match="GuidanceConfig.interval must be"):
        parse_interval("0.9")


@pytest.mark.parametrize("argv, msg", [
    (["--w", "zzz", "--method", "euler_maruyama"], "--w: unknown diffusion coefficient w 'zzz'"),
    (["--cfg-interval", "0.5,0.2"], "--cfg-interval"),
    (["--cfg-interval", "a,b"], "--cfg-interval"),
    (["--cfg-channels", "x"], "--cfg-channels"),
    (["--num-steps", "0"], "--num-steps must be >= 1"),
    (["--method", "bogus"], "unknown sampler 'bogus'"),
    (["--grid", "nope"], "--grid: unknown time grid"),
    (["--last-step", "foo", "--method", "euler_maruyama"], "--last-step"),
    (["--method", "ddim", "--eta", "0.5"], "--ddim-eta"),
    (["--method", "heun", "--ddim-eta", "0.5"], "--ddim-eta applies to --method ddim only"),
    (["--method", "ddpm", "--w", "sigma"], "--w does not apply to --method ddpm"),
    (["--labels", "cat"], "--labels"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--cfg-scale", "inf"], "--cfg-scale"),
])
def test_flag_errors_come_before_any_checkpoint_read(tmp_path, capsys, argv, msg):
    """The checkpoint does not exist: the error must still be the flag's, not the checkpoint's."""
    rc = main(["sample", "--ckpt", MISSING, "--out", str(tmp_path / "x"), "--no-progress", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert msg in err and "no checkpoint" not in err
    assert not (tmp_path / "x").exists()


def test_good_flags_reach_the_checkpoint(tmp_path, capsys):
    assert main(["sample", "--ckpt", MISSING, "--method", "ddim", "--ddim-eta", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_help_shows_the_records_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("num_steps", "last_step_size", "w_scale", "atol", "rtol", "grid", "w"):
        flag = "--" + name.replace("_", "-")
        assert flag in text and f"(default {getattr(DEFAULT_SAMPLE, name)})" in text, name
    assert f"(default {DiscreteSampleConfig.eta})" in text and f"default {GuidanceConfig.scale})" in text
    assert "--num-heads" in text and "--kind" in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from sit.config import ModelConfig
    from sit.models.checkpoint import save_model
    from sit.models.sit import SiT

    torch.manual_seed(0)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    d = tmp_path_factory.mktemp("ck")
    meta = {"path": "ddpm", "prediction": "noise", "time_input": "discrete"}
    return {"sit": str(save_model(SiT(cfg), d / "sit", {})), "dit": str(save_model(SiT(cfg), d / "dit", meta))}


def test_ddim_eta_reaches_the_spec_and_changes_samples(tiny, tmp_path):
    outs = []
    for eta in ("0", "1"):
        out = tmp_path / f"e{eta}"
        assert main(["sample", "--ckpt", tiny["dit"], "--method", "ddim", "--ddim-eta", eta, "--num-steps", "3",
                     "--num-samples", "2", "--save-latents", "npy", "--out", str(out), "--no-progress"]) == 0
        m = json.loads((out / "manifest.json").read_text())
        assert m["settings"]["sample"] == {"kind": "discrete", "method": "ddim", "num_steps": 3, "eta": float(eta)}
        import numpy as np

        outs.append(np.load(out / "latents.npy"))
    assert not (outs[0] == outs[1]).all()


def test_model_override_flags_are_passed_to_the_loader(tiny, tmp_path, capsys):
    base = ["sample", "--ckpt", tiny["sit"], "--method", "euler", "--num-steps", "1", "--num-samples", "1", "--no-progress"]
    assert main([*base, "--num-heads", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--num-heads", "3", "--out", str(tmp_path / "b")]) == 2
    assert "num_heads=2, not 3" in capsys.readouterr().err


def _doc_commands(path):
    import re
    import shlex

    text = re.sub(r"\\\n\s*", " ", open(path).read())
    cmds = []
    for line in text.splitlines():
        line = line.strip().strip("`")
        line = re.sub(r"^torchrun .*?-m sit\.cli ", "sit ", line)
        for m in re.finditer(r"(?:^|`)(sit [a-z_]+ [^`]*)", line):
            argv = shlex.split(m.group(1), comments=True)
            if "--ckpt" in argv or "--ckpts" in argv:  # whole commands, not fragments such as `sit sample --w kl_eta`
                cmds.append(argv[1:])
    return cmds


def test_every_command_in_docs_sampling_parses():
    """Every `sit ...` command written in docs/sampling.md is accepted by the parser as written."""
    from pathlib import Path

    from sit.cli import build_parser

    cmds = _doc_commands(Path(__file__).resolve().parents[1] / "docs" / "sampling.md")
    assert len(cmds) >= 8 and any(c[0] == "sample" for c in cmds)
    parser = build_parser()
    for argv in cmds:
        args = parser.parse_args(argv)
        if argv[0] == "sample":
            from sit.commands.sample import build_spec, check_args

            check_args(args)
            build_spec(args)  # the records build too
