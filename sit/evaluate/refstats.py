"""On-disk cache of reference Inception features for the small in-memory reference sets
(the embedded datasets `digits`, `mnist_5k`), so `sit eval digits ...` pushes the 1,797 (or
5,000) reference images through Inception once, not on every call.

An entry holds the pool3 (N, 2048) and spatial (N, 2023) features, float64, exactly as
``InceptionFeatures.features`` returns them: FID (mean / covariance), sFID and precision / recall
are computed from them as without the cache, so cached and uncached runs give identical numbers.
It is keyed by the sha256 of the Inception weights file, the sha256 of the reference uint8 images
(which fixes the dataset, its size and how it was resized / padded) and ``FEATURES_VERSION``;
written atomically (``sit.io.save_npz_atomic``) as ``<cache>/<name>-<key>.npz`` under
``$SIT_CACHE/refstats`` (default ``~/.cache/sit/refstats``), and verified on read (zip CRC, key,
shapes, sha256 of the feature bytes); a bad entry is recomputed with a message.

``cached_features`` is the same store for any scorer of ``sit.evaluate.scorers``: the entry
``<scorer>-<name>-<key>.npz`` holds every feature array the scorer returns, keyed by the sha256 of
the images and the scorer's identity (weights sha256 + preprocessing version), verified likewise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from sit.io import save_npz_atomic, sha256_file

FEATURES_VERSION = "inception-tf1-bilinear-299-v1"  # bump when the feature pipeline changes
POOL_DIM, SPATIAL_DIM = 2048, 17 * 17 * 7


def default_cache_dir() -> Path:
    """``$SIT_CACHE/refstats`` or ``~/.cache/sit/refstats``."""
    root = os.environ.get("SIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sit")
    return Path(root) / "refstats"


def cache_key(weights_sha256: str, images: np.ndarray) -> str:
    h = hashlib.sha256(f"{FEATURES_VERSION}|{weights_sha256}|{images.shape}|{images.dtype}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def _digest(pool: np.ndarray, spatial: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pool).tobytes())
    h.update(np.ascontiguousarray(spatial).tobytes())
    return h.hexdigest()


def read_entry(path: Path, key: str, n: int) -> dict:
    """The features in ``path``; ValueError saying what is wrong with it otherwise."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key, digest = str(z["key"]), str(z["digest"])
            pool, spatial = z["pool"], z["spatial"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if stored_key != key:
        raise ValueError(f"key {stored_key!r} instead of {key!r}")
    if pool.shape != (n, POOL_DIM) or spatial.shape != (n, SPATIAL_DIM):
        raise ValueError(f"shapes {pool.shape}, {spatial.shape} instead of ({n}, {POOL_DIM}), ({n}, {SPATIAL_DIM})")
    if _digest(pool, spatial) != digest:
        raise ValueError("sha256 of the features does not match the one stored with them")
    return {"pool": pool, "spatial": spatial}


def cached_reference_features(name: str, images: np.ndarray, feats, *, cache_dir=None,
                              log: Callable[[str], None] = print) -> dict:
    """dict(pool (N, 2048), spatial (N, 2023), logits None) of the uint8 reference ``images``
    under ``feats`` (an ``InceptionFeatures``), from the cache when a valid entry exists,
    otherwise computed and stored. ``cache_dir=False`` disables the cache."""
    if cache_dir is False:
        return feats.features(images, spatial=True)
    images = np.asarray(images)
    key = cache_key(sha256_file(feats.path), images)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{name}-{key}.npz"
    if path.is_file():
        try:
            out = read_entry(path, key, len(images))
            log(f"reference features of {name}: cached {path}")
            return out | {"logits": None}
        except ValueError as e:
            log(f"reference features cache entry {path} is corrupt ({e}); recomputing")
    log(f"reference features of {name}: computing {len(images)} images once (cached in {path.parent})")
    out = feats.features(images, spatial=True)
    try:
        save_npz_atomic(path, pool=out["pool"], spatial=out["spatial"], key=np.array(key),
                        digest=np.array(_digest(out["pool"], out["spatial"])))
    except OSError as e:
        log(f"could not write the reference features cache {path} ({e}); they will be recomputed next time")
    return out


def _digest_all(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def generic_key(identity: str, images: np.ndarray) -> str:
    h = hashlib.sha256(f"{identity}|{images.shape}|{images.dtype}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def read_generic(path: Path, key: str, n: int, dims: dict[str, int] | None = None) -> dict:
    """The feature arrays stored in ``path`` (each (n, D), D = ``dims[name]`` where given); ValueError
    saying what is wrong otherwise."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key, digest = str(z["key"]), str(z["digest"])
            names = [str(v) for v in z["names"]]
            arrays = {k: z[f"f_{k}"] for k in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if stored_key != key:
        raise ValueError(f"key {stored_key!r} instead of {key!r}")
    bad = {k: a.shape for k, a in arrays.items() if a.ndim != 2 or a.shape[0] != n}
    if bad:
        raise ValueError(f"shapes {bad} instead of ({n}, D)")
    want = {k: (n, int(d)) for k, d in (dims or {}).items()}
    bad = {k: arrays[k].shape if k in arrays else None for k in want if k not in arrays or arrays[k].shape != want[k]}
    if bad:
        raise ValueError(f"shapes {bad} instead of {want}")
    if _digest_all(arrays) != digest:
        raise ValueError("sha256 of the features does not match the one stored with them")
    return arrays


def cached_features(name: str, images: np.ndarray, identity: str, compute: Callable[[np.ndarray], dict], *,
                    cache_dir=None, log: Callable[[str], None] = print, dims: dict[str, int] | None = None) -> dict:
    """``compute(images)`` (a dict of float arrays (N, D); None values are dropped), from the cache
    ``<cache>/<name>-<key>.npz`` when a valid entry exists, else computed and stored. The key is
    the sha256 of ``identity`` and the images; an entry that fails verification (``dims``: the
    width D each named feature must have) is recomputed with a message. ``cache_dir=False``
    disables the cache."""
    images = np.asarray(images)
    if cache_dir is False:
        return {k: v for k, v in compute(images).items() if v is not None}
    key = generic_key(identity, images)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"{name}-{key}.npz"
    if path.is_file():
        try:
            out = read_generic(path, key, len(images), dims)
            log(f"reference features of {name}: cached {path}")
            return out
        except ValueError as e:
            log(f"reference features cache entry {path} is corrupt ({e}); recomputing")
    log(f"reference features of {name}: computing {len(images)} images once (cached in {path.parent})")
    out = {k: np.asarray(v) for k, v in compute(images).items() if v is not None}
    try:
        save_npz_atomic(path, key=np.array(key), digest=np.array(_digest_all(out)), names=np.array(sorted(out)),
                        **{f"f_{k}": v for k, v in out.items()})
    except OSError as e:
        log(f"could not write the reference features cache {path} ({e}); they will be recomputed next time")
    return out
