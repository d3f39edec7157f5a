"""Diffusers folders as the checkpoint store sees them: the one place that asks "is this a
diffusers folder?" and, for one, how it is loaded and which of its files name it.

Two kinds: a folder written by `sit convert RUN --to diffusers OUT` (``sit_diffusers.json``,
`sit.models.diffusers_format`) and an official diffusers DiT folder (``model_index.json`` +
``transformer/``, `sit.models.diffusers_dit`). Neither is a training checkpoint: `sit.checkpoints`
does not verify them when resolving a path (each is verified when read, by its format module).

A module of its own (not a ``sit/store/`` package) because the store stays one flat module that
every reader imports as ``sit.checkpoints``; this one only holds the diffusers special cases it
used to repeat in four places. Imported by `sit.checkpoints` alone, which re-exports
`is_diffusers_folder` / `is_dit_folder`.

Must not import: ``sit.checkpoints`` (it imports this), ``sit.train``, ``sit.generate``,
``sit.evaluate``, ``sit.commands``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike

EXPORT = "export"   # `sit convert --to diffusers` folder
DIT = "dit"         # official diffusers DiT folder


def is_diffusers_folder(path: PathLike) -> bool:
    """A folder written by `sit convert RUN --to diffusers OUT` (it has sit_diffusers.json)."""
    from sit.models.diffusers_format import is_diffusers_folder as _is

    return _is(path)


def is_dit_folder(path: PathLike) -> bool:
    """An official diffusers DiT folder (`sit.models.diffusers_dit`: model_index.json, transformer/)."""
    from sit.models.diffusers_dit import is_dit_folder as _is

    return _is(path)


def diffusers_kind(path: PathLike) -> str | None:
    """`EXPORT`, `DIT`, or None when ``path`` is no diffusers folder."""
    if is_diffusers_folder(path):
        return EXPORT
    if is_dit_folder(path):
        return DIT
    return None


def load_diffusers_folder(ck: Path, kind: str, weights: str) -> tuple[Any, dict]:
    """(net, meta dict) of diffusers folder ``ck`` of `diffusers_kind` ``kind``. An export holds
    one set of weights: asking for the other (``weights`` "model" of an EMA export) is refused."""
    if kind == EXPORT:
        from sit.models.diffusers_format import load_diffusers

        net, meta = load_diffusers(ck)
        held = meta.get("weights") or "ema"
        if weights == "model" and held != "model":  # an export holds one set: never the other silently
            from sit.config import ConfigError

            raise ConfigError("", "weights", f"model asks for the raw weights, but the diffusers export {str(ck)!r} "
                              f"holds the {held} weights only (export them with `sit convert RUN {{ConvertOptions.to}} "
                              f"diffusers OUT {{ConvertOptions.prefer}} model`)")
        return net, meta
    from sit.models.diffusers_dit import load_dit_folder

    return load_dit_folder(ck)


def identity_files(ck: Path, kind: str) -> list[Path]:
    """The files that name diffusers folder ``ck``: its weights and the metadata that says how to read them."""
    if kind == EXPORT:
        from sit.models.diffusers_format import METADATA, WEIGHTS

        return [ck / METADATA, ck / WEIGHTS]
    from sit.models.diffusers_dit import identity_files as _dit_files

    return _dit_files(ck)
