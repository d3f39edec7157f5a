"""Pre-extracted VAE latents: encode an image dataset once, then train without running the VAE.

For every image x (after the ADM centre crop) we store the SD-VAE posterior q(z | x) = N(mean, std^2)
of x *and* of its mirror flip(x) (the VAE is not flip-equivariant, so flipping the latent is not the
same as encoding the flipped image). Training then draws, for every item and every epoch, a fresh
posterior sample z = mean + std * N(0, I) of a randomly chosen orientation: the same distribution
of inputs as encoding a randomly flipped image on the fly, without the VAE's cost. (The fast-DiT
pre-extraction freezes one sample and one flip per image instead.)

On-disk layout of an extraction folder ``OUT``::

    OUT/index.json                 settings, classes, shard plan (written by rank 0 before the work)
    OUT/shard-000000.moments.npy   float16 (n, 2, 2, C, h, w): [image, mirror] x [mean, std], unscaled
    OUT/shard-000000.labels.npy    int64 (n,)
    OUT/shard-000000.pixels.npy    uint8 (n, 3, S, S): the centre crop itself (only with ``pixels``, for REPA)
    OUT/shard-000000.json          done marker, written last: count, skipped unreadable images

Shard s covers dataset indices [s * shard_size, (s + 1) * shard_size) minus unreadable images.
With W processes, rank r writes shards r, r + W, r + 2W, ... (no file has two writers); every file
is written through `sit.io.atomic_path` (a hidden temporary file, fsynced, renamed), so a killed run leaves no half shard and
a rerun with the same arguments skips the finished shards (resume).

With ``pixels`` (`sit extract --pixels`) the ADM centre crop at the training resolution is kept
beside the latents, raw uint8 (memory-mapped; the mirror is read as the image flipped, so a
mirrored latent comes with the mirrored image): 192 KiB per 256^2 image, chosen over PNG (about
108 KiB on natural images, but ~580 decodes/s per core) and zlib for read speed (docs/data.md).

Size: 2 (image, mirror) x 2 (mean, std) x 4 x 32 x 32 x 2 bytes (float16) = 32 KiB per 256^2 image,
42.0 GB (39.1 GiB) for ImageNet's 1,281,167 training images (see docs/data.md).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sit.config import field_error
from sit.data.imagefolder import CorruptImageError, ImageFolderDataset

log = logging.getLogger("sit.data")

FORMAT = "sit-latents"
VERSION = 1
INDEX = "index.json"
STORE_DTYPES = ("float16", "float32")
LATENT_NORMS = ("none", "channel")   # --latent-norm: per-channel statistics computed at extraction (LightningDiT)
# settings that must agree between a resumed extraction and the folder it writes into
_MATCH_KEYS = ("format", "version", "dtype", "latent_shape", "image_size", "vae",
               "num_classes", "classes", "num_files", "shard_size", "num_shards", "files_sha256")


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


def _files_digest(dataset: ImageFolderDataset) -> str:
    h = hashlib.sha256()
    for path, label in dataset.samples:
        h.update(f"{os.path.relpath(path, dataset.root)}\t{label}\n".encode())
    return h.hexdigest()


def pixels_record(image_size: int) -> dict[str, Any]:
    """The index entry of stored pixels (`sit extract --pixels`)."""
    return {"dtype": "uint8", "shape": [3, int(image_size), int(image_size)],
            "layout": "pixels (n, 3, S, S) uint8: the ADM centre crop, not mirrored (x / 127.5 - 1 is the image in [-1, 1])"}


def to_uint8(images: Tensor) -> np.ndarray:
    """Images in [-1, 1] made by `sit.data.imagefolder.to_tensor` (v / 127.5 - 1) -> their uint8 values v (exact)."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


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
    stats = ExtractStats()
    for s in mine:  # leftovers of a killed run (each shard has one writer, so they are ours)
        stem = shard_stem(out_dir, s)
        for suffix in (".labels.npy", ".moments.npy", ".pixels.npy", ".json"):
            old = [stem + suffix + ".tmp"]  # sit <= 0.1's name; now sit.io's hidden .NAME.tmpPID
            old += glob.glob(os.path.join(os.path.dirname(stem), f".{os.path.basename(stem)}{suffix}.tmp*"))
            for p in old:
                if os.path.exists(p):
                    os.remove(p)
    todo = []
    for s in mine:
        (stats.shards_resumed if shard_done(out_dir, s, *ranges[s], pixels=pixels) else todo).append(s)
    if stats.shards_resumed:
        log.info("rank %d: %d finished shard(s) found, skipped", rank, len(stats.shards_resumed))
    np_dtype = np.dtype(dtype)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(ranges[s][1] - ranges[s][0] for s in todo), unit="img", desc=f"extract (rank {rank})")
    for s in todo:
        start, stop = ranges[s]
        loader = DataLoader(_ShardImages(dataset, start, stop), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
        moments, labels, skipped, pix = [], [], [], []
        for images, label, idx, err in loader:
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
            images = images[ok]
            b = len(images)
            mean, std = vae.encode_moments(torch.cat([images, images.flip(-1)]))  # (2b, C, h, w)
            m = torch.stack([torch.stack([mean[:b], std[:b]], 1), torch.stack([mean[b:], std[b:]], 1)], 1)
            moments.append(m.numpy().astype(np_dtype))  # (b, 2, 2, C, h, w)
            labels.append(label[ok].numpy().astype(np.int64))
            if pixels:
                pix.append(to_uint8(images))
        c, h, w = index["latent_shape"]
        moments = np.concatenate(moments) if moments else np.zeros((0, 2, 2, c, h, w), np_dtype)
        labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= index["num_classes"]):
            raise ValueError(f"label outside the class range [0, {index['num_classes']}) in shard {s}")
        stem = shard_stem(out_dir, s)
        _save_npy(stem + ".labels.npy", labels)
        _save_npy(stem + ".moments.npy", moments)
        if pixels:
            sz = index["image_size"]
            _save_npy(stem + ".pixels.npy", np.concatenate(pix) if pix else np.zeros((0, 3, sz, sz), np.uint8))
        marker = {"shard": s, "start": start, "stop": stop, "count": len(labels), "skipped": skipped}
        if latent_norm == "channel":
            marker["channel_sums"] = channel_sums(moments)
        _save_json(stem + ".json", marker)
        stats.shards_written.append(s)
        stats.images_written += len(labels)
        stats.bad_images += [k["path"] for k in skipped]
    if bar is not None:
        bar.close()
    if latent_norm == "channel" and os.path.isfile(index_path):  # (no index yet: rank 0 has not started)
        finish_latent_norm(out_dir)
    return stats


