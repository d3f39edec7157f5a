"""The latent folder of `sit extract`: its on-disk layout, index.json (`make_index`, `read_index`,
`index_space`), shard names and plan (`shard_stem`, `shard_ranges`, `rank_shards`), the done
markers (`shard_done`, `check_extraction`) and the atomic writes of its files. Shared by the
writer (`sit.data.latent_writer`), the reader (`sit.data.latent_reader`) and the per-channel
statistics (`sit.data.latent_norm`); the layout and the reasons for it are told in
`sit.data.latents`, which re-exports every name here.

Must not import: ``sit.data.latents``, ``sit.data.latent_writer``, ``sit.data.latent_reader``,
``sit.data.latent_norm`` (they import this), ``sit.train``, ``sit.commands``.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sit.data.imagefolder import ImageFolderDataset

FORMAT = "sit-latents"
VERSION = 1
INDEX = "index.json"
STORE_DTYPES = ("float16", "float32")
LATENT_NORMS = ("none", "channel")   # --latent-norm: per-channel statistics computed at extraction (LightningDiT)


def shard_stem(root: str | os.PathLike, shard: int) -> str:
    return os.path.join(root, f"shard-{shard:06d}")


def shard_ranges(num_files: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) of every shard: consecutive blocks of shard_size dataset indices."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 (got {shard_size})")
    return [(s, min(s + shard_size, num_files)) for s in range(0, num_files, shard_size)]


def rank_shards(num_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards rank r writes out of W: r, r + W, r + 2W, ..."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank={rank}, world_size={world_size})")
    return list(range(rank, num_shards, world_size))


def _atomic_write(path: str, write) -> None:
    from sit.io import atomic_path

    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        write(f)


def _save_npy(path: str, arr: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, arr))


def _save_json(path: str, obj: Any) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def read_index(root: str | os.PathLike) -> dict[str, Any]:
    """The index.json of an extraction folder (FileNotFoundError saying how to make one)."""
    path = os.path.join(root, INDEX)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{str(root)!r} is not a latent folder (no {INDEX}); create one with "
            "`sit extract` (an image folder and a local VAE folder)"
        )
    with open(path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(f"{path!r} has format {index.get('format')!r}; expected {FORMAT!r}")
    if index.get("version") != VERSION:
        raise ValueError(f"{path!r} has version {index.get('version')!r}; this sit reads version {VERSION}")
    return index


def pixels_record(image_size: int) -> dict[str, Any]:
    """The index entry of stored pixels (`sit extract --pixels`)."""
    return {"dtype": "uint8", "shape": [3, int(image_size), int(image_size)],
            "layout": "pixels (n, 3, S, S) uint8: the ADM centre crop, not mirrored (x / 127.5 - 1 is the image in [-1, 1])"}


def _files_digest(dataset: ImageFolderDataset) -> str:
    h = hashlib.sha256()
    for path, label in dataset.samples:
        h.update(f"{os.path.relpath(path, dataset.root)}\t{label}\n".encode())
    return h.hexdigest()


def make_index(dataset: ImageFolderDataset, vae, *, shard_size: int, dtype: str = "float16",
               latent_norm: str = "none", pixels: bool = False) -> dict[str, Any]:
    """The manifest of extracting ``dataset`` with ``vae`` (deterministic: every rank computes the same)."""
    from sit.vae import vae_config_record

    if dtype not in STORE_DTYPES:
        raise ValueError(f"unknown latent store dtype {dtype!r}; expected one of {list(STORE_DTYPES)}")
    if latent_norm not in LATENT_NORMS:
        raise ValueError(f"unknown latent normalisation {latent_norm!r}; expected one of {list(LATENT_NORMS)}")
    n = len(dataset.samples)
    norm = {} if latent_norm == "none" else {"latent_norm": latent_norm}  # (absent: none, as before it existed)
    pix = {"pixels": pixels_record(dataset.image_size)} if pixels else {}   # (absent: no pixels, as before)
    return {**norm, **pix,
        "format": FORMAT,
        "version": VERSION,
        "layout": "moments (n, 2, 2, C, h, w) = [image, horizontal mirror] x [posterior mean, posterior std], "
                  "unscaled (the network sees (sample - shift_factor) * scale_factor); labels (n,) int64",
        "dtype": dtype,
        "latent_shape": list(vae.latent_shape(dataset.image_size)),
        "scale_factor": vae.scale_factor,
        "shift_factor": vae.shift_factor,
        **vae_config_record(vae.config_space, vae.space),   # the VAE config's values, when overridden
        "image_size": dataset.image_size,
        "vae": vae.name,
        "vae_sha256": vae.weights_sha256,
        "num_classes": dataset.num_classes,
        "classes": dataset.classes,
        "class_to_idx": dataset.class_to_idx,
        "source": os.path.abspath(dataset.root),
        "num_files": n,
        "shard_size": shard_size,
        "num_shards": len(shard_ranges(n, shard_size)),
        "files_sha256": _files_digest(dataset),
    }


def index_space(index: dict[str, Any], scale: float | None = None, shift: float | None = None):
    """The `sit.vae.LatentSpace` of an extraction folder: the scale and shift its index records
    (``scale`` / ``shift`` override them: the shards hold unscaled moments, so any applies) and,
    when extracted with ``--latent-norm channel``, the per-channel normalisation, taken to the
    scaled space: mean_c = (mean_z - shift) * scale, std_c = std_z * scale (the index stores the
    statistics of the unscaled z). An index written before sit recorded the shift (or,
    hypothetically, the scale) lacks the field: it means the SD VAE's 0.18215 and shift 0, what
    sit then hard-coded (`LatentSpace.from_record`); one without ``latent_norm`` is not normalised."""
    from sit.vae import LatentSpace

    sp = LatentSpace.from_record({"scale_factor": index.get("scale_factor"), "shift_factor": index.get("shift_factor")})
    sp = sp.override(scale, shift)
    if index.get("latent_norm", "none") == "none":
        return sp
    stats = index.get("latent_norm_stats")
    if stats is None:
        raise ValueError("the latent folder's per-channel statistics are not computed yet (extraction unfinished); "
                         "run `sit extract` on this folder again in check mode to write them")
    return LatentSpace(sp.scale, sp.shift, mean=tuple((m - sp.shift) * sp.scale for m in stats["mean"]),
                       std=tuple(v * sp.scale for v in stats["std"]))


def shard_done(root: str | os.PathLike, shard: int, start: int, stop: int, pixels: bool = False) -> bool:
    """A shard is finished when its marker exists and its arrays (the pixels too, when the folder
    stores them) have the marker's length."""
    stem = shard_stem(root, shard)
    try:
        with open(stem + ".json") as f:
            marker = json.load(f)
        if (marker.get("start"), marker.get("stop")) != (start, stop):
            return False
        count = marker["count"]
        moments = np.load(stem + ".moments.npy", mmap_mode="r")
        labels = np.load(stem + ".labels.npy", mmap_mode="r")
        if pixels and len(np.load(stem + ".pixels.npy", mmap_mode="r")) != count:
            return False
        return len(moments) == count and len(labels) == count
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return False


def nonfinite_shards(root: str | os.PathLike, index: dict[str, Any], chunk: int = 4096) -> list[int]:
    """Ids of the finished shards whose moments hold a NaN or inf (read in chunks, memory-mapped)."""
    bad = []
    for s in range(index["num_shards"]):
        moments = np.load(shard_stem(root, s) + ".moments.npy", mmap_mode="r")
        if any(not np.isfinite(moments[i: i + chunk]).all() for i in range(0, len(moments), chunk)):
            bad.append(s)
    return bad


def check_extraction(root: str | os.PathLike) -> tuple[dict[str, Any], list[int]]:
    """(index, missing shard ids) of an extraction folder."""
    index = read_index(root)
    ranges = shard_ranges(index["num_files"], index["shard_size"])
    pixels = "pixels" in index
    missing = [s for s, (a, b) in enumerate(ranges) if not shard_done(root, s, a, b, pixels=pixels)]
    return index, missing
