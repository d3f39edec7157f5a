"""On-disk cache of reference features: a small reference set's images (the embedded datasets
`digits`, `mnist_5k`, a study's training images) go through a feature network once, not on every
call. One store serves every caller:

* ``cached_features`` — any scorer of ``sit.evaluate.scorers`` (via
  ``sit.evaluate.scorer.reference_features``): the entry ``<scorer>-<name>-<key>.npz`` holds every
  feature array the scorer returns, keyed by the sha256 of the images and the scorer's identity
  (weights sha256 + preprocessing version).
* ``cached_reference_features`` — the Inception reference (``InceptionScorer.reference``, which
  ``reference_features`` asks for, so `sit eval`, the study and the seam share one entry per reference):
  the entry ``<name>-<key>.npz`` holds the pool3 (N, 2048) and spatial (N, 2023) features, float64,
  exactly as ``InceptionFeatures.features`` returns them, keyed by the sha256 of the Inception
  weights file, the reference uint8 images (which fix the dataset, its size and how it was
  resized / padded) and ``FEATURES_VERSION``. FID (mean / covariance), sFID and precision / recall
  are computed from them as without the cache, so cached and uncached runs give identical numbers.

The two differ only in how the arrays sit in the .npz (``_Layout``: fixed member names, or names
listed in the entry); reading, verifying and writing are one code path. Entries live under
``$SIT_CACHE/refstats`` (default ``~/.cache/sit/refstats``), are written atomically
(``sit.io.save_npz_atomic``) and verified on read (zip CRC, key, rows, the width of each feature
where known, sha256 of the feature bytes); a bad entry is recomputed with a message.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
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


def generic_key(identity: str, images: np.ndarray) -> str:
    """The entry key: sha256 of the features' ``identity`` and the images (shape, dtype, bytes)."""
    h = hashlib.sha256(f"{identity}|{images.shape}|{images.dtype}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:24]


def cache_key(weights_sha256: str, images: np.ndarray) -> str:
    """The key of an Inception reference entry (the same string as ``InceptionScorer.identity``)."""
    return generic_key(f"{FEATURES_VERSION}|{weights_sha256}", images)


def _digest_all(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class _Layout:
    """How an entry's arrays sit in its .npz. ``fixed``: the arrays, stored under their own names
    and digested as their bytes in this order (Inception reference entries); ``None``: names listed
    in the member ``names``, each stored as ``f_<name>`` and digested with its name, dtype and shape."""

    fixed: tuple[str, ...] | None = None

    def members(self, z) -> dict[str, str]:
        names = self.fixed if self.fixed else [str(v) for v in z["names"]]
        return {k: (k if self.fixed else f"f_{k}") for k in names}

    def digest(self, arrays: dict) -> str:
        if not self.fixed:
            return _digest_all(arrays)
        h = hashlib.sha256()
        for k in self.fixed:
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        return h.hexdigest()

    def entry(self, key: str, arrays: dict) -> dict:
        """The members of the .npz, in the order they have always been written."""
        tag = {"key": np.array(key), "digest": np.array(self.digest(arrays))}
        if self.fixed:
            return {k: arrays[k] for k in self.fixed} | tag
        return tag | {"names": np.array(sorted(arrays))} | {f"f_{k}": v for k, v in arrays.items()}


LISTED, INCEPTION = _Layout(), _Layout(("pool", "spatial"))


def read_cached(path: Path, key: str, n: int, dims: dict[str, int] | None = None, layout: _Layout = LISTED) -> dict:
    """The feature arrays stored in ``path`` (each (n, D), D = ``dims[name]`` where given); ValueError
    saying what is wrong otherwise."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            stored_key, digest = str(z["key"]), str(z["digest"])
            arrays = {k: z[m] for k, m in layout.members(z).items()}
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
    if layout.digest(arrays) != digest:
        raise ValueError("sha256 of the features does not match the one stored with them")
    return arrays


def _cached(path: Path, key: str, name: str, images: np.ndarray, compute: Callable[[np.ndarray], dict], *,
            layout: _Layout, dims: dict[str, int] | None, log: Callable[[str], None]) -> tuple[dict, bool]:
    """(features, read from the cache?): the valid entry ``path``, else ``compute(images)`` stored there."""
    if path.is_file():
        try:
            out = read_cached(path, key, len(images), dims, layout)
            log(f"reference features of {name}: cached {path}")
            return out, True
        except ValueError as e:
            log(f"reference features cache entry {path} is corrupt ({e}); recomputing")
    log(f"reference features of {name}: computing {len(images)} images once (cached in {path.parent})")
    out = compute(images)
    try:
        save_npz_atomic(path, **layout.entry(key, out))
    except OSError as e:
        log(f"could not write the reference features cache {path} ({e}); they will be recomputed next time")
    return out, False


def _root(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def cached_reference_features(name: str, images: np.ndarray, feats, *, cache_dir=None,
                              log: Callable[[str], None] = print) -> dict:
    """dict(pool (N, 2048), spatial (N, 2023), logits) of the uint8 reference ``images`` under
    ``feats`` (an ``InceptionFeatures``), from the cache when a valid entry exists (logits None),
    otherwise computed and stored. ``cache_dir=False`` disables the cache."""
    if cache_dir is False:
        return feats.features(images, spatial=True)
    images = np.asarray(images)
    key = cache_key(sha256_file(feats.path), images)
    out, hit = _cached(_root(cache_dir) / f"{name}-{key}.npz", key, name, images,
                       lambda x: feats.features(x, spatial=True), layout=INCEPTION,
                       dims={"pool": POOL_DIM, "spatial": SPATIAL_DIM}, log=log)
    return out | {"logits": None} if hit else out


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

    def arrays(x):
        return {k: np.asarray(v) for k, v in compute(x).items() if v is not None}

    key = generic_key(identity, images)
    out, _ = _cached(_root(cache_dir) / f"{name}-{key}.npz", key, name, images, arrays,
                     layout=LISTED, dims=dims, log=log)
    return out
