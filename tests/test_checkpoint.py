"""Checkpoints in and out (sit/models/checkpoint.py) and the `sit convert` / `sit info` commands."""

import argparse
import json
import os
import time

import pytest
import torch

from sit.cli import main
from sit.config import MODEL_PRESETS, ModelConfig, to_dict
from sit.models.checkpoint import (
    export_official,
    infer_config,
    load_model,
    read_checkpoint,
    safe_torch_load,
    save_model,
)
from sit.models.sit import SiT

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


def tiny(seed=0) -> SiT:
    torch.manual_seed(seed)
    net = SiT(TINY)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.1)
    return net.eval()


def out(net):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        return net(x, torch.tensor([0.2, 0.9]), torch.tensor([1, 10]))


def test_save_load_identical_outputs(tmp_path):
    net = tiny()
    st = save_model(net, tmp_path / "m", {"step": 1234, "note": "hello", "path": "gvp"})
    assert st.name == "m.safetensors" and (tmp_path / "m.json").is_file()
    net2, meta = load_model(st)
    assert torch.equal(out(net2), out(net))
    assert meta["step"] == 1234 and meta["note"] == "hello" and meta["path"] == "gvp"
    assert meta["prediction"] == "velocity" and meta["time_input"] == "continuous"
    assert meta["model"] == to_dict(TINY)
    # the JSON is also inside the safetensors file
    (tmp_path / "m.json").unlink()
    net3, meta3 = load_model(st)
    assert torch.equal(out(net3), out(net)) and meta3["step"] == 1234


def test_export_official_plain_and_train_format(tmp_path):
    net, ema = tiny(0), tiny(1)
    plain = export_official(net, tmp_path / "plain.pt")
    sd = torch.load(plain, weights_only=True)  # what the official sample.py reads
    assert set(sd) == set(net.state_dict())
    back, meta = load_model(plain, config=TINY)
    assert torch.equal(out(back), out(net))
    assert meta["time_input"] == "continuous" and meta["prediction"] == "velocity" and meta["path"] == "linear"

    args = {"model": "custom", "image_size": 64, "num_classes": 10, "path_type": "GVP", "prediction": "score"}
    full = export_official(net, tmp_path / "0000500.pt", args=args, ema=ema)
    ck = torch.load(full, map_location="cpu", weights_only=True)  # the official find_model on torch >= 2.6
    assert set(ck) == {"model", "ema", "opt", "args"} and ck["args"] == args  # plain data, not a Namespace
    full_ns = export_official(net, tmp_path / "ns.pt", args=argparse.Namespace(**args), ema=ema)
    assert torch.load(full_ns, map_location="cpu", weights_only=True)["args"] == args
    e, meta = load_model(full, config=TINY)  # prefers EMA, as official sample.py does
    assert torch.equal(out(e), out(ema))
    assert meta["path"] == "gvp" and meta["prediction"] == "score" and meta["step"] == 500
    m, _ = load_model(full, config=TINY, prefer="model")
    assert torch.equal(out(m), out(net))


def test_pickled_callable_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    torch.save({"model": tiny().state_dict(), "args": Evil()}, bad)
    with pytest.raises(ValueError, match="refusing to load .*could run code"):
        load_model(bad, config=TINY)
    assert not marker.exists()
    assert main(["info", str(bad)]) == 2
    assert not marker.exists()


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    st = save_model(tiny(), tmp_path / "m")
    other = ModelConfig(**{**TINY.__dict__, "num_classes": 7})
    with pytest.raises(ValueError, match=r"y_embedder\.embedding_table\.weight.*\(11, 64\).*\(8, 64\)"):
        load_model(st, config=other)
    with pytest.raises(ValueError, match="missing keys .*blocks.2"):
        load_model(st, config=ModelConfig(**{**TINY.__dict__, "depth": 3}))


