"""Issue 22 leftovers: a resumed run's saved thread count is bounded like a given one, a converted
checkpoint's recorded time input is read back (a contradicting kind refused), and a run folder
left by a run killed before its first checkpoint gets one agreeing answer from a fresh run and
from --resume."""

from __future__ import annotations

import pytest
import torch

from sit import config as C
from sit.config import ConfigError, ModelConfig, TrainConfig

TINY = ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=1,
                   num_classes=10, learn_sigma=False)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(out=str(out), dataset="digits", image_size=8, steps=2, global_batch=16, lr=1e-3, warmup_steps=0,
                log_every=1, ckpt_every=2, quality=False, samples_per_class=1, sample_steps=1, progress=False,
                num_workers=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_a_resumed_run_caps_its_saved_threads_to_this_machine(tmp_path, monkeypatch, capsys):
    from sit.train import Callbacks, train

    top = C.max_threads()
    real = C.usable_cores()
    monkeypatch.setattr(C, "usable_cores", lambda: real + 1)  # "another machine" with one more core
    run = train(_cfg(tmp_path / "r", threads=top + 1), TINY).run_dir  # allowed there
    monkeypatch.undo()
    capsys.readouterr()
    seen = []
    res = train(resume=run, steps=3, callbacks=Callbacks(after_step=lambda s: seen.append(torch.get_num_threads())))
    assert res.step == 3 and seen == [top]
    assert f"saved threads={top + 1} exceed this machine's bound of {top}" in capsys.readouterr().out
    # a count given now (fresh or as a resume override) above the bound is refused, before any folder is made
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads must be 0 .* 1 \.\. "):
        train(_cfg(tmp_path / "fresh", threads=top + 1), TINY)
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads"):
        train(resume=run, steps=4, overrides={"threads": top + 1})


def test_a_converted_checkpoint_reads_back_its_recorded_time_input(tmp_path, capsys):
    from sit import checkpoints
    from sit.cli import main
    from sit.models.checkpoint import export_official, official_args
    from sit.models.sit import SiT

    net = SiT(TINY)
    runs = {"discrete": {"path": "ddpm", "prediction": "noise", "time_input": "discrete"},
            "continuous": {"path": "gvp", "prediction": "score", "time_input": "continuous"}}
    for name, meta in runs.items():
        p = export_official(net, tmp_path / f"{name}.pt", args=official_args(TINY, meta), ema=net)
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


# files that open a file for writing outside `sit.io.atomic_path`, each with why
PLAIN_WRITES_ALLOWED = {
    "train/log.py": "metrics.jsonl is an append-only log, truncated to the checkpoint's step on resume",
}


def _plain_writes(tree) -> list[int]:
    """Lines of open(..., 'w' / 'a' / 'x' ...) calls that are not inside a `with atomic_path(...)`."""
    import ast

    def is_call(node, name):
        f = node.func if isinstance(node, ast.Call) else None
        return f is not None and (getattr(f, "id", None) == name or getattr(f, "attr", None) == name)

    covered = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(is_call(i.context_expr, "atomic_path") for i in node.items):
            covered |= {id(i.context_expr) for i in node.items}
    bad = []
    for node in ast.walk(tree):
        if is_call(node, "open") and getattr(node.func, "id", None) == "open" and id(node) not in covered:
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
                bad.append(node.lineno)
    return bad


def test_every_file_write_goes_through_sit_io():
    import ast
    from pathlib import Path

    import sit

    root = Path(sit.__file__).parent
    found = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel == "io.py" or rel in PLAIN_WRITES_ALLOWED:
            continue
        found += [f"sit/{rel}:{n}" for n in _plain_writes(ast.parse(p.read_text()))]
    assert not found, f"plain file writes (use sit.io.write_text_atomic / atomic_path): {found}"
    src = "with atomic_path(p) as tmp, open(tmp, 'w') as f:\n    pass\nwith open(q, 'w') as g:\n    pass\n"
    assert _plain_writes(ast.parse(src)) == [3]  # the scan sees a plain write


TRAIN = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "16",
         "--warmup", "0", "--log-every", "1", "--ckpt-every", "2", "--no-quality", "--samples-per-class", "1",
         "--sample-steps", "1", "--no-progress", "--threads", "1", "--steps", "2"]


def _killed_run(folder, leftovers):
    """The folder a `torchrun` killed during its first step leaves: rank 0's lock (its process gone)
    and whatever rank 0 had written."""
    import json
    import socket

    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 7, "host": socket.gethostname()}))
    for name in leftovers:
        (folder / name).mkdir(parents=True) if name.endswith("/") else (folder / name).write_text("{}")
    return folder


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("leftovers", [["run_config.json"], ["run_config.json", "checkpoints/"],
                                       ["run_config.json", "metrics.jsonl", ".tmp-step-0000002-99/"]])
def test_a_run_killed_in_its_first_step_resume_and_fresh_agree(tmp_path, capsys, leftovers):
    from sit.cli import main

    run = _killed_run(tmp_path / "r", leftovers)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    resumed = _err(capsys)
    assert main(["train", "--out", str(run), *TRAIN]) == 2
    fresh = _err(capsys)
    for err in (resumed, fresh):  # the same diagnosis and the same way out, in flags
        assert "never reached a checkpoint" in err and "nothing to resume" in err and "--overwrite" in err, err
    assert main(["train", "--out", str(run), "--overwrite", *TRAIN]) == 0  # the way out works
    assert (run / "checkpoints").is_dir() and not list(run.glob(".tmp-step-*"))


@pytest.mark.parametrize("leftovers", [[], [".tmp-step-0000002-99/"]])
def test_a_run_killed_before_writing_anything_is_started_not_resumed(tmp_path, capsys, leftovers):
    from sit.cli import main

    run = _killed_run(tmp_path / "r", leftovers)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    err = _err(capsys)
    assert "holds no run" in err and "nothing to resume" in err and f"--out {str(run)!r}" in err, err
    assert main(["train", "--out", str(run), *TRAIN]) == 0  # what the message says works, and leaves no debris
    assert (run / "checkpoints").is_dir() and not list(run.glob(".tmp-step-*"))
