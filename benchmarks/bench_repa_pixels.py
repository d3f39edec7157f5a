"""REPA from pre-extracted latents (`sit extract --pixels`): what the stored images cost on disk, how
fast the training reader serves them, and the FLOPs per training step saved by not running the VAE.

  disk    bytes per 256x256 image of the three candidate encodings of the stored centre crop (raw uint8,
          PNG, zlib level 1) on natural photographs (256-px crops of scikit-learn's two sample photos at
          random positions and scales), and the CPU decode rate of each (one core)
  reader  items/s of one `LatentShardDataset(pixels=True)` reader (what one DataLoader worker does:
          memory-mapped moments + pixels, the posterior draw, the mirror, collation into batches of
          256) on a synthetic 256-px extraction folder in the page cache, CPU seconds beside wall
  flops   one training step at batch 1, counted by torch's FlopCounterMode (GFLOP; attention through the
          math kernel so it is counted; SiT-XL/2 from its 1- and 2-block counts, its blocks being
          identical, so the CPU never holds the full network): SiT-XL/2 forward + backward,
          the DINOv2-B encoder at 224 px, the projector, and the SD-VAE encoder of a 256-px image, which
          REPA from `--data --vae` runs every step and REPA from stored pixels does not

    python benchmarks/bench_repa_pixels.py disk reader flops --threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np


def natural_crops(n: int, size: int = 256) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        a = photos[k % len(photos)]
        h, w, _ = a.shape
        s = int(rng.integers(size, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out.append(np.asarray(Image.fromarray(a[y:y + s, x:x + s]).resize((size, size), Image.BICUBIC)))
    return np.stack(out)


def bench_disk(n: int = 64) -> dict:
    from PIL import Image

    crops = natural_crops(n)
    pngs = []
    for c in crops:
        b = io.BytesIO()
        Image.fromarray(c).save(b, format="PNG")
        pngs.append(b.getvalue())
    zs = [zlib.compress(c.tobytes(), 1) for c in crops]

    def rate(fn, items, reps=5):
        t = time.process_time()
        for _ in range(reps):
            for it in items:
                fn(it)
        return reps * len(items) / (time.process_time() - t)

    return {
        "raw_bytes": int(crops[0].nbytes),
        "png_bytes": float(np.mean([len(p) for p in pngs])),
        "zlib1_bytes": float(np.mean([len(z) for z in zs])),
        "png_decode_per_cpu_s": rate(lambda p: np.asarray(Image.open(io.BytesIO(p)).convert("RGB")), pngs),
        "zlib1_decode_per_cpu_s": rate(lambda z: np.frombuffer(zlib.decompress(z), np.uint8), zs),
        "moments_bytes": 2 * 2 * 4 * 32 * 32 * 2,
    }


def synthetic_folder(root: str, n: int, shard: int, size: int = 256) -> None:
    """An extraction folder with random moments and the natural crops as its pixels."""
    from sit.data.latents import FORMAT, VERSION, pixels_record, shard_stem

    rng = np.random.default_rng(0)
    crops = natural_crops(64, size).transpose(0, 3, 1, 2)
    starts = list(range(0, n, shard))
    for s, a in enumerate(starts):
        b = min(a + shard, n)
        np.save(shard_stem(root, s) + ".moments.npy",
                np.abs(rng.standard_normal((b - a, 2, 2, 4, size // 8, size // 8))).astype(np.float16))
        np.save(shard_stem(root, s) + ".labels.npy", rng.integers(0, 1000, b - a).astype(np.int64))
        np.save(shard_stem(root, s) + ".pixels.npy", crops[np.arange(a, b) % len(crops)])
        with open(shard_stem(root, s) + ".json", "w") as f:
            json.dump({"shard": s, "start": a, "stop": b, "count": b - a, "skipped": []}, f)
    index = {"format": FORMAT, "version": VERSION, "dtype": "float16", "latent_shape": [4, size // 8, size // 8],
             "scale_factor": 0.18215, "shift_factor": 0.0, "image_size": size, "vae": "synthetic",
             "num_classes": 1000, "classes": [str(i) for i in range(1000)], "num_files": n, "shard_size": shard,
             "num_shards": len(starts), "files_sha256": "", "pixels": pixels_record(size)}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)


def bench_reader(n: int = 4096, batch: int = 256) -> dict:
    import torch
    from torch.utils.data import default_collate

    from sit.data.latents import LatentShardDataset

    with tempfile.TemporaryDirectory(prefix="bench_repa_pixels_") as root:
        synthetic_folder(root, n, 1024)
        ds = LatentShardDataset(root, pixels=True)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        for i in order[:batch]:   # open the memory maps, warm the page cache
            ds[i]
        out = {}
        for name, pix in (("latents+pixels", True), ("latents only", False)):
            ds.pixels = pix
            t0, c0 = time.perf_counter(), time.process_time()
            for k in range(0, n, batch):
                default_collate([ds[i] for i in order[k:k + batch]])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out[name] = {"items_per_s": n / wall, "items_per_cpu_s": n / cpu, "wall_s": wall, "cpu_s": cpu}
        return out


def bench_flops() -> dict:
    import dataclasses

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from sit.config import model_preset
    from sit.train.repa import projector

    def count(fn) -> float:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / 1e9

    from diffusers import AutoencoderKL
    from transformers import Dinov2Config, Dinov2Model

    from sit.models.sit import SiT

    torch.manual_seed(0)
    xl = model_preset("SiT-XL/2", input_size=32, in_channels=4, num_classes=1000)
    x, t, y = torch.randn(1, 4, 32, 32), torch.rand(1), torch.zeros(1, dtype=torch.long)
    # SiT-XL/2's 28 blocks are identical: count depth 1 and 2 (computed on the CPU) and extrapolate exactly
    per = [count(lambda d=d: SiT(dataclasses.replace(xl, depth=d))(x, t, y).sum().backward()) for d in (1, 2)]
    sit = per[0] + (xl.depth - 1) * (per[1] - per[0])
    dino = Dinov2Model(Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                    intermediate_size=3072, patch_size=14, image_size=518)).eval()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()
    proj = projector(1152, 2048, 768)
    h = torch.randn(1, 256, 1152, requires_grad=True)
    with torch.no_grad():
        enc = count(lambda: dino(pixel_values=torch.randn(1, 3, 224, 224)))
        vae_enc = count(lambda: vae.encode(torch.randn(1, 3, 256, 256)))
    prj = count(lambda: proj(h).sum().backward())
    pixels = sit + enc + prj
    return {"sit_xl2_fwd_bwd": sit, "dinov2_b_fwd_224": enc, "projector_fwd_bwd": prj, "sd_vae_encoder_256": vae_enc,
            "repa_from_stored_pixels": pixels, "repa_from_data_vae": pixels + vae_enc,
            "data_vae_over_pixels": vae_enc / pixels}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="+", choices=["disk", "reader", "flops"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--items", type=int, default=4096, help="reader: items in the synthetic folder")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for part in args.parts:
        t0, c0 = time.perf_counter(), time.process_time()
        res = {"disk": bench_disk, "reader": lambda: bench_reader(args.items), "flops": bench_flops}[part]()
        print(json.dumps({"part": part, **res, "wall_s": round(time.perf_counter() - t0, 2),
                          "cpu_s": round(time.process_time() - c0, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
