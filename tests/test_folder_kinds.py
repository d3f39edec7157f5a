"""Every folder has one kind (`sit.folders`), end to end through `sit.cli.main` on a 2-step run:
run, sample and checkpoint folders are never mixed, nothing is written inside a checkpoint
folder, and a folder of one kind given where another is expected is refused in one line with
nothing changed."""

import json
import shutil

import pytest
from tiny_cli import TINY_SAMPLE_FLAGS, TINY_TRAIN_FLAGS, one_line, snapshot

from sit import folders
from sit.cli import main


def test_kinds_are_explicit(tiny_run_and_samples):
    run, samples = tiny_run_and_samples
    ck = run / "checkpoints" / "step-0000002"
    assert folders.kind_of(run) == "run" and folders.kind_of(samples) == "samples" and folders.kind_of(ck) == "checkpoint"
    assert json.loads((samples / "manifest.json").read_text())["kind"] == folders.SAMPLE_SET_KIND
    assert json.loads((ck / "manifest.json").read_text())["kind"] == folders.CHECKPOINT_KIND


def test_sample_into_a_run_folder_is_refused_and_the_run_still_reads(tiny_run_and_samples, tmp_path, capsys):
    run, _ = tiny_run_and_samples
    before = snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(run), *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "is a run folder", "not a sample folder")
    assert snapshot(run) == before and not (run / ".lock").exists()
    assert main(["info", str(run)]) == 0


@pytest.mark.parametrize("inside", ["step-0000002", "step-0000002/s", "."])
def test_nothing_is_written_inside_a_checkpoint_folder(tiny_run_and_samples, inside, capsys):
    run, _ = tiny_run_and_samples
    target = run / "checkpoints" / inside
    before = snapshot(run)
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--out", str(target), *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "inside the checkpoint folder", "never writes into a checkpoint")
    assert main(["train", "--out", str(target / "r"), *TINY_TRAIN_FLAGS]) == 2
    one_line(capsys, "inside the checkpoint folder")
    assert snapshot(run) == before and not (run / "checkpoints" / "step-0000002" / "s").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_train_into_a_sample_folder_is_refused(tiny_run_and_samples, overwrite, capsys):
    _, samples = tiny_run_and_samples
    before = snapshot(samples)
    capsys.readouterr()
    assert main(["train", "--out", str(samples), *TINY_TRAIN_FLAGS, *(["--overwrite"] if overwrite else [])]) == 2
    one_line(capsys, "is a sample folder", "not a run folder")
    assert snapshot(samples) == before


def test_a_sample_folder_is_not_a_checkpoint(tiny_run_and_samples, capsys):
    run, samples = tiny_run_and_samples
    capsys.readouterr()
    assert main(["train", "--resume", str(samples), "--no-progress"]) == 2
    one_line(capsys, "--resume", "is a sample folder")
    assert main(["info", str(samples)]) == 2
    one_line(capsys, "is a sample folder", "its samples came from")
    assert main(["sample", "--ckpt", str(samples), "--out", str(samples.parent / "s2"), *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "is a sample folder")
    assert not (samples.parent / "s2").exists()


def test_a_run_mixed_by_an_older_sit_still_reads_as_a_run(tiny_run_and_samples, tmp_path, capsys):
    """An older sit could leave a sample manifest (no "kind", with "settings") in a run folder's root."""
    run, samples = tiny_run_and_samples
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    old = json.loads((samples / "manifest.json").read_text())
    old.pop("kind")
    (mixed / "manifest.json").write_text(json.dumps(old))
    assert main(["info", str(mixed)]) == 0
    assert main(["sample", "--ckpt", str(mixed), "--out", str(mixed), *TINY_SAMPLE_FLAGS]) == 2
    one_line(capsys, "is a run folder")
