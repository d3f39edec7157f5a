"""The writer of a latent folder (`sit extract`): `extract_latents` encodes the images of each of
this rank's shards with the VAE, image and mirror, and writes its arrays and done marker (finished
shards are skipped; a folder holding another extraction is refused). The folder's layout and its
index (`make_index`) are `sit.data.latent_folder`'s; `sit.data.latents` re-exports this.

Must not import: ``sit.data.latents``, ``sit.data.latent_reader``, ``sit.train``, ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sit.config import field_error
from sit.data.imagefolder import CorruptImageError, ImageFolderDataset
from sit.data.latent_folder import (
    INDEX,
    _save_json,
    _save_npy,
    index_space,
    make_index,
    rank_shards,
    read_index,
    shard_done,
    shard_ranges,
    shard_stem,
)
from sit.data.latent_norm import channel_sums, finish_latent_norm

log = logging.getLogger("sit.data")

# settings that must agree between a resumed extraction and the folder it writes into
_MATCH_KEYS = ("format", "version", "dtype", "latent_shape", "image_size", "vae",
               "num_classes", "classes", "num_files", "shard_size", "num_shards", "files_sha256")


def to_uint8(images: Tensor) -> np.ndarray:
    """Images in [-1, 1] made by `sit.data.imagefolder.to_tensor` (v / 127.5 - 1) -> their uint8 values v (exact)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _check_same(existing: dict, new: dict, root: str) -> None:
    diff = [k for k in _MATCH_KEYS if existing.get(k) != new.get(k)]
    if existing.get("latent_norm", "none") != new.get("latent_norm", "none"):
        diff.append("latent_norm")
    if existing.get("pixels") != new.get("pixels"):
        diff.append("pixels")
    old = index_space({k: v for k, v in existing.items() if k != "latent_norm"})
    now = index_space({k: v for k, v in new.items() if k != "latent_norm"})
    diff += [k for k, a, b in (("scale_factor", old.scale, now.scale), ("shift_factor", old.shift, now.shift)) if a != b]
    if "vae_sha256" in existing and existing["vae_sha256"] != new.get("vae_sha256"):   # (older indexes lack it)
        diff.append("vae_sha256")
    if diff:
        k = diff[0]
        raise field_error(ValueError,
            f"{root!r} already holds an extraction with different settings ({', '.join(diff)}; e.g. {k}: "
            f"{str(existing.get(k))[:80]!r} there, {str(new.get(k))[:80]!r} now); use another {{.out_dir}} "
            "or the same arguments to resume"
        )


class _ShardImages(Dataset):
    """Images [start, stop) of an ImageFolderDataset, errors returned instead of raised (picklable)."""

    def __init__(self, dataset: ImageFolderDataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, k: int):
        i = self.start + k
        try:
            image, label = self.dataset.load(i)
            return image, label, i, ""
        except CorruptImageError as e:
            s = self.dataset.image_size
            return torch.zeros(3, s, s), -1, i, str(e)


@dataclasses.dataclass
class ExtractStats:
    shards_written: list[int] = dataclasses.field(default_factory=list)
    shards_resumed: list[int] = dataclasses.field(default_factory=list)  # already finished, skipped
    images_written: int = 0
    bad_images: list[str] = dataclasses.field(default_factory=list)      # unreadable paths (skipped)


def extract_latents(dataset: ImageFolderDataset, vae, out_dir: str | os.PathLike, *, shard_size: int = 10_000,
                    batch_size: int = 64, rank: int = 0, world_size: int = 1, dtype: str = "float16",
                    num_workers: int = 0, progress: bool = False, latent_norm: str = "none",
                    pixels: bool = False) -> ExtractStats:
    """Encode ``dataset`` (its centre crop; its ``flip`` is ignored) into shards under ``out_dir``.

    For every image x stores the posterior moments (mean, std) of x and of flip(x) (unscaled,
    ``dtype``), and its label. This process writes shards rank, rank + world_size, ...; finished
    shards are skipped (resume). Unreadable images follow ``dataset.on_error``: "raise" stops with
    CorruptImageError naming the path, "skip" leaves the image out and lists it in the shard marker
    and in the returned ``bad_images``. Deterministic: the result does not depend on world_size.
    ``latent_norm="channel"``: each shard marker also holds float64 per-channel sums of the stored
    moments (`channel_sums`), and the process that finds the folder complete writes the
    statistics of the whole set into index.json (`finish_latent_norm`). ``pixels``: each shard
    also stores the centre crops as uint8 (`to_uint8`), for REPA's encoder.
    """
    os.makedirs(out_dir, exist_ok=True)
    out_dir = str(out_dir)
    index = make_index(dataset, vae, shard_size=shard_size, dtype=dtype, latent_norm=latent_norm, pixels=pixels)
    index_path = os.path.join(out_dir, INDEX)
    if os.path.isfile(index_path):
        _check_same(read_index(out_dir), index, out_dir)
    elif rank == 0:
        _save_json(index_path, index)
    ranges = shard_ranges(index["num_files"], shard_size)
    mine = rank_shards(len(ranges), rank, world_size)
    _remove_leftovers(out_dir, mine)
    stats = ExtractStats()
    todo = []
    for s in mine:
        (stats.shards_resumed if shard_done(out_dir, s, *ranges[s], pixels=pixels) else todo).append(s)
    if stats.shards_resumed:
        log.info("rank %d: %d finished shard(s) found, skipped", rank, len(stats.shards_resumed))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(ranges[s][1] - ranges[s][0] for s in todo), unit="img", desc=f"extract (rank {rank})")
    for s in todo:
        start, stop = ranges[s]
        images = _ShardImages(dataset, start, stop)
        shard = _encode_shard(images, vae, index, batch_size=batch_size, num_workers=num_workers, bar=bar)
        _write_shard(out_dir, s, start, stop, shard, index, channel=latent_norm == "channel")
        stats.shards_written.append(s)
        stats.images_written += len(shard["labels"])
        stats.bad_images += [k["path"] for k in shard["skipped"]]
    if bar is not None:
        bar.close()
    if latent_norm == "channel" and os.path.isfile(index_path):  # (no index yet: rank 0 has not started)
        finish_latent_norm(out_dir)
    return stats


