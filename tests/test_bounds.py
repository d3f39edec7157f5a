"""Bounds before allocation (issue 22): step counts, thread counts and saved model sizes are checked
against limits / the weights before anything is built, each with a one-line error."""

import json

import pytest
import torch

from sit.cli import main, resolve_threads
from sit.config import MAX_STEPS, MAX_THREADS_PER_CORE, ModelConfig, usable_cores
from sit.models.checkpoint import load_model, save_model
from sit.models.sit import SiT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=10)
    return save_model(SiT(cfg), tmp_path_factory.mktemp("b") / "tiny", {"path": "linear"})


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("cmd", ["sample", "likelihood"])
def test_huge_num_steps_is_refused_before_the_model_is_read(tiny, tmp_path, cmd, capsys):
    out = tmp_path / "o"
    argv = [cmd, "--ckpt", str(tmp_path / "not-read.pt"), "--method", "euler", "--num-steps", str(10**9)]
    argv += ["--out", str(out)] if cmd == "sample" else []
    assert main(argv) == 2
    _one_line(capsys, "--num-steps", f"[1, {MAX_STEPS}]", str(10**9))
    assert not out.exists()


def test_sampling_grid_refuses_before_allocating():
    from sit.timegrid import sampling_grid

    with pytest.raises(ValueError, match=f"num_steps must be an integer in \\[1, {MAX_STEPS}\\]"):
        sampling_grid(10**9, 1.0, 0.0)
    assert sampling_grid(MAX_STEPS, 1.0, 0.0).shape == (MAX_STEPS + 1,)


def test_threads_bounds(monkeypatch, tiny, capsys):
    top = MAX_THREADS_PER_CORE * usable_cores()
    assert resolve_threads(top) == (top, "--threads")
    with pytest.raises(ValueError, match=f"--threads must be 0 .*1 .. {top}"):
        resolve_threads(top + 1)
    monkeypatch.setenv("SIT_THREADS", "0")  # documented like --threads 0: torch's own default
    assert resolve_threads(None) == (0, "$SIT_THREADS")
    monkeypatch.setenv("SIT_THREADS", "99999")
    with pytest.raises(ValueError, match="SIT_THREADS"):
        resolve_threads(None)
    monkeypatch.delenv("SIT_THREADS")
    assert main(["info", str(tiny), "--threads", "99999"]) == 2
    _one_line(capsys, "--threads", "99999")


def test_saved_sizes_that_contradict_the_weights_are_refused_before_building(tiny):
    meta_path = tiny.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    for field, value, words in [("depth", 10**6, "depth=1000000 but the weights hold 2 blocks"),
                                ("input_size", 2**20, "input_size=1048576 but the weights hold input_size=8"),
                                ("hidden_size", 2**16, "hidden_size=65536")]:
        bad = dict(meta, model=dict(meta["model"], **{field: value}))
        meta_path.write_text(json.dumps(bad))
        try:
            with pytest.raises(ValueError, match=words):
                load_model(tiny)
        finally:
            meta_path.write_text(json.dumps(meta))
    load_model(tiny)


def test_integer_weights_are_refused_not_cast(tmp_path, tiny):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny))
    sd["final_layer.linear.weight"] = sd["final_layer.linear.weight"].to(torch.int32)
    save_file(sd, str(tmp_path / "int.safetensors"))
    (tmp_path / "int.json").write_text(tiny.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="'final_layer.linear.weight' has dtype int32"):
        load_model(tmp_path / "int.safetensors")
