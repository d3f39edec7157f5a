"""The study's job mode and latent studies keep the promises of `sit train`: one process per
(cell, seed), a latent folder named by its identity, and latent scales float32 can hold."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sit.cli import main

TINY = ["--cells", "linear-velocity", "--steps", "2", "--batch", "8", "--seeds", "2", "--samples-per-class", "2",
        "--nfe", "2", "--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--threads", "1", "--jobs", "1"]

HOLD = """
import sys, time
from sit.io import FolderLock
FolderLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder):
    """A live process holding ``folder``'s lock (as a running study job or its `sit train` does)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("held", ["unit", "run"])
def test_a_second_job_for_a_running_unit_says_so_and_touches_nothing(tmp_path, capsys, held):
    """The unit's lock is taken before its unfinished run folder is removed; a run folder whose
    `sit train` lock a live process holds (a job of an older sit) is not removed either."""
    out = tmp_path / "study"
    run_dir = out / "runs" / "linear-velocity-s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    p = _holder(out / "locks" / "linear-velocity-s0" if held == "unit" else run_dir)
    try:
        assert main(["study", "--out", str(out), *TINY, "--only", "linear-velocity:0", "--no-report"]) == 2
    finally:
        p.kill()
        p.wait()
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and "linear-velocity:0 of the study" in err[0] and "is running already" in err[0], err
    assert f"process {p.pid}" in err[0]
    assert "removing the unfinished run" not in cap.out
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'  # the running job's folder
    assert not (out / "results" / "linear-velocity-s0.json").exists()


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    from PIL import Image

    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.vae import VAE

    root = tmp_path_factory.mktemp("latguards")
    for c in ("a", "b"):
        (root / "images" / c).mkdir(parents=True)
        for i in range(3):
            rng = np.random.default_rng(10 * ord(c) + i)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / c / f"{i}.png")
    VAE.tiny_random(0).model.save_pretrained(root / "vae")
    vae = VAE.from_pretrained(str(root / "vae"))
    extract_latents(ImageFolderDataset(root / "images", 16), vae, root / "latents", shard_size=8, batch_size=4)
    return root


def test_a_latent_study_refuses_a_re_extracted_latent_folder(latents, tmp_path, capsys):
    """The study names its latent folder by identity (space and index hash): re-extracted with another
    scale at the same path, the folder is refused before anything trains, and the table is not mixed."""
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.study.cells import DEFAULT_BUDGET, select_cells
    from sit.study.records import LATENTS_NAME, check_latents, latents_identity
    from sit.study.run import Study, study_base
    from sit.vae import VAE

    lat = tmp_path / "latents"
    import shutil

    shutil.copytree(latents / "latents", lat)
    base, mc = study_base({"latents": str(lat)})
    study = Study(tmp_path / "study", base, mc, DEFAULT_BUDGET, select_cells("gvp-velocity"))
    study.out.mkdir()
    check_latents(study)
    recorded = json.loads((study.out / LATENTS_NAME).read_text())
    assert recorded["space"]["scale_factor"] == latents_identity(study)["space"]["scale_factor"]
    check_latents(study)   # the same folder again: fine
    shutil.rmtree(lat)     # re-extracted with another --vae-scale
    vae = VAE.from_pretrained(str(latents / "vae"), scale_factor=0.5)
    extract_latents(ImageFolderDataset(latents / "images", 16), vae, lat, shard_size=8, batch_size=4)
    with pytest.raises(ValueError, match=r"latents .* is not the latent folder this study's cells trained on "
                                         r"\(space.scale_factor"):
        check_latents(study)
    # through the CLI: one line naming --latents, before any unit runs (the record of the first extraction)
    cli_out = tmp_path / "cli_study"
    cli_out.mkdir()
    (cli_out / LATENTS_NAME).write_text(json.dumps(recorded))
    argv = ["study", "--latents", str(lat), "--cells", "gvp-velocity", "--seeds", "2", "--steps", "2", "--batch", "4",
            "--samples-per-class", "2", "--nfe", "2", "--depth", "1", "--hidden-size", "32", "--num-heads", "2",
            "--threads", "1", "--out", str(cli_out), "--no-report"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sit study: error: --latents ") and "scale_factor" in err[0], err
    assert not (cli_out / "runs").exists()


@pytest.mark.parametrize("argv", [
    ["train", "--latents", "LAT", "--vae-scale", "1e-320", "--out", "OUT"],
    ["extract", "--data", "IMG", "--vae", "VAE", "--vae-scale", "1e-320", "--out", "OUT"],
    ["sample", "--ckpt", "CK", "--vae", "VAE", "--vae-scale", "1e-320", "--out", "OUT"],
])
def test_a_latent_scale_float32_rounds_to_zero_is_refused(latents, tmp_path, capsys, argv):
    subs = {"LAT": str(latents / "latents"), "IMG": str(latents / "images"), "VAE": str(latents / "vae"),
            "CK": str(tmp_path / "ck"), "OUT": str(tmp_path / "out")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--vae-scale must be a finite number > 0 that float32 holds" in err[0], err
    assert "float32 rounds it to 0" in err[0]
    assert not (tmp_path / "out").exists()


def test_latent_space_refuses_a_scale_float32_loses():
    from sit.config import latent_value_problem
    from sit.vae import LatentSpace

    with pytest.raises(ValueError, match="float32 rounds it to 0"):
        LatentSpace(scale=1e-320)
    assert latent_value_problem("scale", 2e-38) is None
    assert latent_value_problem("scale", 1e-39).endswith("(got 1e-39: below float32's normal range)")
    assert latent_value_problem("shift", -1e39) and latent_value_problem("shift", 0.0) is None


@pytest.mark.parametrize("text,said", [
    ("[]", "not an object"),
    ('{"cell": "linear-velocity", "seed": 0}', "'evals' is not a map"),
    ('{"cell": "linear-velocity", "seed": 0, "evals": {"ode": {"kind": "ode", "fd": "x"}}, "wall_s": {"total": 1}}',
     "evals.ode.fd is not a number"),
    ('{"cell": "nope", "seed": 0}', "unknown cell 'nope'"),
    ('{"cell": "linear-velocity", "seed": 0, "evals": {}, "wall_s": {"total": 1}', "unreadable"),
])
def test_a_malformed_result_under_report_only_is_one_line(tmp_path, capsys, text, said):
    out = tmp_path / "study"
    (out / "results").mkdir(parents=True)
    (out / "study_config.json").write_text('{"identity": {}}')
    (out / "results" / "linear-velocity-s0.json").write_text(text)
    assert main(["study", "--out", str(out), "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sit study: error: study result ") and said in err[0], err
    assert "linear-velocity-s0.json" in err[0] and "remove it to run that (cell, seed) again" in err[0]
    assert not (out / "study.md").exists()


def test_data_workers_are_capped_at_the_usable_cores(latents, tmp_path, monkeypatch):
    """--num-workers (default 4) above the cores only made torch warn; the items are seeded per index,
    so the cap changes no batch."""
    import os
    import warnings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    argv = ["train", "--latents", str(latents / "latents"), "--depth", "1", "--hidden-size", "16", "--num-heads", "1",
            "--patch-size", "2", "--batch", "4", "--steps", "1", "--ckpt-every", "1", "--no-progress", "--threads", "1",
            "--sample-every", "0", "--no-quality", "--num-workers", "4"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert not [w for w in seen if "worker processes in total" in str(w.message)]


def test_default_output_folders_are_git_ignored():
    from pathlib import Path

    from sit.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    ignored = {ln.strip().strip("/") for ln in (root / ".gitignore").read_text().splitlines() if ln.strip()}
    defaults = {TrainConfig().out.split("/")[0], "studies", "samples", "latents", "sweeps", "exports"}
    assert defaults <= ignored, defaults - ignored


@pytest.mark.parametrize("text,said", [("garbage", "is corrupt"), ('{"created": 1}', "holds no study identity"),
                                       ("[1]", "holds no study identity")])
@pytest.mark.parametrize("report_only", [True, False])
def test_a_study_config_that_is_not_one_is_one_line(tmp_path, capsys, text, said, report_only):
    out = tmp_path / "study"
    (out / "results").mkdir(parents=True)
    (out / "study_config.json").write_text(text)
    argv = ["study", "--out", str(out), "--report-only"] if report_only else ["study", "--out", str(out), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sit study: error: study config ") and said in err[0], err
    assert (out / "study_config.json").read_text() == text and not (out / "study.md").exists()


@pytest.mark.parametrize("flag,value,said", [
    ("--dinov2", "nodino", "--dinov2 'NODE' is not a DINOv2 folder (no config.json)"),
    ("--ref", "lat.safetensors", "--ref 'NODE' is not an .npz reference batch or an image folder"),
    ("--ref", "none.npz", "--ref 'NODE' is missing"),
    ("--inception", "nope.pth", "--inception 'NODE' is not a file"),
    ("--ref-images", "0", "--ref-images must be an integer >= 2 (got 0)"),
])
def test_a_latent_studys_scoring_inputs_are_checked_before_its_folder_is_written(latents, tmp_path, capsys, flag,
                                                                                  value, said):
    node = str(tmp_path / value) if flag != "--ref-images" else value
    if value.endswith(".safetensors"):
        (tmp_path / value).write_bytes(b"x")
    out = tmp_path / "study"
    argv = ["study", "--latents", str(latents / "latents"), "--cells", "gvp-velocity", "--seeds", "2", "--steps", "2",
            "--batch", "4", "--samples-per-class", "2", "--nfe", "2", "--depth", "1", "--hidden-size", "32",
            "--num-heads", "2", "--threads", "1", flag, node, "--out", str(out), "--no-report"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sit study: error: {said.replace('NODE', node)}" + err[0].split(said.replace("NODE", node))[1]]
    assert not out.exists()
