"""REPA from pre-extracted latents: `sit extract --pixels` stores the centre crops beside the latents,
a mirrored latent comes with the mirrored image, `sit train --latents DIR --repa-encoder ENC` needs no
VAE and resumes exactly; the encoder is identified and validated before the run folder exists."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from sit.cli import main  # noqa: E402
from sit.config import ModelConfig, TrainConfig  # noqa: E402
from sit.data.imagefolder import ImageFolderDataset  # noqa: E402
from sit.data.latents import LatentShardDataset  # noqa: E402
from sit.train import train  # noqa: E402

MODEL = ModelConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=2,
                    learn_sigma=False, class_dropout_prob=0.1)


def _images(root: Path, n: int = 6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):  # non-square, so the ADM crop resizes and cuts
            Image.fromarray(rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _dinov2(folder: Path, width: int = 16, seed: int = 0) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=width, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=2, image_size=8)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An image folder, a tiny random VAE and DINOv2, and extractions with and without pixels."""
    from sit.vae import VAE

    root = tmp_path_factory.mktemp("repa_lat")
    _images(root / "imgs")
    VAE.tiny_random(0).model.save_pretrained(root / "vae")
    _dinov2(root / "dino")
    base = ["extract", "--data", str(root / "imgs"), "--vae", str(root / "vae"), "--image-size", "16",
            "--shard-size", "5", "--num-workers", "0", "--no-progress", "--threads", "1"]
    assert main([*base, "--out", str(root / "lat_px"), "--pixels"]) == 0
    assert main([*base, "--out", str(root / "lat")]) == 0
    return root


def test_extract_pixels_stores_the_centre_crop_and_a_mirrored_latent_gets_the_mirrored_image(world, capsys):
    from sit.data.latents import to_uint8
    from sit.vae import VAE

    out = world / "lat_px"
    index = json.loads((out / "index.json").read_text())
    assert index["pixels"]["shape"] == [3, 16, 16] and "pixels" not in json.loads((world / "lat" / "index.json").read_text())
    ds = ImageFolderDataset(world / "imgs", 16)
    stored = np.concatenate([np.load(out / f"shard-{s:06d}.pixels.npy") for s in range(3)])
    assert stored.dtype == np.uint8 and stored.shape == (12, 3, 16, 16)
    for i in range(12):  # the exact 8-bit centre crop, and x / 127.5 - 1 gives back the float image bit for bit
        img, _ = ds.load(i)
        assert np.array_equal(stored[i], to_uint8(img))
        assert torch.equal(torch.from_numpy(stored[i]).float().div_(127.5).sub_(1.0), img)

    vae = VAE.from_pretrained(str(world / "vae"), device="cpu")
    lat = LatentShardDataset(out, sample=False, pixels=True)
    seen = set()
    for epoch in range(4):
        lat.set_epoch(epoch)
        for i in range(12):
            z, y, px = lat[i]
            m = lat.moments(i)
            o = 0 if np.array_equal(z.numpy(), lat.space.to_network(m[0, 0].astype(np.float32))) else 1
            assert np.array_equal(z.numpy(), lat.space.to_network(m[o, 0].astype(np.float32)))
            assert torch.equal(px, torch.from_numpy(stored[i][:, :, ::-1].copy() if o else stored[i]))
            seen.add(o)
            if epoch == 0 and i < 4:  # the pair agrees: the VAE of the image given is the latent given
                mean, _ = vae.encode_moments(px.float().div(127.5).sub(1.0)[None])
                assert torch.allclose(mean[0], torch.from_numpy(m[o, 0].astype(np.float32)), atol=2e-3)
    assert seen == {0, 1}  # both orientations were drawn and checked

    capsys.readouterr()
    assert main(["extract", "--out", str(out), "--check"]) == 0
    assert "pixels [3, 16, 16] uint8" in capsys.readouterr().out


def test_extract_pixels_resumes_and_refuses_mixing(world, tmp_path, capsys):
    import shutil

    out = tmp_path / "lat"
    shutil.copytree(world / "lat_px", out)
    (out / "shard-000001.pixels.npy").unlink()   # a shard without its images is not finished
    from sit.data.latents import check_extraction

    assert check_extraction(out)[1] == [1]
    base = ["extract", "--data", str(world / "imgs"), "--vae", str(world / "vae"), "--image-size", "16",
            "--shard-size", "5", "--num-workers", "0", "--no-progress", "--out", str(out)]
    before = (out / "shard-000000.pixels.npy").stat().st_mtime_ns
    assert main([*base, "--pixels"]) == 0
    assert check_extraction(out)[1] == [] and (out / "shard-000000.pixels.npy").stat().st_mtime_ns == before
    assert np.array_equal(np.load(out / "shard-000001.pixels.npy"), np.load(world / "lat_px" / "shard-000001.pixels.npy"))
    np.save(out / "shard-000002.pixels.npy", np.load(out / "shard-000002.pixels.npy").astype(np.float32))
    with pytest.raises(ValueError, match=r"shard-000002.pixels.npy' holds float32 \(2, 3, 16, 16\), not the uint8"):
        LatentShardDataset(out, pixels=True)   # every reader checks the images' type and shape
    capsys.readouterr()
    assert main(base) == 2  # the same folder without --pixels: other settings
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pixels" in err


