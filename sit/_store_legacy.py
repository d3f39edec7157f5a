"""Interim delegation targets of `sit.checkpoints.resolve` / `identity` (moved here unchanged from
the dissolved ``sit.evaluate.sampling``) until the checkpoint store's own internals replace them;
nothing else may import this module."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sit.io import sha256_file


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The concrete checkpoint a path stands for (a run directory means its newest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if path.is_dir() and not (path / "config.json").is_file() and (path / "checkpoints").is_dir():
        from sit.models.checkpoint import _newest_checkpoint

        return _newest_checkpoint(path)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file; of a directory: sha256 over (name, sha256) of its weight/config files."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pt", ".pth", ".json", ".bin"))
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()
