"""sit.data: ADM centre crop, ImageFolderDataset, latent extraction (shards, ranks, resume) and
LatentShardDataset. Images are tiny PNGs written to a temp dir; the VAE is a tiny random one."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sit.data.imagefolder import CorruptImageError, ImageFolderDataset, center_crop_arr, to_tensor

# ----------------------------------------------------------------------------- centre crop


def arr(im):
    return np.asarray(im)


@pytest.mark.parametrize("w,h", [(300, 200), (100, 60), (17, 40), (16, 16), (64, 33), (33, 64)])
def test_center_crop_flat_colour_is_exact(w, h):
    im = Image.new("RGB", (w, h), (12, 200, 77))
    out = center_crop_arr(im, 16)
    assert out.size == (16, 16) and out.mode == "RGB"
    assert (arr(out) == np.array([12, 200, 77], np.uint8)).all()


def test_center_crop_checkerboards_average_by_box():
    # 64 -> 32 -> 16 by BOX halving (64 >= 2*16, 32 >= 2*16): a 1-pixel checkerboard averages to
    # 127.5 -> 128 exactly at the first halving; a 2-pixel one becomes a 1-pixel one, then 128.
    yy, xx = np.mgrid[:64, :64]
    for block in (1, 2):
        a = np.where(((yy // block + xx // block) % 2 == 1)[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
        out = arr(center_crop_arr(Image.fromarray(a), 16))
        assert out.shape == (16, 16, 3) and (out == 128).all()


def test_center_crop_exact_factor_two_is_one_box_halving():
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    assert np.array_equal(arr(center_crop_arr(im, 16)), arr(im.resize((16, 16), Image.BOX)))
    # and the box average of each 2x2 block (Pillow rounds in fixed point: within 1 grey level)
    ref = a.reshape(16, 2, 16, 2, 3).astype(np.float64).mean((1, 3))
    assert np.abs(arr(center_crop_arr(im, 16)) - ref).max() <= 1


def test_center_crop_window_is_centred_with_floor_offset():
    rng = np.random.default_rng(1)
    for w in (20, 21):  # short side == 16: no resize, offset (w - 16) // 2 = 2
        a = rng.integers(0, 256, (16, w, 3), dtype=np.uint8)
        assert np.array_equal(arr(center_crop_arr(Image.fromarray(a), 16)), a[:, 2:18])
        assert np.array_equal(arr(center_crop_arr(Image.fromarray(a.transpose(1, 0, 2).copy()), 16)),
                              a.transpose(1, 0, 2)[2:18])
    # red left half, blue right half, 64 x 16: the centre 16 columns are 8 red then 8 blue
    a = np.zeros((16, 64, 3), np.uint8)
    a[:, :32, 0] = 255
    a[:, 32:, 2] = 255
    out = arr(center_crop_arr(Image.fromarray(a), 16))
    assert (out[:, :8] == [255, 0, 0]).all() and (out[:, 8:] == [0, 0, 255]).all()


def test_to_tensor_scaling():
    a = np.array([[[0, 255, 51]]], np.uint8)
    t = to_tensor(Image.fromarray(a))
    assert t.shape == (3, 1, 1) and t.dtype == torch.float32
    torch.testing.assert_close(t.flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))


# ----------------------------------------------------------------------------- image folders


def write_png(path, seed, size=(24, 20)):
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path)


def make_folder(root, n_per_class=(4, 3), corrupt=False, truncated=False):
    for c, n in zip(("cat", "dog", "eel"), n_per_class):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n):
            write_png(root / c / f"{i:02d}.png", seed=hash((c, i)) % 1000, size=(24 + i, 20))
    (root / "cat" / "notes.txt").write_text("not an image, ignored by extension")
    os.makedirs(root / ".hidden", exist_ok=True)
    write_png(root / ".hidden" / "x.png", 0)
    if corrupt:
        (root / "cat" / "02b.png").write_bytes(b"this is not a png")
    if truncated:
        write_png(root / "dog" / "00b.png", 7, size=(64, 64))
        data = (root / "dog" / "00b.png").read_bytes()
        (root / "dog" / "00b.png").write_bytes(data[: len(data) // 2])
    return root


def test_imagefolder_layout_and_items(tmp_path):
    ds = ImageFolderDataset(make_folder(tmp_path / "d"), 16)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 7 and ds.targets == [0, 0, 0, 0, 1, 1, 1]
    x, y = ds[5]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1
    assert -1 <= x.min() and x.max() <= 1
    path = ds.samples[5][0]
    ref = to_tensor(center_crop_arr(Image.open(path).convert("RGB"), 16))
    assert torch.equal(x, ref)


def test_imagefolder_grey_and_rgba_become_rgb(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.new("L", (16, 16), 100).save(tmp_path / "d" / "a" / "grey.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 40)).save(tmp_path / "d" / "a" / "rgba.png")
    ds = ImageFolderDataset(tmp_path / "d", 16)
    assert ds[0][0].shape == ds[1][0].shape == (3, 16, 16)


def test_imagefolder_symlink_loop_is_not_followed_and_is_named(tmp_path, caplog):
    root = make_folder(tmp_path / "d")
    os.symlink("..", root / "cat" / "up")  # a loop that also reaches the other classes
    os.symlink(root / "dog", root / "cat" / "dogs")
    with caplog.at_level("WARNING", logger="sit.data"):
        ds = ImageFolderDataset(root, 16)
    assert len(ds) == 7 and ds.targets == [0, 0, 0, 0, 1, 1, 1]  # as without the links
    msgs = [r.getMessage() for r in caplog.records if "symlink" in r.getMessage()]
    assert len(msgs) == 1 and "2 directory symlink(s)" in msgs[0] and os.path.join("cat", "dogs") in msgs[0]
    # a class folder that is itself a symlink is still read
    other = make_folder(tmp_path / "o")
    os.symlink(other / "dog", root / "fox")
    assert ImageFolderDataset(root, 16).targets.count(2) == 3


def _grey_of(path):
    from sit.data.imagefolder import load_rgb

    a = np.asarray(load_rgb(str(path)))
    assert a.shape[-1] == 3 and a.dtype == np.uint8
    return a[..., 0].astype(int)


def test_imagefolder_image_modes_are_scaled_not_clipped(tmp_path):
    ramp = np.arange(16 * 16).reshape(16, 16)  # 0..255
    Image.fromarray((ramp * 257).astype(np.uint16)).save(tmp_path / "g16.png")  # opens as I;16
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    assert np.array_equal(_grey_of(tmp_path / "g16.png"), ramp)  # Pillow's convert("RGB") gives 0 / 255 only
    Image.fromarray((ramp * 257).astype(np.int32)).save(tmp_path / "g32.tif")  # mode I
    assert np.array_equal(_grey_of(tmp_path / "g32.tif"), ramp)
    Image.fromarray((ramp / 255.0).astype(np.float32)).save(tmp_path / "f01.tif")  # mode F in [0, 1]
    assert np.abs(_grey_of(tmp_path / "f01.tif") - ramp).max() <= 0
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "f255.tif")  # mode F in [0, 255]
    assert np.array_equal(_grey_of(tmp_path / "f255.tif"), ramp)
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(tmp_path / "fbad.tif")
    with pytest.raises(CorruptImageError, match=r"values in \[300, 300\]; expected \[0, 1\] or \[0, 255\]"):
        _grey_of(tmp_path / "fbad.tif")
    # alpha over white: a fully transparent pixel is white, an opaque one keeps its colour
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    from sit.data.imagefolder import load_rgb

    out = np.asarray(load_rgb(str(tmp_path / "a.png")))
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]
    Image.fromarray(np.array([[100, 0]], np.uint8), "L").convert("LA").save(tmp_path / "la.png")
    assert np.asarray(load_rgb(str(tmp_path / "la.png")))[0].tolist() == [[100] * 3, [0] * 3]
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=1)
    assert np.asarray(load_rgb(str(tmp_path / "p.png")))[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_imagefolder_flip_is_a_mirror_and_reproducible(tmp_path):
    root = make_folder(tmp_path / "d")
    plain = ImageFolderDataset(root, 16)
    ds = ImageFolderDataset(root, 16, flip=True, seed=3)
    flips = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        x, _ = ds[1]
        assert torch.equal(x, ds[1][0])  # same (seed, epoch, index) -> same item
        flipped = torch.equal(x, plain[1][0].flip(-1))
        assert flipped or torch.equal(x, plain[1][0])
        flips.append(flipped)
    assert 0 < sum(flips) < 8
    assert torch.equal(ds.load(1, flip=True)[0], plain[1][0].flip(-1))


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_imagefolder_unreadable_images(tmp_path, kind):
    root = make_folder(tmp_path / "d", corrupt=kind == "corrupt", truncated=kind == "truncated")
    bad = str(root / "cat" / "02b.png") if kind == "corrupt" else str(root / "dog" / "00b.png")
    ds = ImageFolderDataset(root, 16, on_error="raise")
    j = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(CorruptImageError) as e:
        ds[j]
    assert bad in str(e.value) and e.value.path == bad
    # skip: counted, and the next readable image (index order) is returned instead
    ds = ImageFolderDataset(root, 16, on_error="skip")
    x, y = ds[j]
    assert ds.num_skipped == 1 and ds.bad_paths == {bad}
    assert torch.equal(x, ds[j + 1][0]) and y == ds.samples[j + 1][1]
    ds[j]
    assert ds.num_skipped == 1  # counted once per path
    # pre-scan: dropped up front (exact count even with DataLoader workers), or an error naming it
    ds = ImageFolderDataset(root, 16, on_error="skip", verify=True)
    assert len(ds) == 7 and ds.num_skipped == 1
    with pytest.raises(CorruptImageError, match=bad):
        ImageFolderDataset(root, 16, on_error="raise", verify=True)


def test_imagefolder_labels_out_of_range(tmp_path):
    root = make_folder(tmp_path / "d", n_per_class=(2, 2, 2))
    with pytest.raises(ValueError, match=r"outside the class range \[0, 2\)"):
        ImageFolderDataset(root, 16, num_classes=2)
    with pytest.raises(ValueError, match="outside the class range"):
        ImageFolderDataset(root, 16, class_to_idx={"cat": 0, "dog": 5, "eel": 1}, num_classes=3)
    with pytest.raises(ValueError, match="outside the class range"):
        ImageFolderDataset(root, 16, class_to_idx={"cat": 0, "dog": -1, "eel": 1})
    with pytest.raises(ValueError, match="not in the label map"):
        ImageFolderDataset(root, 16, class_to_idx={"cat": 0, "dog": 1})
    ds = ImageFolderDataset(root, 16, class_to_idx={"cat": 7, "dog": 3, "eel": 0}, num_classes=10)
    assert ds.num_classes == 10 and ds.targets == [7, 7, 3, 3, 0, 0]
    assert ImageFolderDataset(root, 16, class_to_idx={"cat": 7, "dog": 3, "eel": 0}).num_classes == 8


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty", 16)
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path / "noimg", 16)
    with pytest.raises(ValueError, match="unknown on_error"):
        ImageFolderDataset(tmp_path / "noimg", 16, on_error="ignore")


# ----------------------------------------------------------------------------- latents

pytest.importorskip("diffusers")

from sit.data.latents import (  # noqa: E402
    LatentShardDataset,
    check_extraction,
    extract_latents,
    rank_shards,
    shard_ranges,
)
from sit.vae import VAE  # noqa: E402


@pytest.fixture(scope="module")
def vae():
    return VAE.tiny_random(0)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("images") / "d", n_per_class=(6, 5))  # 11 images


@pytest.fixture(scope="module")
def reference(vae, images_dir, tmp_path_factory):
    """Single-process extraction, shard size 3 -> 4 shards (3, 3, 3, 2 images)."""
    out = tmp_path_factory.mktemp("lat") / "ref"
    stats = extract_latents(ImageFolderDataset(images_dir, 16), vae, out, shard_size=3, batch_size=2)
    assert stats.shards_written == [0, 1, 2, 3] and stats.images_written == 11
    return out


def shard_arrays(root):
    names = sorted(f for f in os.listdir(root) if f.endswith(".npy"))
    return {f: np.load(os.path.join(root, f)) for f in names}


def test_shard_plan():
    assert shard_ranges(11, 3) == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert rank_shards(4, 0, 2) == [0, 2] and rank_shards(4, 1, 2) == [1, 3] and rank_shards(4, 2, 3) == [2]
    with pytest.raises(ValueError, match="rank"):
        rank_shards(4, 2, 2)


def test_extracted_moments_match_vae(vae, images_dir, reference):
    ds = ImageFolderDataset(images_dir, 16)
    lat = LatentShardDataset(reference)
    assert len(lat) == 11 and lat.latent_shape == (4, 8, 8) and lat.num_classes == 2
    assert list(lat.targets) == ds.targets
    index = json.loads((reference / "index.json").read_text())
    assert index["dtype"] == "float16" and index["num_shards"] == 4 and index["scale_factor"] == 0.18215
    for i in (0, 4, 10):
        m = lat.moments(i)
        assert m.shape == (2, 2, 4, 8, 8) and m.dtype == np.float16
        x = ds.load(i)[0][None]
        x_mirror = ds.load(i, flip=True)[0][None]  # mirrored by Pillow, independently of the extractor
        for o, img in ((0, x), (1, x_mirror)):
            mean, std = vae.encode_moments(img)
            np.testing.assert_allclose(m[o, 0].astype(np.float32), mean[0].numpy(), rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(m[o, 1].astype(np.float32), std[0].numpy(), rtol=2e-3, atol=1e-4)


def test_latent_items(reference):
    lat = LatentShardDataset(reference)
    z, y = lat[7]
    assert z.shape == (4, 8, 8) and z.dtype == torch.float32 and isinstance(y, int) and y == 1
    assert torch.equal(lat[7][0], z)  # same (seed, epoch, index)
    lat.set_epoch(1)
    assert not torch.equal(lat[7][0], z)
    mean_only = LatentShardDataset(reference, flip=False, sample=False)
    m = lat.moments(7)
    torch.testing.assert_close(mean_only[7][0], torch.from_numpy(m[0, 0].astype(np.float32)) * 0.18215)


@pytest.mark.parametrize("bad", [2, 5, -1])
def test_latent_labels_out_of_range_are_named_at_open(reference, tmp_path, bad):
    # num_classes is 2: label 2 would train as the null class, 5 and -1 crashed later with an IndexError
    root = tmp_path / "lat"
    shutil.copytree(reference, root)
    labels = np.load(root / "shard-000002.labels.npy")
    labels[1] = bad
    np.save(root / "shard-000002.labels.npy", labels)
    with pytest.raises(ValueError, match=rf"shard-000002.labels.npy.*label {bad} outside the allowed range \[0, 2\)"):
        LatentShardDataset(root)


def test_latent_samples_have_posterior_statistics(reference):
    """Monte Carlo over epochs: sample / 0.18215 ~ N(mean, std^2) of the stored orientation."""
    lat = LatentShardDataset(reference, flip=False)
    m = lat.moments(4).astype(np.float64)
    n = 3000
    z = np.stack([(lat.set_epoch(e), lat[4][0].numpy())[1] for e in range(n)]) / 0.18215
    r = (z - m[0, 0]) / m[0, 1]
    k = r[0].size
    assert abs(r.mean()) < 5 / (n * k) ** 0.5 and abs(r.var() - 1) < 5 * (2 / (n * k)) ** 0.5
    assert (np.abs(r.mean(0)) < 5 / n**0.5).all()
    assert (np.abs(z.std(0) / m[0, 1] - 1) < 5 / (2 * n) ** 0.5).all()


def test_latent_flip_chooses_each_orientation_half_the_time(reference):
    lat = LatentShardDataset(reference, flip=True, sample=False)
    m = lat.moments(2).astype(np.float32) * np.float32(0.18215)
    n, mirrored = 1000, 0
    for e in range(n):
        lat.set_epoch(e)
        z = lat[2][0].numpy()
        is_m = np.array_equal(z, m[1, 0])
        assert is_m or np.array_equal(z, m[0, 0])
        mirrored += is_m
    assert abs(mirrored / n - 0.5) < 5 * 0.5 / n**0.5


def test_latents_with_dataloader_workers(reference):
    lat = LatentShardDataset(reference)
    lat.set_epoch(2)
    batches = [
        list(torch.utils.data.DataLoader(lat, batch_size=4, num_workers=w, shuffle=False))
        for w in (0, 2)
    ]
    assert len(batches[0]) == 3
    for (z0, y0), (z1, y1) in zip(*batches):
        assert torch.equal(z0, z1) and torch.equal(y0, y1)
    assert batches[0][0][0].shape == (4, 4, 8, 8) and batches[0][0][1].dtype == torch.int64


def test_two_ranks_write_disjoint_shards_equal_to_one_process(vae, images_dir, reference, tmp_path):
    ds = ImageFolderDataset(images_dir, 16)
    out = tmp_path / "two"
    s0 = extract_latents(ds, vae, out, shard_size=3, batch_size=2, rank=0, world_size=2)
    _, missing = check_extraction(out)
    assert missing == [1, 3]
    s1 = extract_latents(ds, vae, out, shard_size=3, batch_size=2, rank=1, world_size=2)
    assert s0.shards_written == [0, 2] and s1.shards_written == [1, 3]
    a, b = shard_arrays(reference), shard_arrays(out)
    assert a.keys() == b.keys() and len(a) == 8
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (out / "index.json").read_text() == (reference / "index.json").read_text()


def test_resume_after_a_kill(vae, images_dir, reference, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(reference, out)
    for f in ("shard-000002.moments.npy", "shard-000002.labels.npy", "shard-000002.json"):
        os.remove(out / f)  # never started
    os.remove(out / "shard-000003.json")  # killed after the arrays, before the marker
    (out / "shard-000002.moments.npy.tmp").write_bytes(b"half a file")  # killed mid-write
    (out / "shard-000000.labels.npy.tmp").write_bytes(b"stale")
    with pytest.raises(FileNotFoundError, match=r"incomplete: 2 of 4 shard\(s\) missing"):
        LatentShardDataset(out)
    ds = ImageFolderDataset(images_dir, 16)
    stats = extract_latents(ds, vae, out, shard_size=3, batch_size=2)
    assert stats.shards_written == [2, 3] and stats.shards_resumed == [0, 1]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    a, b = shard_arrays(reference), shard_arrays(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    lat = LatentShardDataset(out)
    assert len(lat) == 11 and list(lat.targets) == ds.targets  # no duplicates, nothing lost
    assert extract_latents(ds, vae, out, shard_size=3).shards_written == []


def test_resume_refuses_other_settings(vae, images_dir, reference, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(reference, out)
    with pytest.raises(ValueError, match="different settings.*shard_size"):
        extract_latents(ImageFolderDataset(images_dir, 16), vae, out, shard_size=4)


def test_extract_unreadable_images(vae, tmp_path):
    root = make_folder(tmp_path / "d", corrupt=True)
    bad = str(root / "cat" / "02b.png")
    with pytest.raises(CorruptImageError, match=bad):
        extract_latents(ImageFolderDataset(root, 16, on_error="raise"), vae, tmp_path / "r", shard_size=3)
    stats = extract_latents(ImageFolderDataset(root, 16, on_error="skip"), vae, tmp_path / "s", shard_size=3)
    assert stats.bad_images == [bad] and stats.images_written == 7
    lat = LatentShardDataset(tmp_path / "s")
    assert len(lat) == 7 and lat.num_skipped == 1 and list(lat.targets) == [0, 0, 0, 0, 1, 1, 1]
    # sorted files: cat/00, 01, 02, 02b (index 3, shard 1 = indices 3..5), 03
    marker = json.loads((tmp_path / "s" / "shard-000001.json").read_text())
    assert marker["count"] == 2 and marker["skipped"] == [{"index": 3, "path": bad, "error": marker["skipped"][0]["error"]}]


def test_cli_extract(vae, images_dir, tmp_path, capsys):
    from sit.cli import main

    vae.model.save_pretrained(tmp_path / "vae")
    out = tmp_path / "cli"
    args = ["extract", "--data", str(images_dir), "--out", str(out), "--image-size", "16",
            "--shard-size", "5", "--num-workers", "0", "--no-progress"]
    assert main(args + ["--vae", str(tmp_path / "vae")]) == 0
    assert main(["extract", "--out", str(out), "--check"]) == 0
    assert "complete, 3 shard(s), 11 files" in capsys.readouterr().out
    assert len(LatentShardDataset(out)) == 11
    assert main(args + ["--vae", str(tmp_path / "missing")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["extract", "--out", str(tmp_path / "nothing"), "--check"]) == 2
    # two independent processes (as torchrun or a job array would launch them), rank 1 first
    args = [a.replace(str(out), str(tmp_path / "ranks")) for a in args] + ["--vae", str(tmp_path / "vae")]
    assert main(args + ["--rank", "1", "--world-size", "2"]) == 0
    assert main(["extract", "--out", str(tmp_path / "ranks"), "--check"]) == 2  # no index.json yet (rank 0 writes it)
    assert main(args + ["--rank", "0", "--world-size", "2"]) == 0
    assert main(["extract", "--out", str(tmp_path / "ranks"), "--check"]) == 0
    a, b = shard_arrays(out), shard_arrays(tmp_path / "ranks")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(args + ["--rank", "2", "--world-size", "2"]) == 2


def test_empty_class_folder_is_refused_not_counted(tmp_path):
    """Issue 22: an empty class folder would take a label and count as a class never shown."""
    root = make_folder(tmp_path / "d")
    (root / "zebra").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) \['zebra'\] .* hold no images"):
        ImageFolderDataset(root, 16)


def test_extract_check_finds_non_finite_latents(vae, images_dir, tmp_path, capsys):
    """Issue 22: `sit extract --check` reads the moments, so a NaN inside a shard is not "complete"."""
    from sit.cli import main

    vae.model.save_pretrained(tmp_path / "vae")
    out = tmp_path / "cli"
    assert main(["extract", "--data", str(images_dir), "--out", str(out), "--image-size", "16", "--shard-size", "5",
                 "--num-workers", "0", "--no-progress", "--vae", str(tmp_path / "vae")]) == 0
    assert main(["extract", "--out", str(out), "--check"]) == 0
    path = out / "shard-000001.moments.npy"
    m = np.load(path)
    m[2].flat[3] = np.nan
    np.save(path, m)
    capsys.readouterr()
    assert main(["extract", "--out", str(out), "--check"]) == 1
    assert "1 shard(s) hold NaN/inf latents: [1]" in capsys.readouterr().out