def _cfg(world, out, **kw) -> TrainConfig:
    base = dict(out=str(out), latents=str(world / "lat_px"), repa_encoder=str(world / "dino"), repa_proj_dim=8,
                steps=4, global_batch=4, lr=3e-3, log_every=1, ckpt_every=2, keep_last=5, ema_decay=0.9,
                quality=False, samples_per_class=1, sample_steps=2, progress=False, num_workers=0, cfg_scale=1.0,
                threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "img_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_repa_trains_from_latents_without_a_vae_and_resumes_exactly(world, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from sit import vae as vae_mod

    def no_vae(*a, **k):
        raise AssertionError("REPA from latents with pixels must not load a VAE")

    monkeypatch.setattr(vae_mod.VAE, "from_pretrained", classmethod(no_vae))
    ref = train(_cfg(world, tmp_path / "ref"), MODEL)
    recs = _records(ref.run_dir)
    assert len(recs) == 4 and all(-1.0 <= r["loss_repa"] <= 1.0 for r in recs)
    data = json.loads((ref.run_dir / "run_config.json").read_text())["data"]
    assert data["repa_encoders"][0]["name"] == str(world / "dino") and len(data["repa_encoders"][0]["sha256"]) == 64

    part = train(_cfg(world, tmp_path / "part", steps=2), MODEL)
    train(resume=part.run_dir, steps=4)
    assert _records(part.run_dir) == recs
    for name in ("model", "ema", "objective"):
        a = load_file(str(ref.run_dir / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        b = load_file(str(part.run_dir / "checkpoints" / "step-0000004" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_latents_without_pixels_are_refused_for_repa_before_the_run_folder(world, tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--latents", str(world / "lat"), "--repa-encoder", str(world / "dino"), "--steps", "1",
                 "--out", str(run), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "`sit extract` and --pixels" in err and "--repa-encoder" in err
    assert not run.exists()


def _refused(argv, run: Path, capsys, *needles) -> str:
    capsys.readouterr()
    assert main(["train", *argv, "--steps", "1", "--out", str(run), "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(n in err for n in needles), err
    assert not run.exists()  # refused before the run folder is made
    return err


def test_bad_encoders_are_one_line_before_the_run_folder(world, tmp_path, capsys):
    import shutil

    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(tmp_path / "bert")
    _refused(["--repa-encoder", str(tmp_path / "bert")], tmp_path / "r1", capsys, "'bert' model, not a DINOv2")

    trunc = tmp_path / "trunc"
    shutil.copytree(world / "dino", trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    _refused(["--repa-encoder", str(trunc)], tmp_path / "r2", capsys, "truncated", "--repa-encoder")

    wide = tmp_path / "wide"
    shutil.copytree(world / "dino", wide)
    conf = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**conf, "hidden_size": 24}))
    _refused(["--repa-encoder", str(wide)], tmp_path / "r3", capsys, "16 wide but config.json says hidden_size 24")

    bad = tmp_path / "badconf"
    shutil.copytree(world / "dino", bad)
    (bad / "config.json").write_text("{not json")
    _refused(["--repa-encoder", str(bad)], tmp_path / "r4", capsys, "config.json is unreadable")

    _refused(["--repa-encoder", str(world / "dino"), "--repa-depth", "9"], tmp_path / "r5", capsys,
             "--repa-depth 9 exceeds the network's 4 blocks")
    _refused(["--repa-encoder", "digits-cnn", "--repa-proj-dim", "1000000000"], tmp_path / "r6", capsys,
             "--repa-proj-dim must be an integer in [1, 16384]")
    _refused(["--repa-encoder", "digits-cnn", "--repa-coeff", "inf"], tmp_path / "r7", capsys,
             "--repa-coeff must be a finite number >= 0 (got inf)")


def test_truncated_weights_behind_a_good_header_are_one_line(world, tmp_path):
    """transformers' own loading errors (here: a weights file it cannot read) become one line too."""
    import shutil

    from sit.config import ConfigError
    from sit.train.repa import Dinov2Encoder

    enc = tmp_path / "dino"
    shutil.copytree(world / "dino", enc)
    (enc / "model.safetensors").unlink()
    (enc / "pytorch_model.bin").write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(ConfigError, match="is not a loadable Dinov2Model") as e:
        Dinov2Encoder(str(enc), 16, torch.device("cpu"))
    assert len(str(e.value).splitlines()) == 1


def test_resume_with_another_encoder_behind_the_same_path_is_refused(world, tmp_path):
    import shutil

    from sit.config import ConfigError

    enc = tmp_path / "enc"
    shutil.copytree(world / "dino", enc)
    part = train(_cfg(world, tmp_path / "run", steps=2, repa_encoder=str(enc)), MODEL)
    shutil.rmtree(enc)
    with pytest.raises(FileNotFoundError, match="no DINOv2 folder"):   # gone: said as such
        train(resume=part.run_dir, steps=4)
    _dinov2(enc, seed=1)  # another model, same path, same shapes
    with pytest.raises(ConfigError, match="holds another model than the run started with"):
        train(resume=part.run_dir, steps=4)
    assert not (part.run_dir / "checkpoints" / "step-0000004").exists()


def test_repa_from_latents_two_process_ddp_equals_one_process(world, tmp_path):
    from safetensors.torch import load_file
    from tiny_cli import train_two_processes

    flags = ["--latents", str(world / "lat_px"), "--repa-encoder", str(world / "dino"), "--repa-proj-dim", "8",
             "--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--patch-size", "2", "--no-learn-sigma",
             "--batch", "4", "--steps", "2", "--lr", "3e-3", "--log-every", "1", "--ckpt-every", "2", "--ema", "0.9",
             "--no-quality", "--samples-per-class", "1", "--sample-steps", "2", "--cfg-scale", "1", "--no-progress",
             "--threads", "1", "--num-workers", "0", "--device", "cpu"]
    one = tmp_path / "one"
    assert main(["train", "--out", str(one), *flags]) == 0
    ddp = tmp_path / "ddp"
    p = train_two_processes(ddp, flags, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("model", "objective"):
        a = load_file(str(ddp / "checkpoints" / "step-0000002" / f"{name}.safetensors"))
        b = load_file(str(one / "checkpoints" / "step-0000002" / f"{name}.safetensors"))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5, name
    ra, rb = _records(ddp), _records(one)
    assert [r["loss_repa"] for r in ra] == pytest.approx([r["loss_repa"] for r in rb], rel=1e-5)


def test_a_run_records_its_preset_and_info_names_the_sampling_preset(world, tmp_path, capsys):
    res = train(_cfg(world, tmp_path / "r", steps=1, ckpt_every=1, preset="repa-sit-xl2"), MODEL)
    assert json.loads((res.run_dir / "run_config.json").read_text())["train"]["preset"] == "repa-sit-xl2"
    capsys.readouterr()
    assert main(["info", str(res.run_dir)]) == 0
    assert "preset       repa-sit-xl2 (its published samples: sit sample --preset repa-sit-xl2)" in capsys.readouterr().out


def test_stored_pixels_reach_the_encoder_as_the_image_folder_path_gives_them(world):
    """The same (seed, epoch, item) mirrors the same images in both sources, so REPA's encoder sees
    bit-identical images from `--latents` (stored pixels) and from `--data --vae`."""
    from sit.train.data import StepSampler, build_data

    dev = torch.device("cpu")
    common = dict(repa_encoder=str(world / "dino"), seed=3, num_workers=0)
    lat = build_data(TrainConfig(latents=str(world / "lat_px"), **common), dev)
    img = build_data(TrainConfig(data=str(world / "imgs"), vae=str(world / "vae"), image_size=16, **common), dev)
    sampler = StepSampler(12, 4, 1, 1, 0, seed=3)
    a = list(lat.batches(sampler, 0, 6, 0, dev, pixels=True))   # 6 steps of 4: two epochs of 12 items
    b = list(img.batches(sampler, 0, 6, 0, dev, pixels=True))
    assert len(a) == len(b) == 6
    mirrored = 0
    for step, ((_, ya, pa), (_, yb, pb)) in enumerate(zip(a, b)):
        assert torch.equal(ya, yb) and torch.equal(pa, pb)
        plain = torch.stack([lat.dataset.image(int(i)) for i in sampler.indices(step, 0)[1]]).float() / 127.5 - 1
        mirrored += sum(not torch.equal(p, q) for p, q in zip(pa, plain))
    assert 0 < mirrored < 24   # both orientations were drawn
