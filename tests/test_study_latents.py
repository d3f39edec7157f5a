"""`sit study --latents`: a tiny latent study end to end (random VAE saved with save_pretrained, the
Inception architecture with random weights), progress lines, --only CELL:SEED, --dry-run."""

import json

import numpy as np
import pytest
import torch

from sit.cli import main


@pytest.fixture(scope="module")
def latent_setup(tmp_path_factory):
    from PIL import Image

    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.evaluate.inception import InceptionV3FID
    from sit.vae import VAE

    root = tmp_path_factory.mktemp("latstudy")
    for c in ("a", "b"):
        (root / "images" / c).mkdir(parents=True)
        for i in range(5):
            rng = np.random.default_rng(10 * ord(c) + i)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / c / f"{i}.png")
    VAE.tiny_random(0).model.save_pretrained(root / "vae")
    vae = VAE.from_pretrained(str(root / "vae"))
    extract_latents(ImageFolderDataset(root / "images", 16), vae, root / "latents", shard_size=8, batch_size=4)
    torch.manual_seed(0)
    torch.save(InceptionV3FID().state_dict(), root / "pt_inception-2015-12-05-test.pth")
    return root


def _argv(root, *extra):
    return ["study", "--latents", str(root / "latents"), "--inception", str(root / "pt_inception-2015-12-05-test.pth"),
            "--cells", "gvp-velocity", "--seeds", "2", "--steps", "2", "--batch", "4", "--samples-per-class", "2",
            "--nfe", "2", "--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--threads", "1",
            "--out", str(root / "study"), *extra]


def test_tiny_latent_study_end_to_end(latent_setup, capsys):
    root = latent_setup
    assert main(_argv(root, "--only", "gvp-velocity:0", "--no-report")) == 0
    log = capsys.readouterr().out
    res = json.loads((root / "study" / "results" / "gvp-velocity-s0.json").read_text())
    assert not (root / "study" / "results" / "gvp-velocity-s1.json").exists()   # --only CELL:SEED ran one unit
    ode = res["evals"]["ode"]
    assert ode["samples"] == 4 and ode["fd"] is not None and np.isfinite(ode["fd"]) and ode["fd"] >= -1e-9
    assert "sfd" in ode and "accuracy" not in ode     # Inception numbers, no classifier ones
    # progress inside the unit: training steps, then each sampling
    assert "gvp-velocity s0: training step 2/2" in log
    assert "gvp-velocity s0: sampling ode (NFE 2, 4 samples)" in log
    assert "scoring with the Inception scorer" in log and "reference features of train-" in log
    # the reference (training images) is computed once and then read from the cache
    assert main(_argv(root, "--only", "gvp-velocity:1")) == 0
    log = capsys.readouterr().out
    assert "cached" in log and "computing" not in log.split("sit study: [1/1]")[0]
    md = (root / "study" / "study.md").read_text()
    assert "Inception FID" in md and "classifier-feature" not in md
    ident = json.loads((root / "study" / "study_config.json").read_text())["identity"]
    assert ident["scoring"]["inception"].endswith(".pth")
    # one (cell, seed) per job, then --report-only merges what the jobs wrote (no settings needed)
    (root / "study" / "study.md").unlink()
    (root / "study" / "cells.json").unlink()
    assert main(["study", "--out", str(root / "study"), "--report-only"]) == 0
    rows = json.loads((root / "study" / "cells.json").read_text())["rows"]
    ode = [r for r in rows if r["cell"] == "gvp-velocity" and r["eval"] == "ode"]
    assert len(ode) == 1 and ode[0]["n_seeds"] == 2 and ode[0]["seeds"] == "0 1"
    assert "finished (cell: seeds): {'gvp-velocity': 2}" in (root / "study" / "study.md").read_text()


def test_dry_run_prints_units_and_cost(latent_setup, capsys):
    root = latent_setup
    assert main(_argv(root, "--dry-run")) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("sit study --out")]
    assert len(lines) == 2 and lines[0].endswith("--only gvp-velocity:0") and "--latents" in lines[0]
    assert "PFLOP" in out and "images seen" in out and "--report-only" in out
    assert not (root / "study-dry").exists()


def test_scoring_flags_need_latents(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "s"), "--dinov2", str(tmp_path), "--list"]) == 2
    assert "--dinov2 applies to --latents / --data studies only" in capsys.readouterr().err


def test_train_progress_lines():
    from sit.study.run import _train_progress

    lines = []
    cb = _train_progress("  x s0", 100, lines.append)
    for step in range(1, 101):
        cb(step)
    assert lines[0] == "  x s0: training step 10/100" or lines[0].startswith("  x s0: training step 10/100 (")
    assert lines[-1].startswith("  x s0: training step 100/100 (") and "ETA" not in lines[-1]
    assert 1 <= len(lines) <= 11


def test_study_decodes_in_the_latent_space_its_cells_trained_in(latent_setup):
    """A latent study decodes with the index's space (scale, shift, normalisation), and the base's
    vae_scale / vae_shift override it as they override training (not the VAE config's default)."""
    import dataclasses

    from sit.data.latents import index_space, read_index
    from sit.study.cells import DEFAULT_BUDGET, select_cells
    from sit.study.run import Study, study_base
    from sit.study.scoring import study_decoder

    root = latent_setup
    base, mc = study_base({"latents": str(root / "latents")})
    study = Study(root / "nostudy", base, mc, DEFAULT_BUDGET, select_cells("gvp-velocity"))
    vae = study_decoder(study, str(root / "vae"))
    assert vae.space == index_space(read_index(str(root / "latents")))
    over = dataclasses.replace(study, base=dataclasses.replace(base, vae_scale=0.5, vae_shift=0.25))
    vae = study_decoder(over, str(root / "vae"))
    assert (vae.space.scale, vae.space.shift) == (0.5, 0.25)
    z = torch.randn(2, *read_index(str(root / "latents"))["latent_shape"])
    assert torch.equal(vae.space.to_vae(z), z / 0.5 + 0.25)
