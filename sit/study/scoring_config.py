"""`ScoringConfig`: the scorers of a latent / image study (torch-free: `sit study`'s scoring flags are
generated from its fields' metadata, `sit.commands.flags`). Read by `sit.study.scoring`, which
re-exports it.

Imports no torch. Must not import: anything of sit but ``sit.config``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sit.config import ConfigError


def _flag(default, help: str, metavar: str):
    """A ScoringConfig field `sit study` sets by a flag: its help and metavar (metadata)."""
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True)
class ScoringConfig:
    """The scorers of a latent / image study (ignored by the embedded study, which uses the
    classifier scorer)."""

    inception: str = _flag("auto", "Inception weights of a {TrainConfig.latents} / {TrainConfig.data} study, as "
                           "`sit eval`", "auto|fid-helper|PATH")   # auto | fid-helper | path to pt_inception-*.pth
    dinov2: str | None = _flag(None, "local Dinov2Model folder: FD-DINOv2 as a second number", "DIR")
    ref: str | None = _flag(None, "ADM reference batch instead of the training images", "NPZ")
    ref_images: int = _flag(10_000, "training images in the reference, evenly spaced", "N")   # at most
    batch_size: int = 64             # Inception / DINOv2 / VAE batch

    def __post_init__(self):
        if not isinstance(self.ref_images, int) or isinstance(self.ref_images, bool) or self.ref_images < 2:
            raise ConfigError("ScoringConfig", "ref_images", f"must be an integer >= 2 (got {self.ref_images!r})")
