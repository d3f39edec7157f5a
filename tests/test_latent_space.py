"""The VAE's latent space (issue 18): its own scaling_factor / shift_factor, overridable, recorded
in the latent index and the run, and used (not the decode VAE's default) when decoding samples."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from sit.cli import main  # noqa: E402
from sit.config import ConfigError, TrainConfig  # noqa: E402
from sit.data.latents import LatentShardDataset, index_space  # noqa: E402
from sit.vae import SCALE_FACTOR, VAE, LatentSpace, decode_space  # noqa: E402

TINY_TRAIN = ["--depth", "1", "--hidden-size", "16", "--num-heads", "1", "--patch-size", "2", "--batch", "8",
              "--steps", "2", "--log-every", "1", "--ckpt-every", "2", "--num-workers", "0", "--no-progress",
              "--threads", "1", "--sample-steps", "2", "--samples-per-class", "2", "--no-quality"]


def tiny_autoencoder(scaling_factor=0.18215, shift_factor=None, seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=4, norm_num_groups=8, sample_size=16, scaling_factor=scaling_factor,
                         shift_factor=shift_factor)


def images(b=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A VAE folder whose config says scaling_factor 0.5, shift_factor 0.1; a default one (0.18215,
    no shift) with the same weights; a 2-class folder of 16 images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ls")
    tiny_autoencoder(0.5, 0.1).save_pretrained(root / "vae_shift")
    tiny_autoencoder().save_pretrained(root / "vae_sd")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / "imgs" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "imgs" / c / f"{i}.png")
    return root


def extract(folders, out, *extra):
    return main(["extract", "--data", str(folders / "imgs"), "--out", str(out), "--image-size", "16",
                 "--shard-size", "5", "--num-workers", "0", "--no-progress", *extra])


# ------------------------------------------------------------------------------------------------ the space
def test_space_round_trip_record_and_bad_values():
    sp = LatentSpace(0.5, 0.1, mean=(0.2, -0.1), std=(1.5, 0.5))
    z = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    x = sp.to_network(z)
    torch.testing.assert_close(x, ((z - 0.1) * 0.5 - torch.tensor([0.2, -0.1]).view(2, 1, 1))
                               / torch.tensor([1.5, 0.5]).view(2, 1, 1))
    torch.testing.assert_close(sp.to_vae(x), z)
    assert LatentSpace.from_record(sp.record()) == sp
    assert sp.to_network(z.numpy()).dtype == np.float32
    # the defaults are sit's historic arithmetic, bit for bit, and record only the scale
    assert torch.equal(LatentSpace().to_network(z), z * 0.18215) and torch.equal(LatentSpace().to_vae(z), z / 0.18215)
    assert LatentSpace().record() == {"scale_factor": SCALE_FACTOR}
    assert LatentSpace.from_record(None) == LatentSpace.from_record({}) == LatentSpace(SCALE_FACTOR, 0.0)
    for bad, msg in (({"scale": 0.0}, "> 0"), ({"scale": float("nan")}, "finite"), ({"shift": float("inf")}, "finite"),
                     ({"mean": (0.0,)}, "both"), ({"mean": (0.0,), "std": (0.0,)}, "std must be > 0")):
        with pytest.raises(ValueError, match=msg):
            LatentSpace(**bad)
    with pytest.raises(ValueError, match="channels"):
        sp.to_network(torch.zeros(1, 3, 2, 2))


def test_vae_reads_scale_and_shift_from_its_config_and_flags_override(folders):
    vae = VAE.from_pretrained(str(folders / "vae_shift"))
    assert (vae.scale_factor, vae.shift_factor) == (0.5, 0.1)
    x = images()
    mean, std = vae.encode_moments(x)
    assert torch.equal(vae.encode(x, sample=False), (mean - 0.1) * 0.5)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(mean.shape, generator=g)
    assert torch.equal(vae.encode(x, generator=torch.Generator().manual_seed(3)), (mean + std * noise - 0.1) * 0.5)
    lat = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vae.model.decode(lat / 0.5 + 0.1).sample.clamp(-1, 1)
    assert torch.equal(vae.decode(lat), ref)  # decode inverts the scale and shift
    over = VAE.from_pretrained(str(folders / "vae_shift"), scale_factor=0.25, shift_factor=-0.2)
    assert (over.scale_factor, over.shift_factor) == (0.25, -0.2)
    assert over.config_space == LatentSpace(0.5, 0.1)
    sd = VAE.from_pretrained(str(folders / "vae_sd"))  # config shift_factor None -> 0, scale 0.18215
    assert (sd.scale_factor, sd.shift_factor) == (SCALE_FACTOR, 0.0)


def test_decode_space_refuses_a_contradicting_vae_unless_overridden():
    run = LatentSpace(0.5, 0.1)
    with pytest.raises(ValueError, match=r"scaling_factor 0.18215 contradicts .* recorded 0.5") as e:
        decode_space(LatentSpace(), run, vae_name="v")
    assert "\n" not in str(e.value) and "give vae_scale 0.5" in str(e.value)   # the library names the field
    from sit.commands._errors import in_flags

    assert "give --vae-scale 0.5" in str(in_flags(e.value, "sample", {"sample": {"--vae-scale"}}))   # the CLI its flag
    with pytest.raises(ValueError, match="shift_factor 0 contradicts"):
        decode_space(LatentSpace(0.5, 0.0), run)
    assert decode_space(LatentSpace(0.5, 0.1), run) == run
    assert decode_space(LatentSpace(), run, 0.3, 0.0) == LatentSpace(0.3, 0.0)  # the overrides win


# ------------------------------------------------------------------------------------------------ extraction
def test_extract_records_the_vae_space_and_latents_use_it_exactly(folders, tmp_path):
    out = tmp_path / "lat"
    assert extract(folders, out, "--vae", str(folders / "vae_shift")) == 0
    index = json.loads((out / "index.json").read_text())
    assert (index["scale_factor"], index["shift_factor"]) == (0.5, 0.1)
    for sample, flip in ((False, False), (True, False), (True, True)):
        ds = LatentShardDataset(out, flip=flip, sample=sample, seed=4)
        for i in (0, 7, 15):
            m = ds.moments(i)
            rng = np.random.default_rng([4, 0, i])
            o = int(rng.integers(2)) if flip else 0
            z = m[o, 0].astype(np.float32)
            if sample:
                z = z + m[o, 1].astype(np.float32) * rng.standard_normal(z.shape, dtype=np.float32)
            want = (z - np.float32(0.1)) * np.float32(0.5)
            assert np.array_equal(ds[i][0].numpy(), want)
    # the flags override the VAE config, and are recorded
    over = tmp_path / "over"
    assert extract(folders, over, "--vae", str(folders / "vae_shift"), "--vae-scale", "0.25", "--vae-shift", "-0.2") == 0
    index = json.loads((over / "index.json").read_text())
    assert (index["scale_factor"], index["shift_factor"]) == (0.25, -0.2)
    ds = LatentShardDataset(over, flip=False, sample=False)
    assert np.array_equal(ds[3][0].numpy(), (ds.moments(3)[0, 0].astype(np.float32) + np.float32(0.2)) * np.float32(0.25))
    # resuming into the folder with another scale is refused, naming the field
    with pytest.raises(ValueError, match="scale_factor"):
        from sit.data.imagefolder import ImageFolderDataset
        from sit.data.latents import extract_latents

        extract_latents(ImageFolderDataset(folders / "imgs", 16), VAE.from_pretrained(str(folders / "vae_shift")),
                        over, shard_size=5)
    assert extract(folders, over, "--vae", str(folders / "vae_shift"), "--vae-scale", "0") == 2


def test_an_index_without_the_fields_reads_as_the_sd_scale(folders, tmp_path, capsys):
    """Indexes written before sit recorded the shift (or the scale) mean 0.18215 and shift 0."""
    out = tmp_path / "old"
    assert extract(folders, out, "--vae", str(folders / "vae_sd")) == 0
    index = json.loads((out / "index.json").read_text())
    assert (index["scale_factor"], index["shift_factor"]) == (SCALE_FACTOR, 0.0)
    del index["shift_factor"]  # as sit wrote it before this change
    (out / "index.json").write_text(json.dumps(index))
    assert index_space(index) == LatentSpace(SCALE_FACTOR, 0.0)
    ds = LatentShardDataset(out, flip=False, sample=False)
    assert np.array_equal(ds[2][0].numpy(), ds.moments(2)[0, 0].astype(np.float32) * np.float32(0.18215))
    del index["scale_factor"]
    (out / "index.json").write_text(json.dumps(index))
    assert LatentShardDataset(out, flip=False, sample=False).space == LatentSpace(SCALE_FACTOR, 0.0)
    # resuming such a folder with the same VAE is the same extraction (nothing refused, nothing redone)
    capsys.readouterr()
    assert extract(folders, out, "--vae", str(folders / "vae_sd")) == 0
    assert "0 unreadable" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ runs
def test_train_records_the_space_and_sampling_decodes_with_it(folders, tmp_path, capsys):
    lat = tmp_path / "lat"
    assert extract(folders, lat, "--vae", str(folders / "vae_shift")) == 0
    run = tmp_path / "run"
    assert main(["train", "--latents", str(lat), "--vae", str(folders / "vae_shift"), "--out", str(run),
                 *TINY_TRAIN]) == 0
    data = json.loads((run / "run_config.json").read_text())["data"]
    assert (data["scale_factor"], data["shift_factor"]) == (0.5, 0.1) and "latent_norm" not in data
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "x = (z - 0.1) * 0.5, no normalisation" in capsys.readouterr().out
    # sampling decodes with the run's values ...
    s = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--vae", str(folders / "vae_shift"), "--num-samples", "2",
                 "--num-steps", "2", "--out", str(s), "--no-progress", "--threads", "1"]) == 0
    info = json.loads((s / "manifest.json").read_text())
    assert json.dumps(info).count('"vae_scale_factor": 0.5') == 1 and '"vae_shift_factor": 0.1' in json.dumps(info)
    # ... refuses a VAE whose config contradicts them (one line) ...
    capsys.readouterr()
    args = ["sample", "--ckpt", str(run), "--vae", str(folders / "vae_sd"), "--num-samples", "2", "--num-steps", "2",
            "--no-progress", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "contradicts the checkpoint's recorded 0.5" in err and len(err.splitlines()) == 1
    # ... unless overridden (the same weights: the same pixels as decoding with the run's values)
    assert main(args + ["--out", str(tmp_path / "s3"), "--vae-scale", "0.5", "--vae-shift", "0.1"]) == 0
    a, b = np.load(s / "samples.npz")["arr_0"], np.load(tmp_path / "s3" / "samples.npz")["arr_0"]
    assert np.array_equal(a, b)
    # training previews with a contradicting VAE are refused the same way; --vae-scale/--vae-shift accept it
    assert main(["train", "--latents", str(lat), "--vae", str(folders / "vae_sd"), "--out", str(tmp_path / "r2"),
                 *TINY_TRAIN]) == 2
    assert "contradicts the latents" in capsys.readouterr().err


def test_train_on_images_records_the_override(folders, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(folders / "imgs"), "--vae", str(folders / "vae_shift"), "--image-size", "16",
                 "--vae-scale", "0.3", "--out", str(run), *TINY_TRAIN]) == 0
    cfg = json.loads((run / "run_config.json").read_text())
    assert (cfg["data"]["scale_factor"], cfg["data"]["shift_factor"]) == (0.3, 0.1)  # shift from the VAE config
    assert cfg["train"]["vae_scale"] == 0.3 and "vae_shift" not in cfg["train"]
    assert cfg["data"]["vae_config"] == {"scaling_factor": 0.5, "shift_factor": 0.1}  # what the VAE itself says
    # sampling with that VAE is not refused (its config is the one the run used) and decodes with 0.3
    s = tmp_path / "s"
    assert main(["sample", "--ckpt", str(run), "--vae", str(folders / "vae_shift"), "--num-samples", "2",
                 "--num-steps", "2", "--out", str(s), "--no-progress", "--threads", "1"]) == 0
    assert '"vae_scale_factor": 0.3' in (s / "manifest.json").read_text()
    # the same through an extraction with the override: the index keeps the VAE config's values
    lat = tmp_path / "lat"
    assert extract(folders, lat, "--vae", str(folders / "vae_shift"), "--vae-scale", "0.3") == 0
    index = json.loads((lat / "index.json").read_text())
    assert index["vae_config"] == {"scaling_factor": 0.5, "shift_factor": 0.1} and index["scale_factor"] == 0.3
    assert main(["train", "--latents", str(lat), "--vae", str(folders / "vae_shift"), "--out", str(tmp_path / "r2"),
                 *TINY_TRAIN]) == 0
    data = json.loads((tmp_path / "r2" / "run_config.json").read_text())["data"]
    assert data["scale_factor"] == 0.3 and data["vae_config"] == {"scaling_factor": 0.5, "shift_factor": 0.1}


def test_train_config_checks_the_fields():
    with pytest.raises(ConfigError, match="vae_scale must be a finite number > 0"):
        TrainConfig(latents="x", vae_scale=0.0)
    with pytest.raises(ConfigError, match="vae_shift .* embedded"):
        TrainConfig(vae_shift=0.1)
    assert "vae_scale" not in json.loads(__import__("sit.config", fromlist=["to_json"]).to_json(TrainConfig()))


# ------------------------------------------------------------------------------------------------ normalisation
def shard_moments(root):
    import glob

    return np.concatenate([np.load(p) for p in sorted(glob.glob(str(root / "shard-*.moments.npy")))])


@pytest.fixture(scope="module")
def normed(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("normed") / "lat"
    assert extract(folders, out, "--vae", str(folders / "vae_shift"), "--latent-norm", "channel") == 0
    return out


def test_channel_statistics_equal_a_direct_computation(normed):
    index = json.loads((normed / "index.json").read_text())
    stats = index["latent_norm_stats"]
    m = torch.from_numpy(shard_moments(normed)).double()  # (n, [image, mirror], [mean, std], C, h, w)
    assert m.shape[0] == 16
    mean = m[:, :, 0].mean(dim=(0, 1, 3, 4))
    second = (m[:, :, 0] ** 2 + m[:, :, 1] ** 2).mean(dim=(0, 1, 3, 4))  # E[z^2] of z ~ N(mean, std^2)
    torch.testing.assert_close(torch.tensor(stats["mean"], dtype=torch.float64), mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.tensor(stats["std"], dtype=torch.float64), (second - mean**2).sqrt(),
                               rtol=1e-12, atol=1e-12)
    assert stats["count"] == 16 * 2 * 8 * 8
    # in the network's space (after shift 0.1 and scale 0.5) what training draws has mean 0, variance 1
    sp = index_space(index)
    assert sp.mean == tuple((v - 0.1) * 0.5 for v in stats["mean"]) and sp.std == tuple(v * 0.5 for v in stats["std"])
    x_mean = (m[:, :, 0] - 0.1) * 0.5
    x_mean = (x_mean - torch.tensor(sp.mean, dtype=torch.float64).view(-1, 1, 1)) / torch.tensor(sp.std).view(-1, 1, 1)
    x_var = (m[:, :, 1] * 0.5 / torch.tensor(sp.std, dtype=torch.float64).view(-1, 1, 1)) ** 2
    torch.testing.assert_close(x_mean.mean(dim=(0, 1, 3, 4)), torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close((x_mean**2 + x_var).mean(dim=(0, 1, 3, 4)), torch.ones(4, dtype=torch.float64),
                               atol=1e-9, rtol=0)
    # the items: ((z - shift) * scale - mean_c) / std_c, in float32
    ds = LatentShardDataset(normed, flip=False, sample=False)
    z = ds.moments(5)[0, 0].astype(np.float32)
    want = ((z - np.float32(0.1)) * np.float32(0.5) - np.asarray(sp.mean, np.float32).reshape(-1, 1, 1)) \
        / np.asarray(sp.std, np.float32).reshape(-1, 1, 1)
    assert np.array_equal(ds[5][0].numpy(), want)


def test_channel_statistics_do_not_depend_on_the_ranks_and_are_verified(folders, normed, tmp_path, capsys):
    out = tmp_path / "ranks"
    args = ["--vae", str(folders / "vae_shift"), "--latent-norm", "channel", "--world-size", "2"]
    assert extract(folders, out, *args, "--rank", "1") == 0  # before rank 0 wrote index.json
    assert extract(folders, out, *args, "--rank", "0") == 0
    index = json.loads((out / "index.json").read_text())
    assert index["latent_norm_stats"] == json.loads((normed / "index.json").read_text())["latent_norm_stats"]
    # statistics not written yet (a process killed at the end): readers refuse, --check writes them
    del index["latent_norm_stats"]
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="not computed yet.*check mode"):
        LatentShardDataset(out)
    assert main(["extract", "--out", str(out), "--check"]) == 0
    assert "per-channel normalisation: z mean [" in capsys.readouterr().out
    assert LatentShardDataset(out).space == LatentShardDataset(normed).space
    # edited statistics are refused
    index = json.loads((out / "index.json").read_text())
    index["latent_norm_stats"]["std"][0] *= 2
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="disagree with the shard markers"):
        LatentShardDataset(out)
    # the setting is part of the extraction: resuming without it is refused
    with pytest.raises(ValueError, match="latent_norm"):
        from sit.data.imagefolder import ImageFolderDataset
        from sit.data.latents import extract_latents

        extract_latents(ImageFolderDataset(folders / "imgs", 16), VAE.from_pretrained(str(folders / "vae_shift")),
                        normed, shard_size=5)


def test_normalised_run_records_resumes_and_decodes_with_the_inverse(folders, normed, tmp_path, capsys):
    import shutil

    from sit.checkpoints import load
    from sit.generate.run import load_decoder
    from sit.io import to_uint8

    lat = tmp_path / "lat"
    shutil.copytree(normed, lat)

    def train_run(out, *extra):
        return main(["train", "--latents", str(lat), "--vae", str(folders / "vae_shift"), "--out", str(out),
                     *TINY_TRAIN, *extra])

    assert train_run(tmp_path / "r4", "--steps", "4") == 0
    assert train_run(tmp_path / "r", "--steps", "2") == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "4", "--no-progress"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lines4 = [json.loads(x) for x in (tmp_path / "r4" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert len(losses) == 4 and losses == [r["loss"] for r in lines4 if "loss" in r]  # resumed = straight run
    sp = LatentShardDataset(lat).space
    for run in ("r", "r4"):
        norm = json.loads((tmp_path / run / "run_config.json").read_text())["data"]["latent_norm"]
        assert norm == {"kind": "channel", "mean": list(sp.mean), "std": list(sp.std)}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r")]) == 0
    assert "x = (z - 0.1) * 0.5, per-channel normalisation mean [" in capsys.readouterr().out
    # decoding a known tensor: the run's inverse, then the VAE
    _, meta = load(str(tmp_path / "r"))
    vae = load_decoder(str(folders / "vae_shift"), "cpu", meta)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(sp.mean).view(-1, 1, 1), torch.tensor(sp.std).view(-1, 1, 1)
    with torch.no_grad():
        want = vae.model.decode((x * std + mean) / 0.5 + 0.1).sample.clamp(-1, 1)
    assert torch.equal(vae.decode(x), want)
    # sit sample: the saved network-space latents, decoded through the inverse, are the images
    s = tmp_path / "s"
    assert main(["sample", "--ckpt", str(tmp_path / "r"), "--vae", str(folders / "vae_shift"), "--num-samples", "2",
                 "--num-steps", "2", "--out", str(s), "--save-latents", "npy", "--no-progress", "--threads", "1"]) == 0
    z = torch.from_numpy(np.load(s / "latents.npy", allow_pickle=False))
    with torch.no_grad():
        pixels = vae.model.decode((z * std + mean) / 0.5 + 0.1).sample.clamp(-1, 1)
    assert np.array_equal(np.load(s / "samples.npz")["arr_0"], to_uint8(pixels))
    assert "vae_latent_norm" in (s / "manifest.json").read_text()
    # the folder extracted again under the same path (other statistics): resuming is refused in one line
    other = tmp_path / "other"
    tiny_autoencoder(0.5, 0.1, seed=1).save_pretrained(tmp_path / "vae_other")
    assert extract(folders, other, "--vae", str(tmp_path / "vae_other"), "--latent-norm", "channel") == 0
    shutil.rmtree(lat)
    shutil.copytree(other, lat)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "6", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on latents with another mean/std than its data gives now" in err and len(err.splitlines()) == 1