def _remove_leftovers(out_dir: str, shards: list[int]) -> None:
    """Temporary files of a killed run in ``shards`` (each shard has one writer, so they are ours)."""
    for s in shards:
        stem = shard_stem(out_dir, s)
        for suffix in (".labels.npy", ".moments.npy", ".pixels.npy", ".json"):
            old = [stem + suffix + ".tmp"]  # sit <= 0.1's name; now sit.io's hidden .NAME.tmpPID
            old += glob.glob(os.path.join(os.path.dirname(stem), f".{os.path.basename(stem)}{suffix}.tmp*"))
            for p in old:
                if os.path.exists(p):
                    os.remove(p)


def _encode_shard(images: _ShardImages, vae, index: dict[str, Any], *, batch_size: int, num_workers: int,
                  bar=None) -> dict[str, Any]:
    """The arrays of one shard: moments (n, 2, 2, C, h, w) in the index's dtype, labels (n,) int64,
    the skipped images (``dataset.on_error == "skip"``) and, when the index stores pixels, the
    centre crops as uint8 (n, 3, S, S)."""
    dataset, np_dtype, pixels = images.dataset, np.dtype(index["dtype"]), "pixels" in index
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    moments, labels, skipped, pix = [], [], [], []
    for batch, label, idx, err in loader:
        ok = torch.tensor([not e for e in err], dtype=torch.bool)
        for i, e in zip(idx.tolist(), err):
            if e:
                if dataset.on_error == "raise":
                    raise CorruptImageError(dataset.samples[i][0], OSError(e))
                skipped.append({"index": i, "path": dataset.samples[i][0], "error": e})
                log.warning("skipping unreadable image: %s", e)
        if bar is not None:
            bar.update(len(idx))
        if not ok.any():
            continue
        batch = batch[ok]
        b = len(batch)
        mean, std = vae.encode_moments(torch.cat([batch, batch.flip(-1)]))  # (2b, C, h, w)
        m = torch.stack([torch.stack([mean[:b], std[:b]], 1), torch.stack([mean[b:], std[b:]], 1)], 1)
        moments.append(m.numpy().astype(np_dtype))  # (b, 2, 2, C, h, w)
        labels.append(label[ok].numpy().astype(np.int64))
        if pixels:
            pix.append(to_uint8(batch))
    c, h, w = index["latent_shape"]
    sz = index["image_size"]
    return {"moments": np.concatenate(moments) if moments else np.zeros((0, 2, 2, c, h, w), np_dtype),
            "labels": np.concatenate(labels) if labels else np.zeros((0,), np.int64), "skipped": skipped,
            "pixels": (np.concatenate(pix) if pix else np.zeros((0, 3, sz, sz), np.uint8)) if pixels else None}


def _write_shard(out_dir: str, s: int, start: int, stop: int, shard: dict[str, Any], index: dict[str, Any],
                 channel: bool) -> None:
    """Shard ``s``'s arrays, then its done marker (last; with the per-channel sums when ``channel``)."""
    labels, moments = shard["labels"], shard["moments"]
    if labels.size and (labels.min() < 0 or labels.max() >= index["num_classes"]):
        raise ValueError(f"label outside the class range [0, {index['num_classes']}) in shard {s}")
    stem = shard_stem(out_dir, s)
    _save_npy(stem + ".labels.npy", labels)
    _save_npy(stem + ".moments.npy", moments)
    if shard["pixels"] is not None:
        _save_npy(stem + ".pixels.npy", shard["pixels"])
    marker = {"shard": s, "start": start, "stop": stop, "count": len(labels), "skipped": shard["skipped"]}
    if channel:
        marker["channel_sums"] = channel_sums(moments)
    _save_json(stem + ".json", marker)
