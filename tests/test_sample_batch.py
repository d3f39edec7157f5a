"""The sample-set engine of sit.generate: per-seed noise, batch-size independence,
resume without duplicates or gaps, ADM npz layout, manifest."""

import json
import os

import numpy as np
import pytest
import torch

from sit.generate.engine import generate, missing_chunks, scan_parts
from sit.generate.noise import RowNoise, labels_for, parse_labels
from sit.io import make_grid, to_uint8


def fake_sampler(x0, y, noise):
    """Row-wise, uses per-step noise like an SDE (3 'steps'), so any mix-up of rows shows."""
    x = x0
    for _ in range(3):
        x = 0.7 * x + 0.3 * noise(x)
    return torch.tanh(x + 0.05 * y.view(-1, 1, 1, 1).float()), {"nfe": 3}


KW = dict(seed=11, latent_shape=(1, 6, 6), sampler_fn=fake_sampler, num_classes=10, progress=False)


def test_row_noise_is_per_seed():
    n = RowNoise([5, 9])
    a = n.randn((2, 3))
    assert torch.equal(a[0], torch.randn(2, 3, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(a[1], torch.randn(2, 3, generator=torch.Generator().manual_seed(9)))
    # the second draw continues each row's own stream
    b = RowNoise([9]).randn((2, 3))
    assert torch.equal(b[0], a[1])


def test_to_uint8_and_grid():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    u = to_uint8(x)
    assert u.shape == (1, 2, 2, 3) and u.dtype == np.uint8
    assert u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    assert (u[..., 0] == u[..., 2]).all()  # grey repeated to 3 channels
    g = make_grid(np.zeros((5, 4, 4, 3), np.uint8), nrow=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    with pytest.raises(ValueError, match="expected images"):
        to_uint8(torch.zeros(1, 4, 2, 2))


def test_labels():
    assert parse_labels("207,360", 1000) == (207, 360)
    assert parse_labels("random", 10) == "random"
    with pytest.raises(ValueError, match="outside"):
        parse_labels("3,12", 10)
    with pytest.raises(ValueError, match="SampleSpec.labels must be"):
        parse_labels("cat", 10)
    assert labels_for([0, 1, 2], (4, 7), 10, RowNoise([0, 1, 2])).tolist() == [4, 7, 4]
    assert labels_for([0, 1], "null", 10, RowNoise([0, 1])).tolist() == [10, 10]


def test_missing_chunks():
    assert missing_chunks([], 7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert missing_chunks([(0, 2), (4, 5)], 7, 3) == [(2, 4), (5, 7)]
    assert missing_chunks([(0, 7)], 7, 3) == []


def test_batch_size_does_not_change_samples(tmp_path):
    a = generate(tmp_path / "a", num_samples=7, batch_size=2, **KW)
    b = generate(tmp_path / "b", num_samples=7, batch_size=3, **KW)
    za, zb = np.load(a.npz), np.load(b.npz)
    assert za["arr_0"].shape == (7, 6, 6, 3) and za["arr_0"].dtype == np.uint8
    assert np.array_equal(za["arr_0"], zb["arr_0"]) and np.array_equal(za["arr_1"], zb["arr_1"])
    # sample i is seed + i: a 1-sample set starting at that seed reproduces sample 3
    c = generate(tmp_path / "c", num_samples=1, batch_size=1, **dict(KW, seed=KW["seed"] + 3))
    assert np.array_equal(np.load(c.npz)["arr_0"][0], za["arr_0"][3])
    m = json.loads(a.manifest.read_text())
    assert m["complete"] and m["nfe_per_sample"] == [3] and m["first_seed"] == 11 and m["last_seed"] == 17
    assert not (tmp_path / "a" / "parts").exists()  # parts removed after the merge


def test_resume_after_interruption(tmp_path):
    ref = generate(tmp_path / "ref", num_samples=9, batch_size=2, **KW)
    out = tmp_path / "run"
    # "killed" after 2 batches, leaving a half-written temporary file and losing one part
    generate(out, num_samples=9, batch_size=2, max_batches=3, **KW)
    parts = sorted(os.listdir(out / "parts"))
    assert parts == ["part-00000000-00000002.npz", "part-00000002-00000004.npz", "part-00000004-00000006.npz"]
    os.remove(out / "parts" / parts[1])
    (out / "parts" / ".part-00000006-00000008.npz.tmp123").write_bytes(b"garbage")
    (out / "parts" / "part-00000006-00000008.npz").write_bytes(b"not a zip")  # corrupt: regenerated
    assert scan_parts(out / "parts", 9) == [(0, 2), (4, 6)]
    # resumed with another batch size
    res = generate(out, num_samples=9, batch_size=4, **KW)
    assert res.num_generated == 5
    z, zr = np.load(res.npz), np.load(ref.npz)
    assert z["arr_0"].shape[0] == 9
    assert np.array_equal(z["arr_0"], zr["arr_0"]) and np.array_equal(z["arr_1"], zr["arr_1"])
    # a second call has nothing to do
    assert generate(out, num_samples=9, batch_size=4, **KW).num_generated == 0


def test_resume_refuses_other_settings(tmp_path):
    out = tmp_path / "run"
    generate(out, num_samples=4, batch_size=2, max_batches=1, settings={"cfg": 1.5}, **KW)
    with pytest.raises(ValueError, match="different settings"):
        generate(out, num_samples=4, batch_size=2, settings={"cfg": 4.0}, **KW)


def test_outputs_png_latents(tmp_path):
    res = generate(tmp_path / "o", num_samples=3, batch_size=2, png_folder=True, save_latents="npy", grid_png=True, **KW)
    d = tmp_path / "o"
    assert sorted(os.listdir(d / "images")) == ["000000.png", "000001.png", "000002.png"]
    lat = np.load(d / "latents.npy")
    assert lat.shape == (3, 1, 6, 6) and lat.dtype == np.float32
    assert np.array_equal(to_uint8(torch.from_numpy(lat)), np.load(res.npz)["arr_0"])
    assert (d / "grid.png").is_file()


def test_explicit_initial_noise(tmp_path):
    x0 = torch.randn(3, 1, 6, 6)
    ident = lambda x, y, n: (torch.tanh(x), {"nfe": 0})  # noqa: E731
    res = generate(tmp_path / "n", num_samples=3, batch_size=2, initial_noise=x0,
                   **dict(KW, sampler_fn=ident))
    assert np.array_equal(np.load(res.npz)["arr_0"], to_uint8(torch.tanh(x0)))
    with pytest.raises(ValueError, match="noise holds shape"):
        generate(tmp_path / "m", num_samples=4, batch_size=2, initial_noise=x0, **dict(KW, sampler_fn=ident))


def _worker(rank, world, init, out, result_q):
    from sit import dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank, world, init)
    try:
        generate(out, num_samples=7, batch_size=2, **KW)
    finally:
        dist.cleanup()


def test_two_processes_give_the_same_set(tmp_path):
    """Sharded over 2 gloo processes (as under torchrun): the same npz as one process."""
    import torch.multiprocessing as mp

    ref = generate(tmp_path / "one", num_samples=7, batch_size=3, **KW)
    init = f"file://{tmp_path / 'pg'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, init, str(tmp_path / "two"), None)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    z1, z2 = np.load(ref.npz), np.load(tmp_path / "two" / "samples.npz")
    assert np.array_equal(z1["arr_0"], z2["arr_0"]) and np.array_equal(z1["arr_1"], z2["arr_1"])
    m = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert m["last_run"]["world_size"] == 2 and m["complete"]