def check_extraction(root: str | os.PathLike) -> tuple[dict[str, Any], list[int]]:
    """(index, missing shard ids) of an extraction folder."""
    index = read_index(root)
    ranges = shard_ranges(index["num_files"], index["shard_size"])
    pixels = "pixels" in index
    missing = [s for s, (a, b) in enumerate(ranges) if not shard_done(root, s, a, b, pixels=pixels)]
    return index, missing


def _check_labels(labels: np.ndarray, path: str, num_classes: int) -> None:
    """Labels must be integers in [0, num_classes): num_classes itself is the null (unconditional)
    label of classifier-free guidance, and would silently train as such."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"latent shard {path!r}: labels must be a 1-d integer array; got {labels.dtype} {labels.shape}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(
            f"latent shard {path!r}: label {int(bad[0])} outside the allowed range [0, {num_classes}) "
            f"({bad.size} bad label(s); num_classes {num_classes} from index.json; {num_classes} is the null class)"
        )


class LatentShardDataset(Dataset):
    """Training items from an extraction folder: i -> (latent float32 (C, h, w), label int).

    latent = space.to_network(mean_o + std_o * N(0, I)) (= (z - shift_factor) * scale_factor, see
    `sit.vae.LatentSpace`) with o, the orientation (image or mirror), chosen with probability 1/2
    when ``flip`` (else the image), i.e. a fresh posterior sample of a randomly flipped image every
    epoch. ``sample=False`` uses mean_o. ``space`` defaults to the index's (`index_space`);
    training may pass another (the stored moments are unscaled, so any scale / shift applies).
    Randomness comes from a generator seeded by (seed, epoch, i), so items are reproducible and
    independent of DataLoader workers; call :meth:`set_epoch` every epoch (with
    persistent_workers=True the workers keep the epoch they were started with).
    Shards are memory-mapped lazily in each process (safe with worker processes).
    ``pixels``: items are (latent, label, image) with the stored centre crop as uint8 (3, S, S),
    mirrored exactly when the latent is the mirror's (a folder extracted without pixels is refused).
    """

    def __init__(self, root: str | os.PathLike, flip: bool = True, *, sample: bool = True, seed: int = 0,
                 space=None, pixels: bool = False):
        self.root = str(root)
        index, missing = check_extraction(root)
        if missing:
            raise FileNotFoundError(
                f"latent folder {self.root!r} is incomplete: {len(missing)} of {index['num_shards']} shard(s) "
                f"missing (e.g. {missing[:5]}); rerun `sit extract` with the same arguments to finish it"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (got {seed})")
        if pixels and "pixels" not in index:
            raise field_error(ValueError,
                f"the latent folder {self.root!r} holds no images for the {{TrainConfig.repa_encoder}}; extract it "
                "again into a new folder with `sit extract` and {Extract.pixels} (the centre crops beside the latents)")
        self.index = index
        self.flip, self.sample, self.seed, self.epoch = bool(flip), bool(sample), int(seed), 0
        self.pixels = bool(pixels)
        verify_latent_norm(root, index)
        self.space = index_space(index) if space is None else space
        self.latent_shape = tuple(index["latent_shape"])
        self.num_classes = int(index["num_classes"])
        self.classes = list(index["classes"])
        labels, counts = [], []
        for s in range(index["num_shards"]):
            lab = np.load(shard_stem(root, s) + ".labels.npy")
            _check_labels(lab, shard_stem(root, s) + ".labels.npy", self.num_classes)
            labels.append(lab)
            counts.append(len(lab))
            if self.pixels:   # the stored images: uint8 of the recorded shape, one per label
                path = shard_stem(root, s) + ".pixels.npy"
                px = np.load(path, mmap_mode="r")
                if px.dtype != np.uint8 or list(px.shape) != [len(lab), *index["pixels"]["shape"]]:
                    raise ValueError(f"latent shard {path!r} holds {px.dtype} {tuple(px.shape)}, not the uint8 "
                                     f"{tuple([len(lab), *index['pixels']['shape']])} its index records; extract it again")
        self.targets = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        self.num_skipped = index["num_files"] - len(self.targets)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self._pix: dict[int, np.ndarray] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"], state["_pix"] = {}, {}  # each worker opens its own memory maps
        return state

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0 (got {epoch})")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def moments(self, index: int) -> np.ndarray:
        """Stored moments of item ``index``: (2, 2, C, h, w) = [image, mirror] x [mean, std] (unscaled)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} latents")
        s = int(np.searchsorted(self._starts, index, side="right")) - 1
        if s not in self._maps:
            self._maps[s] = np.load(shard_stem(self.root, s) + ".moments.npy", mmap_mode="r")
        return self._maps[s][index - self._starts[s]]

    def image(self, index: int, mirror: bool = False) -> Tensor:
        """The stored centre crop of item ``index``, uint8 (3, S, S), mirrored when ``mirror``."""
        s = int(np.searchsorted(self._starts, index, side="right")) - 1
        if s not in self._pix:
            self._pix[s] = np.load(shard_stem(self.root, s) + ".pixels.npy", mmap_mode="r")
        p = torch.from_numpy(np.array(self._pix[s][index - self._starts[s]]))  # a copy out of the memory map
        return p.flip(-1) if mirror else p   # (torch's flip: ~10x numpy's strided copy)

    def __getitem__(self, index: int) -> tuple:
        index = int(index)
        m = self.moments(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        o = int(rng.integers(2)) if self.flip else 0
        z = m[o, 0].astype(np.float32)
        if self.sample:
            z = z + m[o, 1].astype(np.float32) * rng.standard_normal(z.shape, dtype=np.float32)
        item = torch.from_numpy(self.space.to_network(z)), int(self.targets[index])
        return (*item, self.image(index, o == 1)) if self.pixels else item

    @property
    def scale_factor(self) -> float:
        return self.space.scale


# the per-channel statistics (--latent-norm channel) live in their own module; re-exported here, where
# the extraction and the reader use them (imported last: that module reads this one's helpers)
from sit.data.latent_norm import (  # noqa: E402
    channel_sums,
    finish_latent_norm,
    latent_norm_stats,
    verify_latent_norm,
)

__all__ = ["FORMAT", "VERSION", "INDEX", "LatentShardDataset", "ExtractStats", "extract_latents", "check_extraction",
           "read_index", "index_space", "make_index", "pixels_record", "to_uint8", "shard_done", "shard_stem",
           "shard_ranges", "rank_shards", "nonfinite_shards", "channel_sums", "finish_latent_norm",
           "latent_norm_stats", "verify_latent_norm"]
