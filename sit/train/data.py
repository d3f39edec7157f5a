"""The data sources of `sit train`: which rows each (step, micro-batch, rank) gets, and the
batches themselves (embedded pixels, an ImageFolder through the VAE, or latent shards).

A source owns its batches: `DataSource.batches` yields the network inputs (for an ImageFolder
the VAE posterior draw z = (mean + std * noise) * scale, the noise drawn on the CPU for the whole
global micro-batch from (seed, 3, step, micro) and this rank's rows taken, so it is the same for
any number of processes and on resume), the preview pixels (`to_pixels`), the real images shown
beside the samples and the quality reference (embedded data only), and a held-out batch for the
L_t table. The loop never asks which kind of data it has.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from sit.config import TrainConfig, field_error
from sit.train.seeds import generator


class StepSampler:
    """Indices of every (step, micro-batch, rank): the global batch of step s is the slice s of a
    permutation of range(n) seeded by (seed, epoch), epochs of n // global_batch steps (the
    remainder of each epoch is dropped). Rank r takes rows [r*b, (r+1)*b) of each micro-batch."""

    def __init__(self, n: int, global_batch: int, grad_accum: int, world_size: int, rank: int, seed: int):
        if global_batch % (grad_accum * world_size):
            raise ValueError(
                f"global batch {global_batch} must be divisible by grad_accum x world size = {grad_accum} x {world_size}"
            )
        if n < global_batch:
            raise ValueError(f"the dataset has {n} items, fewer than one global batch ({global_batch})")
        self.n, self.global_batch, self.grad_accum = n, global_batch, grad_accum
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.micro_global = global_batch // grad_accum
        self.local = self.micro_global // world_size
        self.steps_per_epoch = n // global_batch
        self._perm: tuple[int, Tensor] | None = None

    def position(self, step: int) -> dict[str, int]:
        """Data position before step ``step`` (0-based): epoch and the index into its permutation."""
        return {"epoch": step // self.steps_per_epoch, "index": (step % self.steps_per_epoch) * self.global_batch}

    def permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=generator(self.seed, 1, epoch)))
        return self._perm[1]

    def indices(self, step: int, micro: int) -> tuple[int, Tensor]:
        """(epoch, indices (local,)) of this rank's rows of micro-batch ``micro`` of step ``step``."""
        pos = self.position(step)
        start = pos["index"] + micro * self.micro_global + self.rank * self.local
        return pos["epoch"], self.permutation(pos["epoch"])[start : start + self.local]

    def rows(self) -> slice:
        """This rank's rows within a global micro-batch."""
        return slice(self.rank * self.local, (self.rank + 1) * self.local)


class _EpochItems(torch.utils.data.Dataset):
    """Wraps a dataset with ``set_epoch``: item (index, epoch) sets the epoch in this worker first."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, epoch = item
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _BatchList(torch.utils.data.Sampler):
    """Batch sampler yielding this rank's (index, epoch) lists for steps [start, stop)."""

    def __init__(self, sampler: StepSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self):
        return (self.stop - self.start) * self.sampler.grad_accum

    def __iter__(self):
        for s in range(self.start, self.stop):
            for m in range(self.sampler.grad_accum):
                epoch, idx = self.sampler.indices(s, m)
                yield [(int(i), epoch) for i in idx]


