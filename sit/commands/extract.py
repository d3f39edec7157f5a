"""`sit extract`: encode an ImageFolder once into sharded VAE latents for training (see docs/data.md)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Literal

from sit.commands._args import add_command, finish_command
from sit.commands.flags import add_record_arguments, given_values, option

EXAMPLES = """examples:
  sit extract --data imagenet/train --out latents/in256 --image-size 256 --vae /models/sd-vae-ft-ema
  torchrun --nproc-per-node 8 -m sit.cli extract --data imagenet/train --out latents/in256 --vae ema --on-error skip
  sit extract --out latents/in256 --check        # are all shards there?
  sit extract --data imagenet/train --out latents/in256n --vae /models/sd-vae-ft-ema --latent-norm channel
  sit extract --data imagenet/train --out latents/in256p --vae /models/sd-vae-ft-ema --pixels   # for REPA
  RANK=3 WORLD_SIZE=16 sit extract --data imagenet/train --out latents/in256 --vae ema   # job 3 of 16 (e.g. a SLURM array)

Rerunning the same command resumes: finished shards are skipped. Each process writes its own
shards (rank r: shards r, r+W, ...). Per image the posterior mean and std of the image and of its
mirror are stored (float16: 32 KiB per 256x256 image, ~42 GB for ImageNet-1k train); with
--pixels also the centre crop itself (raw uint8: 192 KiB per 256x256 image, ~252 GB for ImageNet-1k
train), so REPA trains from the latents without the VAE.
"""


@dataclass(frozen=True)
class ExtractOptions:
    """The options of `sit extract`: its flags are these fields (library messages name them as
    ``{ExtractOptions.pixels}``, written as the flag). Checked here, before anything is read or written."""

    data: str | None = option(None, "ImageFolder root: one sub-folder of images per class", metavar="DIR")
    out_dir: str = option(help="output folder (index.json + shard-*.npy)", flag="--out", metavar="DIR")
    image_size: int = option(256, "ADM centre-crop size", metavar="PIXELS")
    vae: str = option("ema", "folder with config.json + diffusion_pytorch_model.safetensors, or ema/mse/<hub id> "
                      "already in the local HF cache (default: ema = stabilityai/sd-vae-ft-ema)", metavar="PATH|NAME")
    vae_scale: float | None = option(None, "latent scale recorded in index.json: training sees (z - shift) * S "
                                     "(default: the VAE config's scaling_factor, 0.18215 for the SD VAE)", metavar="S")
    vae_shift: float | None = option(None, "latent shift recorded in index.json (default: the VAE config's "
                                     "shift_factor, 0 when it has none)", metavar="B")
    latent_norm: Literal["none", "channel"] = option(
        "none", "channel: also compute the per-channel mean and std of the whole set (exact, float64) into "
        "index.json; training on the folder then normalises each channel, applied after the scale and shift (LightningDiT)")
    pixels: bool = option(False, "also store each centre crop (uint8, raw: 192 KiB per 256x256 image) beside its "
                          "latents: the images REPA's encoder reads (sit train --latents DIR --repa-encoder "
                          "ENC)", switch=True)
    vae_dtype: Literal["fp32", "fp16", "bf16"] = option("fp32", "VAE compute dtype")
    dtype: Literal["float16", "float32"] = option("float16", "stored moments dtype")
    shard_size: int = option(10_000, "images per shard", metavar="IMAGES")
    batch_size: int = option(64, "images per VAE call (each also encoded mirrored: 2x this)", metavar="IMAGES")
    num_workers: int = option(4, "image-decoding worker processes", metavar="N")
    device: str | None = option(None, "cpu, cuda, ... (default: cuda:$LOCAL_RANK if available, else cpu)")
    on_error: Literal["raise", "skip"] = option("raise", "unreadable image: stop naming its path, or skip it and count it")
    num_classes: int | None = option(None, "label range [0, K) (default: number of class folders, or max label + 1)",
                                     metavar="K")
    label_map: str | None = option(None, 'JSON {"folder": label} (default: sorted folders)', metavar="JSON")
    rank: int | None = option(None, "this process's rank (default: $RANK, set by torchrun, else 0)")
    world_size: int | None = option(None, "number of processes sharing the work (default: $WORLD_SIZE, else 1)",
                                    metavar="W")
    check: bool = option(False, "only report whether {out_dir} is complete (exit 1 if not)", switch=True)

    def __post_init__(self):
        from sit.config import ConfigError, latent_value_problem

        if not self.check and not self.data:
            raise ConfigError("ExtractOptions", "data", "is required (the ImageFolder to encode), unless {check}")
        for name, least in (("image_size", 1), ("shard_size", 1), ("batch_size", 1), ("num_workers", 0)):
            if getattr(self, name) < least:
                raise ConfigError("ExtractOptions", name, f"must be >= {least} (got {getattr(self, name)})")
        for name in ("vae_scale", "vae_shift"):
            v = getattr(self, name)
            problem = None if v is None else latent_value_problem(name[4:], v)
            if problem:
                raise ConfigError("ExtractOptions", name, problem)


def register(subparsers) -> None:
    p = add_command(subparsers, "extract", description=EXAMPLES,
                    help="encode an image folder into sharded VAE latents (posterior mean/std, image + mirror)")
    add_record_arguments(p, ExtractOptions)
    finish_command(p, run)


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opts = ExtractOptions(**given_values(args, ExtractOptions))
    if opts.check:
        return check(opts.out_dir)
    from sit.folders import require_reachable

    require_reachable(opts.out_dir)
    return _extract(opts, progress=not args.no_progress)


def check(out: str) -> int:
    """`--check`: 0 when ``out`` holds a complete extraction with finite latents (its latent
    normalisation computed or verified), else 1 with what is missing."""
    from sit.data.latents import check_extraction, finish_latent_norm, nonfinite_shards

    index, missing = check_extraction(out)
    if missing:
        print(f"{out}: incomplete, {len(missing)} of {index['num_shards']} shard(s) missing: {missing[:20]}")
        return 1
    bad = nonfinite_shards(out, index)
    if bad:
        print(f"{out}: {len(bad)} shard(s) hold NaN/inf latents: {bad[:20]}; delete them and rerun `sit extract`")
        return 1
    if finish_latent_norm(out) is not None:  # (computed, or verified when already there)
        index, _ = check_extraction(out)
    print(f"{out}: complete, {index['num_shards']} shard(s), {index['num_files']} files, "
          f"latents {index['latent_shape']} {index['dtype']}, vae {index['vae']}, {_space_text(index)}"
          + (f", pixels {index['pixels']['shape']} uint8" if "pixels" in index else ""))
    return 0


def _extract(args: ExtractOptions, progress: bool) -> int:
    """Encode this rank's shards, then say whether the folder is complete (the last rank to finish sees it)."""
    from sit.data.imagefolder import ImageFolderDataset, load_label_map
    from sit.data.latents import check_extraction, extract_latents
    from sit.vae import VAE

    out = args.out_dir
    rank, world, device = _placement(args)
    class_to_idx = load_label_map(args.label_map) if args.label_map else None
    dataset = ImageFolderDataset(args.data, args.image_size, on_error=args.on_error, class_to_idx=class_to_idx,
                                 num_classes=args.num_classes)
    vae = VAE.from_pretrained(args.vae, device=device, dtype=args.vae_dtype, batch_size=2 * args.batch_size,
                              scale_factor=args.vae_scale, shift_factor=args.vae_shift)
    vae.latent_shape(args.image_size)  # size check before any work
    if rank == 0:
        print(f"extract: {len(dataset)} images, {dataset.num_classes} classes, {world} process(es), "
              f"vae {vae.name} on {device} (scale {vae.scale_factor:g}, shift {vae.shift_factor:g}) -> {out}", flush=True)
    stats = extract_latents(dataset, vae, out, shard_size=args.shard_size, batch_size=args.batch_size,
                            rank=rank, world_size=world, dtype=args.dtype, num_workers=args.num_workers,
                            progress=progress and rank == 0, latent_norm=args.latent_norm,
                            pixels=args.pixels)
    print(f"extract rank {rank}: wrote {len(stats.shards_written)} shard(s) ({stats.images_written} images), "
          f"{len(stats.shards_resumed)} already done, {len(stats.bad_images)} unreadable image(s) skipped",
          file=sys.stderr, flush=True)
    # no barrier: ranks never wait for each other (a slow or failed rank cannot hang the others);
    # whichever rank finishes last sees the folder complete
    try:
        index, missing = check_extraction(out)
    except FileNotFoundError:  # rank 0 (which writes index.json) has not started yet
        index, missing = None, ["index.json"]
    if missing:
        print(f"extract rank {rank}: done; other ranks not finished yet (missing: {missing[:5]}) "
              f"(check later with `sit extract --out {out} --check`)", file=sys.stderr)
    else:
        print(f"extract: {out} complete ({index['num_shards']} shards), {_space_text(index)}")
    return 0


def _placement(args):
    """(rank, world size, device). The ranks never communicate (each writes its own shards), so no
    process group is needed: rank and world size come from the flags or torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK), which also lets independent jobs (e.g. a SLURM array) share
    one extraction."""
    import os

    import torch

    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world size (got rank {rank}, world size {world})")
    device = args.device
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    return rank, world, torch.device(device)


def _space_text(index) -> str:
    from sit.data.latents import index_space

    sp = index_space({k: v for k, v in index.items() if k != "latent_norm"})
    text = f"scale {sp.scale:g}, shift {sp.shift:g}"
    if index.get("latent_norm", "none") != "none":
        stats = index.get("latent_norm_stats")
        text += (", per-channel normalisation: " + ("statistics not computed yet" if stats is None else
                 "z mean [" + ", ".join(f"{v:.4g}" for v in stats["mean"]) + "], std ["
                 + ", ".join(f"{v:.4g}" for v in stats["std"]) + "]"))
    return text
