"""What `sit extract --latent-norm channel` and the latent space cost (issue 18).

Two figures, on synthetic float16 moments of the ImageNet-256 shape (n, 2, 2, 4, 32, 32) (the
statistics' cost does not depend on the values):

1. `sit.data.latents.channel_sums` per 10,000-image shard (the work a shard marker adds at
   extraction), and for comparison the time to write that shard's moments with `np.save`;
2. `LatentShardDataset[i]` per item with the SD default space (0.18215, no shift), with a shift,
   and with per-channel normalisation (what each training item adds).

    python benchmarks/bench_latent_norm.py
    python benchmarks/bench_latent_norm.py --images 2000 --items 2000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def _folder(root: str, moments: np.ndarray, space: dict, norm: bool) -> None:
    from sit.data.latents import FORMAT, VERSION, channel_sums, latent_norm_stats, shard_stem

    n = len(moments)
    index = {"format": FORMAT, "version": VERSION, "dtype": "float16", "latent_shape": [4, 32, 32], "image_size": 256,
             "vae": "synthetic", "num_classes": 10, "classes": [str(c) for c in range(10)], "num_files": n,
             "shard_size": n, "num_shards": 1, "files_sha256": "", **space}
    os.makedirs(root, exist_ok=True)
    np.save(shard_stem(root, 0) + ".moments.npy", moments)
    np.save(shard_stem(root, 0) + ".labels.npy", np.arange(n, dtype=np.int64) % 10)
    marker = {"shard": 0, "start": 0, "stop": n, "count": n, "skipped": []}
    if norm:
        index["latent_norm"] = "channel"
        marker["channel_sums"] = channel_sums(moments)
    with open(shard_stem(root, 0) + ".json", "w") as f:
        json.dump(marker, f)
    if norm:
        index["latent_norm_stats"] = latent_norm_stats(root, index)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000, help="images in the synthetic shard (default 10000)")
    ap.add_argument("--items", type=int, default=5_000, help="dataset items timed per space (default 5000)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings (default 3)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from sit.data.latents import LatentShardDataset, channel_sums

    rng = np.random.default_rng(0)
    moments = rng.standard_normal((args.images, 2, 2, 4, 32, 32), dtype=np.float32).astype(np.float16)
    moments[:, :, 1] = np.abs(moments[:, :, 1]) * 0.1 + 0.01

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    with tempfile.TemporaryDirectory() as tmp:
        t_sums = best(lambda: channel_sums(moments))
        t_save = best(lambda: np.save(os.path.join(tmp, "m.npy"), moments))
        print(f"channel_sums of a {args.images}-image shard (4x32x32, float16): {t_sums:.3f} s "
              f"({1e6 * t_sums / args.images:.1f} us/image); np.save of the same shard: {t_save:.3f} s")
        spaces = {"sd default (0.18215)": ({"scale_factor": 0.18215}, False),
                  "scale + shift": ({"scale_factor": 0.5, "shift_factor": 0.1}, False),
                  "scale + shift + channel norm": ({"scale_factor": 0.5, "shift_factor": 0.1}, True)}
        for name, (space, norm) in spaces.items():
            root = os.path.join(tmp, name.replace(" ", "_"))
            _folder(root, moments, space, norm)
            ds = LatentShardDataset(root, flip=True, sample=True, seed=0)
            k = min(args.items, len(ds))
            ds[0]
            t = best(lambda: [ds[i] for i in range(k)])
            print(f"LatentShardDataset[i], {name:<30}: {1e3 * t / k:.3f} ms/item")


if __name__ == "__main__":
    main()
