"""Provenance of latents and sample sets: the VAE's weights hash (not only its path) in the latent
index and in a sample set's identity."""

import numpy as np
import pytest
import torch
from PIL import Image

from sit.generate.spec import SampleSpec
from sit.vae import VAE


def test_vae_weights_sha256_names_the_weights():
    a, a2, b = VAE.tiny_random(0), VAE.tiny_random(0), VAE.tiny_random(1)
    assert a.weights_sha256 == a2.weights_sha256 and a.weights_sha256 != b.weights_sha256
    assert len(a.weights_sha256) == 64


def test_latent_index_refuses_a_swapped_vae(tmp_path):
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents, read_index

    for i in range(3):
        (tmp_path / "img" / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "img" / "c" / f"{i}.png")
    ds = ImageFolderDataset(tmp_path / "img", 16)
    a = VAE(VAE.tiny_random(0).model, name="/models/vae")
    b = VAE(VAE.tiny_random(1).model, name="/models/vae")    # other weights behind the same path
    extract_latents(ds, a, tmp_path / "lat", shard_size=2, batch_size=2)
    assert read_index(tmp_path / "lat")["vae_sha256"] == a.weights_sha256
    assert extract_latents(ds, a, tmp_path / "lat", shard_size=2).shards_written == []   # same VAE: resumes
    with pytest.raises(ValueError, match="vae_sha256"):
        extract_latents(ds, b, tmp_path / "lat", shard_size=2)


def test_sample_spec_identity_holds_the_vae_hash():
    pixel = SampleSpec(checkpoint="x")
    assert "vae_sha256" not in pixel.to_json()   # sets made before the field keep their identity
    a = SampleSpec(checkpoint="x", vae="/models/vae", vae_sha256="a" * 64)
    b = SampleSpec(checkpoint="x", vae="/models/vae", vae_sha256="b" * 64)
    assert a.to_json()["vae_sha256"] == "a" * 64 and a.sha256() != b.sha256()


def test_measurements_read_an_extract_folder(tmp_path):
    from sit.commands.likelihood import unit_words
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.generate.evaldata import load_eval_data

    for i in range(4):
        (tmp_path / "img" / ("a" if i < 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(tmp_path / "img" / ("a" if i < 2 else "b") / f"{i}.png")
    vae = VAE.tiny_random(0)
    extract_latents(ImageFolderDataset(tmp_path / "img", 16), vae, tmp_path / "lat", shard_size=3, batch_size=2)
    x, y = load_eval_data(str(tmp_path / "lat"))
    assert x.shape == (4, 4, 8, 8) and y.tolist() == [0, 0, 1, 1]
    x2, _ = load_eval_data(str(tmp_path / "lat"))
    assert (x == x2).all()                                # one fixed posterior draw
    assert unit_words(False, 4, str(tmp_path / "lat")).startswith("latent bits/dim")
    assert unit_words(False, 1, "digits") == "bits/dim (continuous, data in [-1, 1])"
    assert unit_words(True, 3, "x.npz").startswith("bits/dim (8-bit")


@pytest.mark.parametrize("flags, word", [
    (["--w", "sigma"], "--w applies to SDE methods only"),
    (["--method", "euler", "--last-step", "tweedie"], "--last-step applies to SDE methods only"),
    (["--method", "dopri5", "--num-steps", "20"], "--num-steps does not apply to the adaptive solver dopri5"),
    (["--method", "heun", "--atol", "1e-5"], "--atol applies to adaptive solvers only"),
])
def test_flags_a_method_ignores_are_refused(tmp_path, capsys, flags, word):
    from sit.cli import main

    assert main(["sample", "--ckpt", str(tmp_path / "none"), "--out", str(tmp_path / "o"), *flags]) == 2
    assert word in capsys.readouterr().err


@pytest.mark.slow   # fid-helper Inception on CPU: minutes on a loaded machine
def test_sweep_reference_from_an_extract_folder(tmp_path):
    from sit.commands.sweep import _inception_quality
    from sit.data.imagefolder import ImageFolderDataset
    from sit.data.latents import extract_latents
    from sit.evaluate.inception import fid_helper_weights_path

    try:
        fid_helper_weights_path()
    except FileNotFoundError:
        pytest.skip("needs the fid-helper Inception weights")
    for i in range(4):
        (tmp_path / "img" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / "img" / "a" / f"{i}.png")
    vae = VAE.tiny_random(0)
    extract_latents(ImageFolderDataset(tmp_path / "img", 16), vae, tmp_path / "lat", shard_size=4, batch_size=2)
    quality = _inception_quality(str(tmp_path / "lat"), "cpu", vae.decode)
    from sit.generate.evaldata import load_extracted

    lat, _ = load_extracted(tmp_path / "lat")
    same = quality(vae.decode(lat), None)["fid"]            # the reference itself: FID 0 (sqrtm of a rank-3
    assert abs(same) < 1e-3                                 # 2048-d product: ~1e-4 numerical error)
    assert quality(torch.rand(4, 3, 16, 16) * 2 - 1, None)["fid"] > 100 * max(abs(same), 1e-3)
