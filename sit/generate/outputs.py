"""`Outputs`: what `sample_set` writes beside samples.npz (torch-free: `sit sample`'s output flags are
generated from its fields' metadata, `sit.commands.flags`). Re-exported by `sit.generate.run`.

Imports no torch. Must not import: anything of sit.
"""

from __future__ import annotations

import dataclasses


def _switch(help: str):
    return dataclasses.field(default=False, metadata={"help": help, "switch": True})


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What is written beside samples.npz (none of it changes a sample)."""

    grid_png: bool = _switch("write grid.png of (up to 256) samples")
    png_folder: bool = _switch("also write every image to DIR/images/NNNNNN.png")
    keep_parts: bool = _switch("keep the per-batch part files after merging")
    progress: bool = dataclasses.field(default=True, metadata=dict(help="show a progress bar", flag="--no-progress"))
