"""The checkpoint store (sit/checkpoints.py): manifest verification covering state.json and
config.json, step agreement, fall-back with a message, identity, one-line errors for bad files."""

import errno
import json
import os
import shutil

import pytest
import torch
from tiny_cli import TINY_MODEL, TINY_TRAIN_FLAGS, one_line

from sit import checkpoints as store
from sit.cli import main
from sit.config import ConfigError, ModelConfig
from sit.models.sit import SiT

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2,
                   num_classes=10, learn_sigma=False, class_dropout_prob=0.1)


def _meta(step=0):
    return store.RunMeta(model=TINY, train={"lr": 1e-3}, data={"kind": "embedded"}, step=step,
                         extra={"sit_version": "test"})


def _write(run, step, seed=0, **kw):
    torch.manual_seed(seed)
    net = SiT(TINY)
    ema = SiT(TINY)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    return store.save_checkpoint(run, step, net, ema, opt, {"note": step}, _meta(), keep_last=kw.get("keep_last", 5))


@pytest.fixture
def run(tmp_path):
    r = tmp_path / "run"
    _write(r, 100, 0)
    _write(r, 200, 1)
    return r


def test_layout_manifest_last_and_config_keys(run):
    ck = run / "checkpoints" / "step-0000200"
    names = {p.name for p in ck.iterdir()}
    assert names == {"model.safetensors", "ema.safetensors", "optimizer.pt", "config.json", "state.json", "manifest.json"}
    man = json.loads((ck / "manifest.json").read_text())
    assert man["step"] == 200 and set(man["files"]) == names - {"manifest.json"}
    cfg = json.loads((ck / "config.json").read_text())
    assert set(cfg) == {"model", "path", "prediction", "loss_weight", "time_input", "train", "data", "sit_version", "step"}
    assert store.verify(ck)["step"] == 200 and store.verify(ck)["note"] == 200
    assert not list(run.glob(".tmp-*"))


def test_flipped_step_in_state_json_is_refused(run):
    ck = run / "checkpoints" / "step-0000200"
    st = json.loads((ck / "state.json").read_text())
    st["step"] = 300
    (ck / "state.json").write_text(json.dumps(st, indent=1) + "\n")
    with pytest.raises(store.CheckpointError, match="state.json is (corrupt|truncated)"):
        store.verify(ck)


def test_step_disagreement_refused_even_with_consistent_hashes(run, tmp_path):
    ck = run / "checkpoints" / "step-0000200"
    other = run / "checkpoints" / "step-0000300"
    os.rename(ck, other)  # a renamed folder: every hash still matches
    with pytest.raises(store.CheckpointError, match="step mismatch: folder name 300, state.json 200"):
        store.verify(other)


def test_old_checkpoint_without_manifest_still_verifies(run):
    ck = run / "checkpoints" / "step-0000200"
    (ck / "manifest.json").unlink()
    assert store.verify(ck)["step"] == 200
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(store.CheckpointError, match="truncated"):
        store.verify(ck)


def test_resolve_falls_back_and_names_refused(run):
    f = run / "checkpoints" / "step-0000200" / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[-1] ^= 0xFF
    f.write_bytes(bytes(b))
    msgs = []
    assert store.resolve(run, log=msgs.append).name == "step-0000100"
    assert msgs == ["sit: refusing step-0000200 (model.safetensors is corrupt: sha256 mismatch); using step-0000100"]
    net, meta = store.load(run, log=msgs.append)
    assert meta.step == 100 and meta.train == {"lr": 1e-3} and meta.source.endswith("step-0000100")
    with pytest.raises(store.CheckpointError, match="sha256 mismatch"):
        store.load(run / "checkpoints" / "step-0000200")


def test_sit_info_names_refused_and_uses_previous(run, capsys):
    f = run / "checkpoints" / "step-0000200" / "ema.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert main(["info", str(run), "--json"]) == 0
    cap = capsys.readouterr()
    assert "refusing step-0000200 (ema.safetensors is truncated" in cap.err and "using step-0000100" in cap.err
    assert json.loads(cap.out)["step"] == 100


def test_identity_ignores_files_added_later(run):
    ck = run / "checkpoints" / "step-0000200"
    before = store.identity(ck)
    (ck / "lt_table.json").write_text("{}")
    assert store.identity(ck) == before == store.identity(run)
    assert store.identity(run / "checkpoints" / "step-0000100") != before


def test_keep_last_and_enospc_keeps_previous(tmp_path, monkeypatch):
    run = tmp_path / "r"
    for s in (1, 2, 3):
        _write(run, s, keep_last=2)
    assert [p.name for p in store.list_checkpoints(run)] == ["step-0000002", "step-0000003"]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left on .* \(needed about [0-9.]+ MB\)"):
        _write(run, 4, keep_last=2)
    assert [p.name for p in store.list_checkpoints(run)] == ["step-0000002", "step-0000003"]
    assert not list(run.glob(".tmp-*"))
    store.verify(run / "checkpoints" / "step-0000003")


def test_stale_tmp_folders_are_cleaned(tmp_path):
    run = tmp_path / "r"
    (run / ".tmp-step-0000005-99999").mkdir(parents=True)
    (run / ".tmp-step-0000005-99999" / "model.safetensors").write_bytes(b"x")
    msgs = []
    assert [p.name for p in store.clean_stale(run, msgs.append)] == [".tmp-step-0000005-99999"]
    assert not (run / ".tmp-step-0000005-99999").exists() and "partial checkpoint" in msgs[0]


