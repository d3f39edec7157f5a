"""sit.vae on a tiny randomly initialised AutoencoderKL (no downloads)."""

import sys

import pytest
import torch

pytest.importorskip("diffusers")

from sit.vae import SCALE_FACTOR, VAE  # noqa: E402


@pytest.fixture(scope="module")
def vae():
    return VAE.tiny_random(0, batch_size=3)


def images(b=5, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def test_tiny_config(vae):
    assert vae.downsample == 2 and vae.latent_channels == 4
    assert vae.latent_shape(16) == (4, 8, 8)
    assert vae.scale_factor == SCALE_FACTOR == 0.18215
    with pytest.raises(ValueError, match="divisible"):
        vae.latent_shape(15)


def test_tiny_random_is_seeded():
    a, b, c = VAE.tiny_random(1), VAE.tiny_random(1), VAE.tiny_random(2)
    x = images(2)
    assert torch.equal(a.encode_moments(x)[0], b.encode_moments(x)[0])
    assert not torch.equal(a.encode_moments(x)[0], c.encode_moments(x)[0])


def test_encode_moments_shapes_and_batching(vae):
    x = images(5)
    mean, std = vae.encode_moments(x)
    assert mean.shape == std.shape == (5, 4, 8, 8)
    assert mean.dtype == std.dtype == torch.float32
    assert (std > 0).all()
    # chunks of 3 (batch_size) give the posterior of the whole batch at once, item by item
    dist = vae.model.encode(x).latent_dist
    torch.testing.assert_close(mean, dist.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, dist.std, rtol=1e-5, atol=1e-6)


def test_encode_scaling_and_sampling(vae):
    x = images(4)
    mean, std = vae.encode_moments(x)
    torch.testing.assert_close(vae.encode(x, sample=False), mean * 0.18215)
    g = torch.Generator().manual_seed(3)
    z = vae.encode(x, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(mean.shape, generator=g)
    torch.testing.assert_close(z, (mean + std * noise) * 0.18215)


def test_posterior_sample_statistics(vae):
    """Monte Carlo: encode(x) over many draws has mean 0.18215 * mean and std 0.18215 * std."""
    x = images(1)
    mean, std = vae.encode_moments(x)
    n = 1000
    big = VAE(vae.model, batch_size=n)  # one forward pass of n copies
    z = big.encode(x.expand(n, -1, -1, -1), generator=torch.Generator().manual_seed(0)) / 0.18215  # (n, 4, 8, 8)
    r = (z - mean[0]) / std[0]
    assert abs(float(r.mean())) < 5 / (n * r[0].numel()) ** 0.5
    assert abs(float(r.var()) - 1) < 5 * (2 / (n * r[0].numel())) ** 0.5
    assert (r.mean(0).abs() < 5 / n**0.5).all()


def test_decode_shapes_range_and_scale(vae):
    z = torch.randn(5, 4, 8, 8)
    out = vae.decode(z)
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    raw = vae.decode(z, clamp=False)
    ref = vae.model.decode(z / 0.18215).sample
    torch.testing.assert_close(raw, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, ref.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_bad_shapes(vae):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vae.encode(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        vae.encode(torch.zeros(2, 3, 15, 16))
    with pytest.raises(ValueError, match="latents must have shape"):
        vae.decode(torch.zeros(2, 3, 8, 8))


def test_half_precision_dtype():
    v = VAE.tiny_random(0, dtype="bf16")
    assert v.model.dtype == torch.bfloat16
    mean, std = v.encode_moments(images(2))
    assert mean.dtype == torch.float32  # outputs are float32 whatever the compute dtype
    ref, _ = VAE.tiny_random(0).encode_moments(images(2))
    torch.testing.assert_close(mean, ref, rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match="unknown dtype"):
        VAE.tiny_random(0, dtype="fp8")


def test_load_from_local_folder(vae, tmp_path):
    vae.model.save_pretrained(tmp_path / "vae")
    loaded = VAE.from_pretrained(str(tmp_path / "vae"))
    x = images(2)
    torch.testing.assert_close(loaded.encode_moments(x)[0], vae.encode_moments(x)[0])


def test_missing_vae_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as e:
        VAE.from_pretrained("ema")
    msg = str(e.value)
    assert "config.json" in msg and "diffusion_pytorch_model.safetensors" in msg
    assert str(tmp_path / "hub" / "models--stabilityai--sd-vae-ft-ema") in msg
    with pytest.raises(FileNotFoundError, match="config.json"):
        VAE.from_pretrained(str(tmp_path / "nothing-here"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VAE.from_pretrained(str(tmp_path / "empty"))


def test_missing_diffusers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r'pip install "sit\[vae\]"'):
        VAE.tiny_random(0)


def test_diffusers_is_imported_lazily():
    import subprocess

    code = "import sys, sit.vae, sit.data.latents, sit.data.imagefolder; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
