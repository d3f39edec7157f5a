"""`sit tiny-vae`: a random-weight VAE folder with the SD VAE's geometry, marked as random, that
`sit extract` takes; fresh folders only, bad input refused in one line before anything is written."""

from __future__ import annotations

import json
import logging

import pytest

from sit.cli import main


def _run(*argv):
    return main(["tiny-vae", *argv, "--threads", "1"])


def test_tiny_vae_has_the_sd_geometry_says_it_is_random_and_extract_takes_it(tmp_path, capsys, caplog):
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import read_index
    from sit.vae import VAE

    vae_dir, img_dir = tmp_path / "vae", tmp_path / "png"
    assert _run("--out", str(vae_dir), "--example-images", str(img_dir), "--per-class", "2") == 0
    assert "RANDOM" in capsys.readouterr().out
    cfg = json.loads((vae_dir / "config.json").read_text())
    assert cfg["_sit_random_weights"] is True and cfg["scaling_factor"] == 0.18215
    assert cfg["block_out_channels"] == [8, 16, 32, 32] and cfg["latent_channels"] == 4
    assert "RANDOM" in (vae_dir / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with caplog.at_level(logging.WARNING, logger="sit.vae"):
        vae = VAE.from_pretrained(str(vae_dir))
    assert "RANDOM weights" in caplog.text
    assert vae.downsample == 8 and vae.latent_shape(64) == (4, 8, 8) and vae.scale_factor == 0.18215
    ds = ImageFolderDataset(str(img_dir), 64)
    assert len(ds) == 20 and ds.num_classes == 10 and tuple(ds[0][0].shape) == (3, 64, 64)

    lat = tmp_path / "latents"
    assert main(["extract", "--data", str(img_dir), "--out", str(lat), "--vae", str(vae_dir), "--image-size", "64",
                 "--num-workers", "0", "--no-progress", "--threads", "1"]) == 0
    index = read_index(str(lat))
    assert index["num_files"] == 20 and list(index["latent_shape"]) == [4, 8, 8]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    from sit.io import sha256_file

    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert _run("--out", str(tmp_path / name), "--seed", seed, "--widths", "4,8") == 0
    h = {n: sha256_file(tmp_path / n / "diffusion_pytorch_model.safetensors") for n in "abc"}
    assert h["a"] == h["b"] != h["c"]


@pytest.mark.parametrize("argv, words", [
    (["--widths", "8,x"], "--widths takes comma-separated integers"),
    (["--widths", "8,16,32,32,64"], "widths must be 1 to 4 integers"),
    (["--per-class", "0", "--example-images", "PNG"], "--per-class must be >= 1"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, words):
    argv = [a.replace("PNG", str(tmp_path / "png")) for a in argv]
    assert _run("--out", str(tmp_path / "vae"), *argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_written_into(tmp_path, capsys):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "mine.txt").write_text("keep")
    assert _run("--out", str(tmp_path / "vae"), "--example-images", str(tmp_path / "png")) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae"]   # the example folder was not started either
    assert [p.name for p in (tmp_path / "vae").iterdir()] == ["mine.txt"]
    assert _run("--out", str(tmp_path / "vae2"), "--example-images", str(tmp_path / "vae")) == 2
    assert not (tmp_path / "vae2").exists()