@pytest.mark.parametrize("name,content,match", [
    ("empty.pt", b"", "is empty .0 bytes.: not a torch checkpoint"),
    ("random.pt", bytes(range(256)) * 4, "is not a torch checkpoint or is corrupt"),
    ("empty.safetensors", b"", "is empty .0 bytes.: not a safetensors file"),
    ("bogus.safetensors", b"\xff" * 8 + b"garbage" * 10, "not a valid safetensors file"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, name, content, match):
    f = tmp_path / name
    f.write_bytes(content)
    for cmd in (["info", str(f)], ["convert", str(f), str(tmp_path / "o.safetensors")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        import re

        assert re.search(match, err), err
        assert "could run code" not in err


def test_truncated_safetensors_and_torch_zip(tmp_path, capsys):
    from sit.models.checkpoint import export_official, save_model

    net = SiT(TINY)
    st = save_model(net, tmp_path / "m")
    st.write_bytes(st.read_bytes()[:-100])
    assert main(["info", str(st)]) == 2
    err = capsys.readouterr().err
    assert "not a valid safetensors file: corrupt or truncated" in err and len(err.strip().splitlines()) == 1
    pt = export_official(net, tmp_path / "m.pt")
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    assert main(["info", str(pt)]) == 2
    err = capsys.readouterr().err
    assert "not a readable torch checkpoint: corrupt or truncated" in err and len(err.strip().splitlines()) == 1


def test_weights_only_refusal_names_the_global(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    bad = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": Evil()}, bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "would construct posix.getcwd" in err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err


def test_weights_are_written_with_the_ordinary_file_mode(tiny_run_and_samples, tmp_path):
    import os
    import stat

    from sit.io import file_mode

    run, _ = tiny_run_and_samples
    ck = run / "checkpoints" / "step-0000002"
    assert main(["convert", str(ck), str(tmp_path / "x.safetensors")]) == 0
    for p in [*ck.iterdir(), tmp_path / "x.safetensors", tmp_path / "x.json"]:
        assert stat.S_IMODE(os.stat(p).st_mode) == file_mode(), p


def test_train_format_export_keeps_model_and_ema_and_records_the_heads(tiny_run_and_samples, tmp_path, capsys):
    """`sit convert --train-format`: raw weights in "model", the EMA in "ema", num_heads recorded
    so the file reads back without --num-heads, and a contradicting --num-heads is refused."""
    from safetensors.torch import load_file

    from sit.models.checkpoint import load_model, safe_torch_load

    run, _ = tiny_run_and_samples
    ck = run / "checkpoints" / "step-0000002"
    pt = tmp_path / "x.pt"
    assert main(["convert", str(ck), str(pt), "--train-format"]) == 0
    d = safe_torch_load(pt)
    raw, ema = load_file(str(ck / "model.safetensors")), load_file(str(ck / "ema.safetensors"))
    k = "final_layer.linear.weight"
    assert not torch_equal(raw[k], ema[k])
    assert torch_equal(d["model"][k], raw[k]) and torch_equal(d["ema"][k], ema[k])
    assert d["args"]["num_heads"] == 1
    net, meta = load_model(pt)  # a custom size, read back without --num-heads
    assert net.config.num_heads == 1 and meta["weights"] == "ema"
    capsys.readouterr()
    assert main(["info", str(pt), "--num-heads", "2"]) == 2
    one_line(capsys, "records num_heads=1", "--num-heads 2 contradicts it")


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.float(), b.float())


def test_a_checkpoint_pruned_while_it_is_read_is_said_and_the_newest_valid_one_taken(tmp_path, monkeypatch):
    import sit.models.checkpoint as fmt
    from sit import checkpoints

    run = tmp_path / "r"
    assert main(["train", "--out", str(run), *TINY_TRAIN_FLAGS[:-1], "4"]) == 0  # checkpoints at steps 2 and 4
    real, calls = fmt.load_model, []

    def pruned_on_first_read(ck, **kw):
        calls.append(ck)
        if len(calls) == 1:
            shutil.rmtree(ck)  # what a training run's keep_last pruning does meanwhile
            raise FileNotFoundError(f"{ck}/ema.safetensors")
        return real(ck, **kw)

    monkeypatch.setattr(fmt, "load_model", pruned_on_first_read)
    said = []
    net, meta = checkpoints.load(run, log=said.append)
    assert [c.name for c in calls] == ["step-0000004", "step-0000002"] and meta.step == 2
    assert any("was removed while it was read" in s for s in said)


def test_a_converted_checkpoint_reads_back_its_recorded_time_input(tmp_path, capsys):
    from sit import checkpoints
    from sit.cli import main
    from sit.models.checkpoint import export_official, official_args
    from sit.models.sit import SiT

    net = SiT(TINY_MODEL)
    runs = {"discrete": {"path": "ddpm", "prediction": "noise", "time_input": "discrete"},
            "continuous": {"path": "gvp", "prediction": "score", "time_input": "continuous"}}
    for name, meta in runs.items():
        p = export_official(net, tmp_path / f"{name}.pt", args=official_args(TINY_MODEL, meta), ema=net)
        _, rm = checkpoints.load(p)
        assert (rm.time_input, rm.path, rm.prediction) == (meta["time_input"], meta["path"], meta["prediction"])
        assert rm.discrete == (name == "discrete")
    with pytest.raises(ConfigError, match=r"^kind sit contradicts the checkpoint .* records time_input 'discrete'"):
        checkpoints.load(tmp_path / "discrete.pt", kind="sit")
    with pytest.raises(ConfigError, match=r"^kind dit contradicts"):
        checkpoints.load(tmp_path / "continuous.pt", kind="dit")
    _, rm = checkpoints.load(tmp_path / "discrete.pt", kind="dit")  # agreeing with the record
    assert rm.time_input == "discrete"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "continuous.pt"), "--kind", "dit", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sit info: error: --kind dit contradicts the checkpoint")
