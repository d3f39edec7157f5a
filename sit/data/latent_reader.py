"""The reader of a latent folder: `LatentShardDataset`, the training items (a fresh posterior
sample of a randomly mirrored image every epoch, reproducible from (seed, epoch, item)), with every
check a reader makes (complete shards, labels in range, the per-channel statistics and the stored
pixels as the index records them). The folder's layout is `sit.data.latent_folder`'s;
`sit.data.latents` re-exports this.

Must not import: ``sit.data.latents``, ``sit.data.latent_writer``, ``sit.train``, ``sit.commands``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sit.config import field_error
from sit.data.latent_folder import check_extraction, index_space, shard_stem
from sit.data.latent_norm import verify_latent_norm


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
                "again into a new folder with `sit extract` and {ExtractOptions.pixels} (the centre crops beside the latents)")
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
