"""`sit convert --from repa`: a checkpoint of REPA's SiT (t = 0 data, output eps - x, projector
keys beside the network) becomes a sit checkpoint whose velocity is REPA's, and a REPA file read
as an official one is refused in one line instead of sampling in the wrong convention."""

import argparse
import json

import pytest
import torch

from sit import checkpoints as store
from sit.cli import main
from sit.config import ModelConfig
from sit.models.field import ModelField
from sit.models.repa_format import RepaFormatError, from_repa
from sit.models.sit import SiT

CFG = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=3, num_heads=4, num_classes=10,
           learn_sigma=False, class_dropout_prob=0.1)  # REPA's SiT: no learned sigma, a null row


def _repa_net(seed=0):
    """REPA's network: the official SiT blocks and key names (REPA's models/sit.py), fed t itself."""
    torch.manual_seed(seed)
    net = SiT(ModelConfig(**CFG))
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    return net.eval()


def _projector(z_dims=(16,), proj_dim=24, D=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, z in enumerate(z_dims):
        for j, (o, n) in enumerate([(proj_dim, D), (proj_dim, proj_dim), (z, proj_dim)]):
            out[f"projectors.{i}.{2 * j}.weight"] = torch.randn(o, n, generator=g)
            out[f"projectors.{i}.{2 * j}.bias"] = torch.randn(o, generator=g)
    return out


def _args(**kw):
    d = dict(model="SiT-B/2", path_type="linear", prediction="v", enc_type="dinov2-vit-b", proj_coeff=0.5,
             encoder_depth=2, num_classes=10, cfg_prob=0.1)
    d.update(kw)
    return argparse.Namespace(**d)


def _legacy(sd):
    """REPA's older layout: the blocks after the encoder depth as decoder_blocks.j."""
    return {(k.replace("blocks.2.", "decoder_blocks.0.", 1) if k.startswith("blocks.2.") else k): v for k, v in sd.items()}


def _train_file(path, ema, raw=None, args=None, proj=None, steps=400, legacy=False):
    proj = _projector() if proj is None else proj
    sd = {**ema.state_dict(), **proj}
    rsd = {**(raw or ema).state_dict(), **proj}
    if legacy:
        sd, rsd = _legacy(sd), _legacy(rsd)
    obj = {"model": rsd, "ema": sd, "opt": {}, "steps": steps}
    if args is not False:
        obj["args"] = args or _args()
    torch.save(obj, path)
    return path


def _repa_velocity(net, x, t, y):
    """REPA's velocity: its network at paper time t, output as it is (eps - x on the linear path)."""
    with torch.no_grad():
        return net(x, t, y)


def _sit_velocity(path, x, t, y):
    net, meta = store.load(path)
    assert (meta.prediction, meta.time_input) == ("velocity", "continuous")
    with torch.no_grad():
        return ModelField(net, meta.prediction, meta.time_input)(x, t, y), meta


@pytest.mark.parametrize("legacy", [False, True])
def test_converted_velocity_is_repas(tmp_path, legacy):
    ema, raw = _repa_net(0), _repa_net(5)
    src = _train_file(tmp_path / "0000400.pt", ema, raw, legacy=legacy)
    out = tmp_path / "conv.safetensors"
    assert main(["convert", "--from", "repa", str(src), str(out), "--num-heads", "4"]) == 0
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, 8, 8, generator=g)
    t = torch.tensor([0.0, 0.1, 0.5, 0.93, 1.0])
    y = torch.tensor([0, 3, 9, 10, 2])
    got, meta = _sit_velocity(out, x, t, y)
    want = _repa_velocity(ema, x, t, y)
    assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    assert (got - want).abs().max() < 1e-3 * want.abs().max()
    # read as an official SiT instead (no mapping), the same weights give something else entirely
    naive = -ema(x, 1 - t, y)
    assert (naive - want).abs().max() > 0.1 * want.abs().max()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert meta.path == "linear" and meta.step == 400 and meta.weights == "ema"
    assert rec["repa"]["enc_type"] == "dinov2-vit-b" and rec["repa"]["projectors"] == [0]
    assert rec["repa"]["args"]["proj_coeff"] == 0.5 and not out.with_suffix(".projector.safetensors").exists()


def test_sit_sample_of_the_converted_file_is_repas_euler_sampler(tmp_path):
    ema = _repa_net(2)
    src = _train_file(tmp_path / "r.pt", ema)
    out = tmp_path / "conv.safetensors"
    assert main(["convert", "--from", "repa", str(src), str(out), "--num-heads", "4", "--keep-projector"]) == 0
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([1, 6])
    # REPA's generate.py euler_sampler: t from 1 to 0 in N equal steps, x += (t_next - t) * net(x, t, y)
    x = noise.clone()
    ts = torch.linspace(1, 0, 5, dtype=torch.float64)
    for i in range(4):
        with torch.no_grad():
            x = x + float(ts[i + 1] - ts[i]) * ema(x, torch.full((2,), float(ts[i])), y)
    from sit.network_sampler import build_sampler
    from sit.samplers import SampleConfig

    net, meta = store.load(out)  # the one seam every sit command samples through
    got, _ = build_sampler(net, meta, SampleConfig(method="euler", num_steps=4))(noise.clone(), y, None)
    assert (got - x).abs().max() < 1e-4 and (x - noise).abs().max() > 0.1
    proj = out.with_suffix(".projector.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(proj))) == set(_projector())


def test_cosine_path_becomes_gvp_and_unknown_predictions_are_refused(tmp_path):
    src = _train_file(tmp_path / "c.pt", _repa_net(), args=_args(path_type="cosine"))
    assert main(["convert", "--from", "repa", str(src), str(tmp_path / "c.safetensors"), "--num-heads", "4"]) == 0
    assert store.load(tmp_path / "c.safetensors")[1].path == "gvp"
    with pytest.raises(RepaFormatError, match="prediction 'x'"):
        from_repa(_repa_net().state_dict(), {"prediction": "x"})


@pytest.mark.parametrize("case", ["train-dict", "projector-stripped", "plain-with-projector", "unknown-args"])
def test_a_repa_file_read_as_official_is_refused_in_one_line(tmp_path, capsys, case):
    net = _repa_net()
    f = tmp_path / "repa.pt"
    if case == "train-dict":
        _train_file(f, net)
    elif case == "projector-stripped":  # the projector keys removed, the args kept
        _train_file(f, net, proj={})
    elif case == "plain-with-projector":
        torch.save({**net.state_dict(), **_projector()}, f)
    else:
        _train_file(f, net, proj={}, args=argparse.Namespace(model="SiT-B/2", path_type="edm", prediction="x"))
    for cmd in (["sample", "--ckpt", str(f), "--num-samples", "1", "--out", str(tmp_path / "s"), "--no-progress"],
                ["info", str(f), "--num-heads", "4"], ["convert", str(f), str(tmp_path / "o.safetensors")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "sit convert --from repa" in err[0], err
    assert not (tmp_path / "o.safetensors").exists()
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())  # (sample's lock folder, empty)
