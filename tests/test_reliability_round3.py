"""Reliability round 3 (issue 22), end to end through `sit.cli.main` on a 2-step run: a folder has one
kind (run, sample and checkpoint folders are never mixed, nothing is written inside a checkpoint
folder), a complete sample set whose manifest is lost is never silently replaced, convert keeps
model and EMA apart, and the weak spots of resume and --lt-table say what is wrong."""

import json
import shutil
from pathlib import Path

import pytest

from sit import folders
from sit.cli import main

TRAIN = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "16",
         "--warmup", "0", "--log-every", "1", "--ckpt-every", "2", "--no-quality", "--samples-per-class", "1",
         "--sample-steps", "1", "--no-progress", "--threads", "1", "--steps", "2"]
SAMPLE = ["--method", "euler", "--num-steps", "2", "--num-samples", "4", "--batch-size", "2", "--no-progress",
          "--threads", "1"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(run folder, sample folder made from it)."""
    root = tmp_path_factory.mktemp("kinds")
    run, samples = root / "run", root / "samples"
    assert main(["train", "--out", str(run), *TRAIN]) == 0
    assert main(["sample", "--ckpt", str(run), "--out", str(samples), *SAMPLE]) == 0
    return run, samples


def test_kinds_are_explicit(made):
    run, samples = made
    ck = run / "checkpoints" / "step-0000002"
    assert folders.kind_of(run) == "run" and folders.kind_of(samples) == "samples" and folders.kind_of(ck) == "checkpoint"
    assert json.loads((samples / "manifest.json").read_text())["kind"] == folders.SAMPLE_SET_KIND
    assert json.loads((ck / "manifest.json").read_text())["kind"] == folders.CHECKPOINT_KIND


def test_sample_into_a_run_folder_is_refused_and_the_run_still_reads(made, tmp_path, capsys):
    run, _ = made
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(run), *SAMPLE]) == 2
    _one_line(capsys, "is a run folder", "not a sample folder")
    assert _snapshot(run) == before and not (run / ".lock").exists()
    assert main(["info", str(run)]) == 0


@pytest.mark.parametrize("inside", ["step-0000002", "step-0000002/s", "."])
def test_nothing_is_written_inside_a_checkpoint_folder(made, inside, capsys):
    run, _ = made
    target = run / "checkpoints" / inside
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(target), *SAMPLE]) == 2
    _one_line(capsys, "inside the checkpoint folder", "never writes into a checkpoint")
    assert main(["train", "--out", str(target / "r"), *TRAIN]) == 2
    _one_line(capsys, "inside the checkpoint folder")
    assert _snapshot(run) == before and not (run / "checkpoints" / "step-0000002" / "s").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_into_a_sample_folder_is_refused(made, overwrite, capsys):
    _, samples = made
    before = _snapshot(samples)
    capsys.readouterr()
    assert main(["train", "--out", str(samples), *TRAIN, *(["--overwrite"] if overwrite else [])]) == 2
    _one_line(capsys, "is a sample folder", "not a run folder")
    assert _snapshot(samples) == before


def test_a_sample_folder_is_not_a_checkpoint(made, capsys):
    run, samples = made
    capsys.readouterr()
    assert main(["train", "--resume", str(samples), "--no-progress"]) == 2
    _one_line(capsys, "--resume", "is a sample folder")
    assert main(["info", str(samples)]) == 2
    _one_line(capsys, "is a sample folder", "its samples came from")
    assert main(["sample", "--ckpt", str(samples), "--out", str(samples.parent / "s2"), *SAMPLE]) == 2
    _one_line(capsys, "is a sample folder")
    assert not (samples.parent / "s2").exists()


def test_a_run_mixed_by_an_older_sit_still_reads_as_a_run(made, tmp_path, capsys):
    """An older sit could leave a sample manifest (no "kind", with "settings") in a run folder's root."""
    run, samples = made
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    old = json.loads((samples / "manifest.json").read_text())
    old.pop("kind")
    (mixed / "manifest.json").write_text(json.dumps(old))
    assert main(["info", str(mixed)]) == 0
    assert main(["sample", "--ckpt", str(mixed), "--out", str(mixed), *SAMPLE]) == 2
    _one_line(capsys, "is a run folder")


@pytest.mark.parametrize("seed", ["0", "1"])
def test_complete_set_with_a_lost_manifest_is_never_replaced(made, tmp_path, seed, capsys):
    run, _ = made
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--png-folder", "--seed", "0", *SAMPLE]) == 0
    (out / "manifest.json").unlink()
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--png-folder", "--seed", seed, *SAMPLE]) == 2
    _one_line(capsys, "samples.npz", "images/ (4 PNG files)", "no readable manifest.json", "cannot be proven")
    assert _snapshot(out) == before


def test_a_file_of_a_checkpoint_folder_says_pass_the_folder(made, tmp_path, capsys):
    run, _ = made
    ck = run / "checkpoints" / "step-0000002"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(ck / "ema.safetensors"), "--out", str(tmp_path / "s"), *SAMPLE]) == 2
    _one_line(capsys, "is one file of the checkpoint folder", f"--ckpt {ck}")
    assert main(["info", str(ck / "model.safetensors")]) == 2
    _one_line(capsys, "pass the folder")