class DataSource:
    """What the loop needs from the data: size, shape, classes and batches per (step, micro)."""

    n: int
    channels: int
    size: int                       # network input side (pixels for embedded, latent side otherwise)
    num_classes: int
    info: dict                      # the "data" entry of config.json

    def batches(self, sampler: StepSampler, start: int, stop: int, num_workers: int,
                device: torch.device, pixels: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """(x, y) network inputs on ``device`` for every micro-batch of steps [start, stop) (this rank);
        with ``pixels`` (x, y, images in [-1, 1]) for loss terms that read the images (REPA)."""
        raise NotImplementedError

    def to_pixels(self, x: Tensor) -> Tensor | None:
        """Images in [-1, 1] of network-space samples ``x``; None when they cannot be decoded."""
        return None

    def real_images(self, k: int, n: int) -> Tensor | None:
        """``n`` real training images of each of the first ``k`` classes (for samples.png), or None."""
        return None

    def quality_reference(self) -> tuple[Tensor, Tensor] | None:
        """(images, labels) the quality number compares samples against, or None (not offered)."""
        return None

    def heldout(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """A held-out batch (network space) for the L_t table."""
        raise NotImplementedError


class EmbeddedSource(DataSource):
    """The embedded demo datasets (pixels, 1 channel), held on the device."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from sit.data.embedded import NUM_CLASSES, load_embedded

        x, y = load_embedded(cfg.dataset, "train", image_size=cfg.image_size, seed=0)
        self.dataset_name = cfg.dataset
        self.n, self.channels, self.size, self.num_classes = x.shape[0], 1, int(x.shape[-1]), NUM_CLASSES
        self.info = {"kind": "embedded", "dataset": cfg.dataset, "image_size": int(x.shape[-1]), "split": "train",
                     "heldout_fraction": 0.1, "split_seed": 0}
        self.x, self.y = x.to(device), y.to(device)

    def batches(self, sampler, start, stop, num_workers, device, pixels=False):
        for s in range(start, stop):
            for m in range(sampler.grad_accum):
                _, idx = sampler.indices(s, m)
                idx = idx.to(self.x.device)
                x = self.x[idx]
                yield (x, self.y[idx], x) if pixels else (x, self.y[idx])

    def to_pixels(self, x):
        return x

    def real_images(self, k, n):
        return torch.cat([self.x[self.y == c][:n] for c in range(k)])

    def quality_reference(self):
        from sit.data.embedded import load_embedded

        return load_embedded(self.dataset_name, "all", image_size=self.size)

    def heldout(self, device):
        from sit.data.embedded import load_embedded

        return load_embedded(self.dataset_name, "heldout", image_size=self.size)


class FolderSource(DataSource):
    """Latent shards (`sit extract`), or an ImageFolder encoded by the VAE on the fly
    (``posterior_seed`` set: the VAE posterior draw of the module docstring)."""

    def __init__(self, dataset: Any, vae: Any, info: dict, channels: int, size: int, posterior_seed: int | None = None):
        self.dataset, self.vae, self.info, self.posterior_seed = dataset, vae, info, posterior_seed
        self.n, self.channels, self.size, self.num_classes = len(dataset), channels, size, dataset.num_classes

    def batches(self, sampler, start, stop, num_workers, device, pixels=False):
        stored = getattr(self.dataset, "pixels", False)   # latent shards with their images (`sit extract --pixels`)
        if pixels and self.posterior_seed is None and not stored:
            raise field_error(ValueError, "these latent shards hold no images for the encoder: extract them with "
                              "`sit extract` and {ExtractOptions.pixels}")
        from sit.config import usable_cores

        dl = torch.utils.data.DataLoader(
            _EpochItems(self.dataset),
            batch_sampler=_BatchList(sampler, start, stop),
            # items are seeded per index, so the worker count changes no batch: more workers than
            # cores only costs memory (and torch's warning)
            num_workers=min(num_workers, usable_cores()),
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        micros = ((s, m) for s in range(start, stop) for m in range(sampler.grad_accum))
        for (step, micro), (xb, yb, *pb) in zip(micros, dl):
            img = xb.to(device, non_blocking=True)
            x = self._posterior(img, step, micro, sampler) if self.posterior_seed is not None else img
            if pb:  # stored uint8 images -> [-1, 1] as `sit.data.imagefolder.to_tensor` (v / 127.5 - 1, float32)
                img = pb[0].to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
            yb = torch.as_tensor(yb).long().to(device, non_blocking=True)
            yield (x, yb, img) if pixels else (x, yb)

    @torch.no_grad()
    def _posterior(self, x: Tensor, step: int, micro: int, sampler: StepSampler) -> Tensor:
        mean, std = self.vae.encode_moments(x)
        vg = generator(self.posterior_seed, 3, step, micro)
        noise = torch.randn((sampler.micro_global, *mean.shape[1:]), generator=vg)[sampler.rows()]
        return self.vae.space.to_network(mean + std * noise.to(mean.device))

    def to_pixels(self, x):
        return self.vae.decode(x.to(self.vae.device)) if self.vae is not None else None

    def heldout(self, device):
        n = min(len(self.dataset), 512)
        items = [self.dataset[i] for i in range(len(self.dataset) - n, len(self.dataset))]
        hx = torch.stack([it[0] for it in items])
        hy = torch.tensor([it[1] for it in items])
        if self.posterior_seed is not None:
            hx = self.vae.encode(hx.to(device))
        return hx, hy


def build_data(cfg: TrainConfig, device: torch.device) -> DataSource:
    """The training data of ``cfg``: embedded (pixels), ImageFolder through the VAE, or latent shards;
    its record (``info``) names REPA's folder encoders with their sha256 (`sit.train.repa.encoder_records`)."""
    source = _build_data(cfg, device)
    if cfg.repa_encoder is not None:
        from sit.train.repa import encoder_records

        records = encoder_records(cfg)
        if records:
            source.info = {**source.info, "repa_encoders": records}
    return source


def _build_data(cfg: TrainConfig, device: torch.device) -> DataSource:
    if cfg.latents is not None:
        from sit.data.latents import LatentShardDataset, index_space, read_index
        from sit.vae import recorded_vae_config, vae_config_record

        # the network's latent space: the index's scale / shift (cfg.vae_scale / vae_shift override:
        # the shards hold unscaled moments) and its per-channel normalisation, if extracted with one
        index = read_index(cfg.latents)
        space = index_space(index, cfg.vae_scale, cfg.vae_shift)
        vae_config = recorded_vae_config(index)  # what the extracting VAE's config said
        ds = LatentShardDataset(cfg.latents, flip=cfg.flip, seed=cfg.seed, space=space, pixels=cfg.repa_encoder is not None)
        c, h, w = ds.latent_shape
        if h != w:
            raise ValueError(f"latents must be square (got {h}x{w} in {cfg.latents!r})")
        vae = None
        if cfg.vae is not None:  # decodes the previews with the run's space (a contradicting VAE refused)
            from sit.vae import VAE, decode_space

            vae = VAE.from_pretrained(cfg.vae, device=device)
            vae.space = decode_space(vae.config_space, space, cfg.vae_scale, cfg.vae_shift, expected=vae_config, vae_name=vae.name,
                                     source=f"the latents {str(cfg.latents)!r}")
        info = {"kind": "latents", "root": str(cfg.latents), "latent_shape": [c, h, w], **space.record(),
                **vae_config_record(vae_config, space)}
        return FolderSource(ds, vae, info, c, h)
    if cfg.data is not None:
        from sit.data.imagefolder import ImageFolderDataset
        from sit.vae import VAE, vae_config_record

        size = cfg.image_size or 256
        ds = ImageFolderDataset(cfg.data, size, flip=cfg.flip, on_error=cfg.on_error, seed=cfg.seed)
        vae = VAE.from_pretrained(cfg.vae or "ema", device=device, scale_factor=cfg.vae_scale, shift_factor=cfg.vae_shift)
        c, h, w = vae.latent_shape(size)
        info = {"kind": "images", "root": str(cfg.data), "image_size": size, "vae": vae.name,
                "latent_shape": [c, h, w], **vae.space.record(), **vae_config_record(vae.config_space, vae.space)}
        return FolderSource(ds, vae, info, c, h, posterior_seed=cfg.seed)
    return EmbeddedSource(cfg, device)
