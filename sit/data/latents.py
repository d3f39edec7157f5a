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

The folder's format is `sit.data.latent_folder`, its writer `sit.data.latent_writer`
(`extract_latents`), its reader `sit.data.latent_reader` (`LatentShardDataset`) and its per-channel
statistics `sit.data.latent_norm`; this module re-exports their names, the one import path of
every caller.
"""

from sit.data.latent_folder import (
    FORMAT,
    INDEX,
    LATENT_NORMS,
    STORE_DTYPES,
    VERSION,
    check_extraction,
    index_space,
    make_index,
    nonfinite_shards,
    pixels_record,
    rank_shards,
    read_index,
    shard_done,
    shard_ranges,
    shard_stem,
)
from sit.data.latent_norm import channel_sums, finish_latent_norm, latent_norm_stats, verify_latent_norm
from sit.data.latent_reader import LatentShardDataset
from sit.data.latent_writer import ExtractStats, extract_latents, to_uint8

__all__ = ["FORMAT", "VERSION", "INDEX", "STORE_DTYPES", "LATENT_NORMS", "LatentShardDataset", "ExtractStats",
           "extract_latents", "check_extraction", "read_index", "index_space", "make_index", "pixels_record",
           "to_uint8", "shard_done", "shard_stem", "shard_ranges", "rank_shards", "nonfinite_shards", "channel_sums",
           "finish_latent_norm", "latent_norm_stats", "verify_latent_norm"]
