"""A tiny randomly initialised SD-style VAE folder, and a small image folder of the embedded digits,
so that `sit extract` / `sit train --data` can be tried without downloading anything
(`sit tiny-vae`, docs/data.md).

The VAE folder is what `diffusers.AutoencoderKL.save_pretrained` writes (``config.json`` +
``diffusion_pytorch_model.safetensors``), with the SD VAE's geometry (3 image channels, 4 latent
channels, downsampling 8, ``scaling_factor`` 0.18215) but widths of a few channels and random
weights. It says so twice: ``config.json`` holds ``"_sit_random_weights": true`` (diffusers drops
keys starting with "_" when it builds the model) and a README.md, and `sit.vae.VAE.from_pretrained`
logs a warning whenever it loads such a folder. Its latents mean nothing: it is for trying the
commands, never for results.

Owns: writing those two folders (each into a fresh folder, atomically: written beside it under a
temporary name, then renamed). Imports only the standard library at the top (`sit tiny-vae --help`
reads its defaults without torch). Must not import: train, generate, study, commands.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_WIDTHS = (8, 16, 32, 32)   # the SD VAE's (128, 256, 512, 512) / 16, 16, 16, 16: 4 levels, downsampling 8
EXAMPLE_SIZE = 64                  # pixel side of the example digits (8 x 8 upscaled 8x, nearest neighbour)

README = """# A tiny VAE with RANDOM weights

Made by `sit tiny-vae --seed {seed} --widths {widths}`. This is **not** stabilityai/sd-vae-ft-ema
and not any trained VAE: it has the SD VAE's geometry (3 image channels, 4 latent channels,
downsampling 8, scaling_factor {scale}) with block widths {widths} and randomly initialised
weights, so that `sit extract --vae THIS_FOLDER` and `sit train --data ... --vae THIS_FOLDER` can
be tried without a download. Its latents and decoded images mean nothing; use the real VAE for
any result (`--vae ema`, or a folder with the files of stabilityai/sd-vae-ft-ema).
"""


def _fresh(out: str | os.PathLike, field: str) -> Path:
    """``out`` as a Path, refused in one line when it exists (file, or folder with anything in it)
    or lies inside a checkpoint folder."""
    from sit.folders import checkpoint_above

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{field} {str(out)!r} already exists; sit writes this into a new (or empty) folder "
                              "only: choose another")
    ck = checkpoint_above(out)
    if ck is not None:
        raise ValueError(f"{field} {str(out)!r} is inside the checkpoint folder {str(ck)!r}; choose a folder outside it")
    return out


def _publish(tmp: Path, out: Path) -> None:
    if out.is_dir():
        out.rmdir()  # empty (checked by _fresh)
    os.replace(tmp, out)


def check_widths(widths) -> tuple[int, ...]:
    """The block widths as a tuple of 1 to 4 integers in [1, 512] (one level each), else ValueError."""
    widths = tuple(widths)
    if not 1 <= len(widths) <= 4 or any(isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 512 for w in widths):
        raise ValueError(f"widths must be 1 to 4 integers in [1, 512], one per level (got {list(widths)})")
    return widths


def write_tiny_vae(out: str | os.PathLike, seed: int = 0, widths=DEFAULT_WIDTHS, field: str = "out") -> Path:
    """Write a randomly initialised AutoencoderKL (SD geometry: 4 latent channels, scaling_factor 0.18215) (block widths ``widths``, one level per width:
    downsampling 2^(levels - 1), 8 for four) into the new folder ``out``; returns it."""
    import torch

    from sit.io import write_json, write_text_atomic
    from sit.vae import RANDOM_MARK, SCALE_FACTOR, VAE

    widths = check_widths(widths)
    out = _fresh(out, field)
    vae = VAE.tiny_random(seed, block_out_channels=widths, latent_channels=4, sample_size=256)
    model = vae.model
    model.register_to_config(scaling_factor=SCALE_FACTOR)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with torch.no_grad():
            model.save_pretrained(str(tmp), safe_serialization=True)
        cfg_path = tmp / "config.json"
        import json

        cfg = json.loads(cfg_path.read_text())
        cfg[RANDOM_MARK] = True
        cfg["_sit_made_by"] = f"sit tiny-vae --seed {seed} --widths {','.join(map(str, widths))}"
        write_json(cfg_path, cfg)
        write_text_atomic(tmp / "README.md", README.format(seed=seed, widths=",".join(map(str, widths)), scale=SCALE_FACTOR))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_example_images(out: str | os.PathLike, per_class: int = 10, size: int = EXAMPLE_SIZE,
                         field: str = "example_images") -> tuple[Path, int]:
    """An ImageFolder of the embedded digits (the first ``per_class`` of each class, class folders
    ``0`` .. ``9``, RGB PNGs of ``size`` pixels, upscaled by nearest neighbour) in the new folder
    ``out``; returns (out, images written)."""
    import numpy as np

    from sit.data.embedded import load_embedded
    from sit.io import save_png

    if not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"{field} per class must be >= 1 (got {per_class!r})")
    if size % 8:
        raise ValueError(f"{field} size must be a multiple of 8 (got {size})")
    out = _fresh(out, field)
    x, y = load_embedded("digits", "all")
    u8 = ((x[:, 0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    n = 0
    try:
        for c in range(10):
            (tmp / str(c)).mkdir(parents=True)
            for i in np.flatnonzero(y.numpy() == c)[:per_class]:
                save_png(np.repeat(u8[i][:, :, None], 3, axis=2), tmp / str(c) / f"{int(i):04d}.png", upscale=size // 8)
                n += 1
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, n
