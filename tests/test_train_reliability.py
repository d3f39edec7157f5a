"""sit train's run-folder reliability: refusing to overwrite a run, --overwrite, the run lock,
full disk during a checkpoint write, stale partial checkpoints, --resume overrides and their
history, --no-progress on resume, help defaults read from the code."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_cli import TINY_MODEL, TINY_TRAIN_FLAGS, one_line, snapshot, tiny_train_config

from sit import config as C
from sit.cli import main
from sit.config import ConfigError, TrainConfig

FLAGS = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "16",
         "--warmup", "0", "--log-every", "1", "--ckpt-every", "2", "--no-quality", "--samples-per-class", "1",
         "--sample-steps", "1", "--no-progress", "--threads", "1"]


def _train(out, *extra, steps=2):
    return main(["train", "--out", str(out), "--steps", str(steps), *FLAGS, *extra])


def _snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_existing_run_folder_is_refused_then_overwritten(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(run) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert _train(run, steps=4) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(run) == before  # nothing of the old run changed
    (run / "extra.txt").write_text("old")
    assert _train(run, "--overwrite", steps=4) == 0
    assert not (run / "extra.txt").exists()
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [p.name for p in (run / "checkpoints").iterdir()] and not (run / ".lock").exists()


def test_run_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (run / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        assert _train(run) == 2
        err = capsys.readouterr().err
        assert f"in use by process {sleeper.pid}" in err
        assert not (run / "checkpoints").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _train(run) == 0  # the holder is gone: its lock is taken over with a message
    out = capsys.readouterr()
    assert "stale lock" in out.out + out.err
    assert not (run / ".lock").exists()


def test_full_disk_keeps_previous_checkpoint_and_resume_cleans_stale(tmp_path, monkeypatch, capsys):
    import torch

    from sit import checkpoints

    run = tmp_path / "r"
    assert _train(run) == 0
    real_save = torch.save

    def full(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"no space left on .*needed about [0-9.]+ MB", err), err
    assert [p.name for p in checkpoints.list_checkpoints(run)] == ["step-0000002"]
    assert not list(run.glob(".tmp-*"))
    monkeypatch.setattr(torch, "save", real_save)
    stale = run / ".tmp-step-0000004-123456"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert not stale.exists() and "partial checkpoint" in out.out + out.err
    assert [p.name for p in checkpoints.list_checkpoints(run)][-1] == "step-0000004"


def test_resume_overrides_are_recorded_and_others_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(run) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--path", "gvp", "--depth", "3"]) == 2
    err = capsys.readouterr().err
    assert "--path, --depth cannot change" in err and "--lr" in err
    assert main(["train", "--resume", str(run), "--steps", "4", "--lr", "5e-4", "--grad-clip", "0.5",
                 "--no-progress"]) == 0
    rc = json.loads((run / "run_config.json").read_text())
    from sit.commands.train import DEMO_TRAIN

    lr0 = DEMO_TRAIN["lr"]
    assert rc["history"] == [{"step": 2, "changed": {"steps": [2, 4], "lr": [lr0, 5e-4], "grad_clip": [1.0, 0.5]}}]
    assert rc["train"]["lr"] == 5e-4
    cfg = json.loads((run / "checkpoints" / "step-0000004" / "config.json").read_text())
    assert cfg["train"]["lr"] == 5e-4 and cfg["train"]["steps"] == 4
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in recs] == [lr0, lr0, 5e-4, 5e-4]


def test_no_progress_is_honoured_on_resume(tmp_path):
    run = tmp_path / "r"
    assert _train(run) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "sit.cli", "train", "--resume", str(run), "--steps", "3"]
    p = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "train:" not in p.stderr and "it/s" not in p.stderr and "s/it" not in p.stderr, p.stderr
    rc = json.loads((run / "run_config.json").read_text())
    assert rc["train"]["progress"] is False


def test_help_defaults_come_from_the_code(capsys):
    from sit.commands.train import DEMO_TRAIN

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = TrainConfig()
    assert f"optimizer steps (default {d.steps}; demo {DEMO_TRAIN['steps']})" in text
    assert f"quality number (default {d.quality_samples_per_class})" in text
    assert f"global batch over all ranks (default {d.global_batch}; demo {DEMO_TRAIN['global_batch']})" in text
    # every "(default X; demo Y)" names TrainConfig's and the demo's value of that flag's field
    import argparse

    from sit.commands.train import _demo, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    checked = 0
    for a in p._actions:
        m = re.search(r"default ([^;)]+)(?:; demo ([^)]+))?\)", a.help or "")
        if m and hasattr(d, a.dest):
            want = getattr(d, a.dest)
            got = m.group(1)
            if isinstance(want, bool):
                want = "on" if want else "off"
            assert got == (f"{want:g}" if isinstance(want, float) else str(want if want is not None else "none")), a.dest
            if m.group(2):
                dv = _demo(a.dest)
                if isinstance(dv, bool):   # --ema-warmup: "(default off; demo on)"
                    dv = "on" if dv else "off"
                assert m.group(2) == (f"{dv:g}" if isinstance(dv, float) else str(dv)), a.dest
            checked += 1
    assert checked >= 15


def test_docs_demo_parameter_count_is_the_computed_one():
    from sit.commands.train import DEMO_MODEL
    from sit.config import ModelConfig
    from sit.models.sit import SiT

    n = SiT(ModelConfig(**DEMO_MODEL, input_size=8, in_channels=1, num_classes=10)).num_params()
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert f"{n:,} parameters" in text


def test_resume_with_steps_below_the_checkpoint_is_refused(tiny_run_and_samples, capsys):
    run, _ = tiny_run_and_samples
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "1", "--no-progress"]) == 2
    one_line(capsys, "--steps 1 is below the checkpoint's step 2")
    assert snapshot(run) == before


def test_a_run_killed_before_its_first_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run_config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    assert main(["train", "--out", str(run), *TINY_TRAIN_FLAGS]) == 2
    one_line(capsys, "never reached a checkpoint", "--overwrite")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    one_line(capsys, "never reached a checkpoint", "--overwrite")


def test_missing_tensorboard_is_said(tmp_path, monkeypatch):
    import sys

    from sit.train.log import _tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    said = []
    assert _tensorboard(tmp_path, said.append) is None
    assert len(said) == 1 and "TensorBoard is not installed" in said[0] and "metrics.jsonl" in said[0]


def test_a_resumed_run_caps_its_saved_threads_to_this_machine(tmp_path, monkeypatch, capsys):
    from sit.train import Callbacks, train

    top = C.max_threads()
    real = C.usable_cores()
    monkeypatch.setattr("sit.bounds.usable_cores", lambda: real + 1)  # "another machine" with one more core
    run = train(tiny_train_config(tmp_path / "r", threads=top + 1), TINY_MODEL).run_dir  # allowed there
    monkeypatch.undo()
    capsys.readouterr()
    seen = []
    res = train(resume=run, steps=3, callbacks=Callbacks(after_step=lambda s: seen.append(torch.get_num_threads())))
    assert res.step == 3 and seen == [top]
    assert f"saved threads={top + 1} exceed this machine's bound of {top}" in capsys.readouterr().out
    # a count given now (fresh or as a resume override) above the bound is refused, before any folder is tiny_run_and_samples
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads must be 0 .* 1 \.\. "):
        train(tiny_train_config(tmp_path / "fresh", threads=top + 1), TINY_MODEL)
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(ConfigError, match=r"TrainConfig\.threads"):
        train(resume=run, steps=4, overrides={"threads": top + 1})


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


@pytest.mark.parametrize("leftovers", [["run_config.json"], ["run_config.json", "checkpoints/"],
                                       ["run_config.json", "metrics.jsonl", ".tmp-step-0000002-99/"]])
def test_a_run_killed_in_its_first_step_resume_and_fresh_agree(tmp_path, capsys, leftovers):
    from sit.cli import main

    run = _killed_run(tmp_path / "r", leftovers)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    resumed = one_line(capsys)
    assert main(["train", "--out", str(run), *TINY_TRAIN_FLAGS]) == 2
    fresh = one_line(capsys)
    for err in (resumed, fresh):  # the same diagnosis and the same way out, in flags
        assert "never reached a checkpoint" in err and "nothing to resume" in err and "--overwrite" in err, err
    assert main(["train", "--out", str(run), "--overwrite", *TINY_TRAIN_FLAGS]) == 0  # the way out works
    assert (run / "checkpoints").is_dir() and not list(run.glob(".tmp-step-*"))


@pytest.mark.parametrize("leftovers", [[], [".tmp-step-0000002-99/"]])
def test_a_run_killed_before_writing_anything_is_started_not_resumed(tmp_path, capsys, leftovers):
    from sit.cli import main

    run = _killed_run(tmp_path / "r", leftovers)
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 2
    err = one_line(capsys)
    assert "holds no run" in err and "nothing to resume" in err and f"--out {str(run)!r}" in err, err
    assert main(["train", "--out", str(run), *TINY_TRAIN_FLAGS]) == 0  # what the message says works, and leaves no debris
    assert (run / "checkpoints").is_dir() and not list(run.glob(".tmp-step-*"))