def test_weights_are_written_with_the_ordinary_file_mode(made, tmp_path):
    import os
    import stat

    from sit.io import file_mode

    run, _ = made
    ck = run / "checkpoints" / "step-0000002"
    assert main(["convert", str(ck), str(tmp_path / "x.safetensors")]) == 0
    for p in [*ck.iterdir(), tmp_path / "x.safetensors", tmp_path / "x.json"]:
        assert stat.S_IMODE(os.stat(p).st_mode) == file_mode(), p


def test_train_format_export_keeps_model_and_ema_and_records_the_heads(made, tmp_path, capsys):
    """`sit convert --train-format` (issue 22): raw weights in "model", the EMA in "ema", num_heads recorded
    so the file reads back without --num-heads, and a contradicting --num-heads is refused."""
    from safetensors.torch import load_file

    from sit.models.checkpoint import load_model, safe_torch_load

    run, _ = made
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
    _one_line(capsys, "records num_heads=1", "--num-heads 2 contradicts it")


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.float(), b.float())


def test_resume_with_steps_below_the_checkpoint_is_refused(made, capsys):
    run, _ = made
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "1", "--no-progress"]) == 2
    _one_line(capsys, "--steps 1 is below the checkpoint's step 2")
    assert _snapshot(run) == before


def test_a_run_killed_before_its_first_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run_config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    assert main(["train", "--out", str(run), *TRAIN]) == 2
    _one_line(capsys, "never reached a checkpoint", "--overwrite")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    _one_line(capsys, "never reached a checkpoint", "--overwrite")


def test_a_bad_lt_table_names_the_file(made, tmp_path, capsys):
    run, _ = made
    bad = tmp_path / "table.json"
    bad.write_text('{"t": [0.1, 0.5], "L": "oops"}')
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(tmp_path / "s"), "--method", "euler_maruyama",
                 "--num-steps", "2", "--w", "kl_eta", "--eta", "1", "--lt-table", str(bad), "--num-samples", "2",
                 "--no-progress", "--threads", "1"]) == 2
    _one_line(capsys, f"--lt-table '{bad}'")


def test_lt_on_a_read_only_checkpoint_is_refused_before_computing(made, tmp_path, monkeypatch, capsys):
    import os

    run, _ = made
    ck = run / "checkpoints" / "step-0000002"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ck) else real(p, mode))
    monkeypatch.setattr("sit.lt.estimate_loss_table", lambda *a, **k: pytest.fail("computed before the check"))
    capsys.readouterr()
    assert main(["lt", "--ckpt", str(ck), "--t-points", "2", "--samples-per-t", "2", "--no-progress"]) == 2
    _one_line(capsys, "cannot write the L_t table", "nothing was computed")


@pytest.mark.parametrize("seed", [str(2**64 - 2), str(2**64 + 5)])
def test_seed_overflow_is_named_before_any_part_is_written(made, tmp_path, seed, capsys):
    run, _ = made
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--seed", seed, *SAMPLE]) == 2
    _one_line(capsys, f"--seed {seed}", "SEED + 3")
    assert not out.exists()


def test_missing_tensorboard_is_said(tmp_path, monkeypatch):
    import sys

    from sit.train.log import _tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    said = []
    assert _tensorboard(tmp_path, said.append) is None
    assert len(said) == 1 and "TensorBoard is not installed" in said[0] and "metrics.jsonl" in said[0]


def test_rerun_of_a_complete_set_makes_the_asked_outputs_and_says_nothing_was_generated(made, tmp_path, capsys):
    run, _ = made
    out = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--out", str(out), *SAMPLE]) == 0
    npz = (out / "samples.npz").read_bytes()
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(out), "--grid-png", "--png-folder", *SAMPLE]) == 0
    text = capsys.readouterr().out
    assert "nothing to do" in text and "0 samples generated now" in text and "wrote" + " " + str(out / "samples.npz") not in text
    assert (out / "grid.png").is_file() and len(list((out / "images").glob("*.png"))) == 4
    assert (out / "samples.npz").read_bytes() == npz


def test_a_checkpoint_pruned_while_it_is_read_is_said_and_the_newest_valid_one_taken(tmp_path, monkeypatch):
    import sit.models.checkpoint as fmt
    from sit import checkpoints

    run = tmp_path / "r"
    assert main(["train", "--out", str(run), *TRAIN[:-1], "4"]) == 0  # checkpoints at steps 2 and 4
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


def test_study_list_counts_the_studys_own_seeds(tmp_path, capsys):
    """Issue 22: `sit study --list` reads the seeds of the study in --out, not the default budget's."""
    from sit.study.cells import CELLS

    out = tmp_path / "st"
    (out / "results").mkdir(parents=True)
    (out / "study_config.json").write_text(json.dumps({"identity": {"budget": {"seeds": 5}}}))
    for s in (0, 3, 4):
        (out / "results" / f"{CELLS[0].name}-s{s}.json").write_text("{}")
    capsys.readouterr()
    assert main(["study", "--list", "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(CELLS[0].name + " "))
    assert "done seeds [0, 3, 4] of 5" in line