def test_infer_config_from_shapes():
    for name in ("SiT-XL/2", "SiT-S/4", "SiT-B/8"):
        for input_size in (32, 64):
            cfg = ModelConfig(**{**MODEL_PRESETS[name].__dict__, "input_size": input_size})
            with torch.device("meta"):
                sd = SiT(cfg).state_dict()
            assert infer_config(sd) == cfg
    with torch.device("meta"):
        sd = SiT(TINY).state_dict()
    with pytest.raises(ValueError, match="num_heads cannot be inferred.*give it"):
        infer_config(sd)
    assert infer_config(sd, num_heads=4) == TINY
    with pytest.raises(ValueError, match="num_heads must be a positive divisor of the hidden size 64"):
        infer_config(sd, num_heads=3)
    cfg = ModelConfig(**{**MODEL_PRESETS["SiT-S/2"].__dict__, "input_size": 4, "in_channels": 1, "num_classes": 10, "learn_sigma": False})
    with torch.device("meta"):
        sd = SiT(cfg).state_dict()
    assert infer_config(sd, {"model": "SiT-S/2", "num_classes": 10}) == cfg


def test_dit_files_are_discrete_noise_models(tmp_path):
    cfg = ModelConfig(**{**MODEL_PRESETS["SiT-S/8"].__dict__, "input_size": 16, "num_classes": 3})
    net = SiT(cfg)
    p = export_official(net, tmp_path / "DiT-S-8-128x128.pt")
    _, meta = load_model(p)
    assert meta["time_input"] == "discrete" and meta["prediction"] == "noise" and meta["step"] == 0
    _, meta = load_model(p, kind="sit")
    assert meta["time_input"] == "continuous"
    # DiT's own train.py args have no path_type
    p2 = export_official(net, tmp_path / "0001000.pt", args={"model": "DiT-S/8", "image_size": 128, "num_classes": 3})
    _, meta = load_model(p2)
    assert meta["time_input"] == "discrete" and meta["step"] == 1000


def _training_dir(d, net, ema, step):
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(d / "ema.safetensors"))
    cfg = {"model": to_dict(TINY), "path": "linear", "prediction": "velocity", "time_input": "continuous", "step": step}
    (d / "config.json").write_text(json.dumps(cfg))


def test_training_dir_and_run_dir(tmp_path):
    run = tmp_path / "run"
    _training_dir(run / "checkpoints" / "0000100", tiny(0), tiny(1), 100)
    time.sleep(0.01)
    _training_dir(run / "checkpoints" / "0000200", tiny(2), tiny(3), 200)
    net, meta = load_model(run / "checkpoints" / "0000100")
    assert torch.equal(out(net), out(tiny(1))) and meta["step"] == 100 and meta["weights"] == "ema"
    net, meta = load_model(run / "checkpoints" / "0000100", prefer="model")
    assert torch.equal(out(net), out(tiny(0)))
    # a run folder is resolved by the store alone (issue 22): the format reader refuses it, naming the store
    with pytest.raises(FileNotFoundError, match="is a run folder: read it through sit.checkpoints.load"):
        load_model(run)
    from sit import checkpoints

    net, meta = checkpoints.load(run)
    assert torch.equal(out(net), out(tiny(3))) and meta.step == 200
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory"):
        load_model(tmp_path)


def test_unknown_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt")
    f = tmp_path / "x.ckpt.gz"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"unknown checkpoint type '.gz'"):
        read_checkpoint(f)
    with pytest.raises(ValueError, match="unknown prefer 'best'"):
        read_checkpoint(f, prefer="best")


