"""`sit tiny-vae`: write a tiny randomly initialised SD-style VAE folder (and, optionally, a small
image folder of the embedded digits) to try `sit extract` without downloading a VAE (docs/data.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sit.commands._args import add_command, finish_command
from sit.commands.flags import add_record_arguments, given_values, option
from sit.vae_tiny import DEFAULT_WIDTHS, EXAMPLE_SIZE

EXAMPLES = """examples:
  sit tiny-vae --out vae-tiny --example-images digits-png
  sit extract --data digits-png --out latents/digits --vae vae-tiny --image-size 64 --num-workers 0

The VAE has the SD VAE's geometry (3 image channels, 4 latent channels, downsampling 8,
scaling_factor 0.18215) with widths of a few channels and RANDOM weights; its config.json
(`_sit_random_weights`) and README.md say so, and every sit command that loads it warns. Its
latents mean nothing: it is for trying the commands, never for results.
"""


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--widths takes comma-separated integers, one per level (got {text!r})") from None


@dataclass(frozen=True)
class TinyVaeOptions:
    """The options of `sit tiny-vae` (its flags are these fields)."""

    out: str = option(help="new VAE folder (config.json + safetensors + README.md)", metavar="DIR")
    seed: int = option(0, "seed of the random weights")
    widths: str = option(",".join(map(str, DEFAULT_WIDTHS)),
                         "block widths, one per level: downsampling 2^(levels - 1) (default: "
                         + ",".join(map(str, DEFAULT_WIDTHS)) + ", the SD VAE's four levels at 1/16 of its widths)",
                         metavar="W,W,...")
    example_images: str | None = option(None, f"also write an ImageFolder of embedded digits there ({EXAMPLE_SIZE}x"
                                        f"{EXAMPLE_SIZE} RGB PNGs, one folder per class) for `sit extract --data`",
                                        metavar="DIR")
    per_class: int = option(10, "example images per class", metavar="N")

    def __post_init__(self):
        from sit.config import ConfigError

        if self.per_class < 1:
            raise ConfigError("TinyVaeOptions", "per_class", f"must be >= 1 (got {self.per_class})")
        if self.example_images is not None and Path(self.example_images).resolve() == Path(self.out).resolve():
            raise ConfigError("TinyVaeOptions", "example_images", "must be another folder than {out}")


def register(subparsers) -> None:
    p = add_command(subparsers, "tiny-vae", description=EXAMPLES,
                    help="write a tiny random-weight SD-style VAE folder (to try `sit extract` without a download)")
    add_record_arguments(p, TinyVaeOptions)
    finish_command(p, run)


def run(args) -> int:
    from sit.vae_tiny import check_widths, write_example_images, write_tiny_vae

    opts = TinyVaeOptions(**given_values(args, TinyVaeOptions))
    widths = check_widths(_widths(opts.widths))
    from sit.vae_tiny import _fresh

    _fresh(opts.out, "--out")  # both outputs checked before either is written
    if opts.example_images is not None:
        _fresh(opts.example_images, "--example-images")
    out = write_tiny_vae(opts.out, seed=opts.seed, widths=widths, field="--out")
    print(f"sit tiny-vae: wrote a RANDOM-weight VAE (widths {list(widths)}, downsampling {2 ** (len(widths) - 1)}, "
          f"4 latent channels) to {str(out)!r}: for trying the commands, not for results")
    if opts.example_images is not None:
        folder, n = write_example_images(opts.example_images, per_class=opts.per_class, field="--example-images")
        print(f"sit tiny-vae: wrote {n} example digit images ({EXAMPLE_SIZE}x{EXAMPLE_SIZE} RGB, 10 classes) to "
              f"{str(folder)!r}")
    return 0
