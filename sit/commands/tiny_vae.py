"""`sit tiny-vae`: write a tiny randomly initialised SD-style VAE folder (and, optionally, a small
image folder of the embedded digits) to try `sit extract` without downloading a VAE (docs/data.md)."""

from __future__ import annotations

from pathlib import Path

from sit.commands._args import add_command, finish_command
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


def register(subparsers) -> None:
    p = add_command(subparsers, "tiny-vae", description=EXAMPLES,
                    help="write a tiny random-weight SD-style VAE folder (to try `sit extract` without a download)")
    p.add_argument("--out", metavar="DIR", required=True, help="new VAE folder (config.json + safetensors + README.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)), metavar="W,W,...",
                   help="block widths, one per level: downsampling 2^(levels - 1) (default: %(default)s, "
                        "the SD VAE's four levels at 1/16 of its widths)")
    p.add_argument("--example-images", metavar="DIR", default=None,
                   help=f"also write an ImageFolder of embedded digits there ({EXAMPLE_SIZE}x{EXAMPLE_SIZE} RGB PNGs, "
                        "one folder per class) for `sit extract --data`")
    p.add_argument("--per-class", type=int, default=10, metavar="N",
                   help="example images per class (default: 10)")
    finish_command(p, run)


def run(args) -> int:
    from sit.vae_tiny import check_widths, write_example_images, write_tiny_vae

    widths = check_widths(_widths(args.widths))
    if args.per_class < 1:
        raise ValueError(f"--per-class must be >= 1 (got {args.per_class})")
    from sit.vae_tiny import _fresh

    _fresh(args.out, "--out")  # both outputs checked before either is written
    if args.example_images is not None:
        _fresh(args.example_images, "--example-images")
        if Path(args.example_images).resolve() == Path(args.out).resolve():
            raise ValueError("--example-images must be another folder than --out")
    out = write_tiny_vae(args.out, seed=args.seed, widths=widths, field="--out")
    print(f"sit tiny-vae: wrote a RANDOM-weight VAE (widths {list(widths)}, downsampling {2 ** (len(widths) - 1)}, "
          f"4 latent channels) to {str(out)!r}: for trying the commands, not for results")
    if args.example_images is not None:
        folder, n = write_example_images(args.example_images, per_class=args.per_class, field="--example-images")
        print(f"sit tiny-vae: wrote {n} example digit images ({EXAMPLE_SIZE}x{EXAMPLE_SIZE} RGB, 10 classes) to "
              f"{str(folder)!r}")
    return 0