def test_cli_convert_and_info(tmp_path, capsys):
    net = tiny()
    st = save_model(net, tmp_path / "m", {"step": 77})
    pt = tmp_path / "m.pt"
    assert main(["convert", str(st), str(pt), "--train-format"]) == 0
    ck = torch.load(pt, map_location="cpu", weights_only=True)  # what the official find_model reads
    assert ck["args"]["num_classes"] == 10 and ck["args"]["path_type"] == "Linear"
    back = tmp_path / "back.safetensors"
    # custom sizes cannot be inferred from shapes alone: convert via the sit file again
    assert main(["convert", str(st), str(back)]) == 0
    net2, _ = load_model(back)
    assert torch.equal(out(net2), out(net))
    capsys.readouterr()
    assert main(["info", str(st), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == net.num_params() and info["step"] == 77 and info["num_classes"] == 10
    assert main(["info", str(st)]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and f"{net.num_params():,}" in text
    assert main(["convert", str(st), str(tmp_path / "x.npz")]) == 2


def test_cli_info_official_preset(tmp_path, capsys):
    cfg = ModelConfig(**{**MODEL_PRESETS["SiT-S/8"].__dict__, "input_size": 16})
    p = export_official(SiT(cfg), tmp_path / "SiT-S-8.pt")
    assert main(["info", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "SiT-S/8" and info["num_classes"] == 1000 and info["config"]["input_size"] == 16
    assert info["params"] == info["params_expected"]
    back = tmp_path / "s8.safetensors"
    assert main(["convert", str(p), str(back)]) == 0
    assert main(["convert", str(back), str(tmp_path / "again.pt")]) == 0
    a, _ = load_model(p)
    b, _ = load_model(tmp_path / "again.pt")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_non_preset_official_file_needs_num_heads_then_converts(tmp_path, capsys):
    """An official .pt of a size that is no paper preset: sit info / convert ask for --num-heads;
    with it, the converted safetensors carries the config and reproduces the network."""
    from sit.cli import main

    net = SiT(TINY)
    with torch.no_grad():
        for p_ in net.parameters():
            p_.normal_(0, 0.1)
    pt = export_official(net, tmp_path / "custom.pt")
    assert main(["info", str(pt)]) != 0  # a one-line error naming the flag
    assert "--num-heads" in capsys.readouterr().err
    assert main(["info", str(pt), "--num-heads", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["num_heads"] == 4
    out = tmp_path / "custom.safetensors"
    assert main(["convert", str(pt), str(out), "--num-heads", "4"]) == 0
    back, _ = load_model(out)
    assert back.config == TINY
    with pytest.raises(ValueError, match="num_heads=4, not 2"):
        load_model(out, num_heads=2)
    x = torch.randn(2, 4, 8, 8)
    t, y = torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(back(x, t, y), net.eval()(x, t, y))


def test_train_format_export_keeps_step_and_pixel_image_size(tmp_path):
    pix = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    st = save_model(SiT(pix), tmp_path / "p", {"step": 1200})
    pt = tmp_path / "p.pt"
    assert main(["convert", str(st), str(pt), "--train-format"]) == 0
    args = safe_torch_load(pt)["args"]
    assert args["image_size"] == 8 and args["step"] == 1200  # a pixel model: no VAE factor
    _, meta = load_model(pt, num_heads=2)
    assert meta["step"] == 1200
    lat = save_model(tiny(), tmp_path / "l", {"step": 5})
    assert main(["convert", str(lat), str(tmp_path / "l.pt"), "--train-format"]) == 0
    assert safe_torch_load(tmp_path / "l.pt")["args"]["image_size"] == 64  # 8x8 latents of the SD VAE


def test_info_wraps_long_meta_lines_without_cutting_words(tmp_path, capsys):
    words = " ".join(f"word{i}" for i in range(80))
    st = save_model(tiny(), tmp_path / "m", {"note": words})
    assert main(["info", str(st)]) == 0
    text = capsys.readouterr().out
    joined = " ".join(line.strip() for line in text.splitlines() if "meta.note" in line or line.startswith(" " * 13))
    assert json.dumps(words) in joined.replace("meta.note", "").strip()
    assert all(len(line) <= 120 for line in text.splitlines())


def test_convert_help_names_step_folders(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    assert "checkpoints/step-0050000" in out and "checkpoints/0050000" not in out
