"""Per-channel latent statistics of an extraction folder (`sit extract --latent-norm channel`,
LightningDiT): float64 sums per shard marker, the exact mean and std of what training draws, written
into index.json once the folder is complete and verified by every reader (docs/data.md).

Must not import: ``sit.data.latents``, ``sit.data.latent_writer``, ``sit.data.latent_reader`` (they import
this), ``sit.train``, ``sit.commands``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from sit.data.latent_folder import INDEX, _save_json, check_extraction, shard_stem


def channel_sums(moments: np.ndarray, chunk: int = 256) -> dict[str, Any]:
    """Float64 per-channel sums of stored moments (n, 2, 2, C, h, w) over items, both orientations
    and positions: ``count`` values per channel, ``sum`` of the posterior means, ``sum_sq`` of
    mean^2 + std^2 (the second moment of z ~ N(mean, std^2)), read in chunks (streaming)."""
    n, _, _, c, h, w = moments.shape
    s1, s2 = np.zeros(c, np.float64), np.zeros(c, np.float64)
    for i in range(0, n, chunk):
        m = np.asarray(moments[i: i + chunk], dtype=np.float64)
        s1 += m[:, :, 0].sum(axis=(0, 1, 3, 4))
        s2 += (m[:, :, 0] ** 2 + m[:, :, 1] ** 2).sum(axis=(0, 1, 3, 4))
    return {"count": int(n * 2 * h * w), "sum": s1.tolist(), "sum_sq": s2.tolist()}


def latent_norm_stats(root: str | os.PathLike, index: dict[str, Any]) -> dict[str, Any]:
    """Per-channel mean and std of the unscaled training latents z of a complete folder, from its
    shard markers' sums (combined in shard order, float64): the exact moments of what training
    draws, z ~ N(mean_o, std_o^2) with both orientations o equally likely (not a sample):
    mean_c = E[z_c], std_c = sqrt(E[z_c^2] - mean_c^2)."""
    c = index["latent_shape"][0]
    count, s1, s2 = 0, [0.0] * c, [0.0] * c
    for s in range(index["num_shards"]):
        path = shard_stem(root, s) + ".json"
        with open(path) as f:
            sums = json.load(f).get("channel_sums")
        if sums is None or len(sums["sum"]) != c or len(sums["sum_sq"]) != c:
            raise ValueError(f"shard marker {path!r} holds no per-channel sums for {c} channels; the folder was not "
                             "extracted with latent_norm 'channel' (extract it again into a new folder)")
        count += sums["count"]
        s1 = [a + b for a, b in zip(s1, sums["sum"])]
        s2 = [a + b for a, b in zip(s2, sums["sum_sq"])]
    if count == 0:
        raise ValueError(f"latent folder {str(root)!r} holds no latents to compute statistics from")
    mean = [a / count for a in s1]
    var = [b / count - m * m for b, m in zip(s2, mean)]
    if not all(np.isfinite(v) and v > 0 for v in var):
        raise ValueError(f"latent folder {str(root)!r}: per-channel variance {var} is not finite and positive")
    return {"space": "z: the VAE posterior, unscaled (before shift and scale)", "count": count,
            "mean": mean, "std": [float(np.sqrt(v)) for v in var]}


def finish_latent_norm(root: str | os.PathLike) -> dict[str, Any] | None:
    """When the folder (extracted with --latent-norm channel) is complete, write its statistics
    into index.json (atomically; every finishing process writes the same bytes) and return them;
    None while shards are missing. Already present statistics are verified, not rewritten."""
    index, missing = check_extraction(root)
    if index.get("latent_norm", "none") == "none" or missing:
        return None
    if "latent_norm_stats" in index:
        verify_latent_norm(root, index)
        return index["latent_norm_stats"]
    stats = latent_norm_stats(root, index)
    _save_json(os.path.join(root, INDEX), {**index, "latent_norm_stats": stats})
    return stats


def verify_latent_norm(root: str | os.PathLike, index: dict[str, Any]) -> None:
    """The statistics in index.json must equal those the shard markers give (a reader's check)."""
    if index.get("latent_norm", "none") == "none":
        return
    if "latent_norm_stats" not in index:
        raise ValueError(f"latent folder {str(root)!r}: the per-channel statistics are not computed yet; run "
                         "`sit extract` on this folder again in check mode to write them")
    if index["latent_norm_stats"] != latent_norm_stats(root, index):
        raise ValueError(f"latent folder {str(root)!r}: index.json's latent_norm_stats disagree with the shard markers "
                         "(edited or mixed folders); extract again into a new folder")
