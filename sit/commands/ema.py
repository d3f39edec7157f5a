"""`sit ema`: reconstruct a post-hoc EMA of any length from a run's power-function EMA snapshots
(Karras et al. 2024; `sit.train.phema`)."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  sit train --phema-sigmas 0.05 0.10 --phema-every 4 --out runs/phema
  sit ema --ckpt runs/phema --sigma-rel 0.08 --out runs/phema/ema-0.08
  sit info runs/phema/ema-0.08                      # an ordinary checkpoint folder for every reader
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ema",
        help="reconstruct a post-hoc EMA (any sigma_rel) from a run's snapshots",
        description="Reconstruct the power-function EMA of relative length --sigma-rel at --step from the "
        "snapshots `sit train --phema-sigmas ... --phema-every N` stored in RUN/phema (least squares over "
        "the snapshots' averaging profiles, edm2's post-hoc EMA).\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, metavar="RUN", help="run folder trained with --phema-sigmas")
    p.add_argument("--sigma-rel", type=float, required=True, metavar="S",
                   help="relative EMA length (std of the averaging profile / training length), e.g. 0.05-0.15")
    p.add_argument("--step", type=int, metavar="N", help="reconstruct the EMA at this step (default: the newest snapshot)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder to write (config.json + ema.safetensors)")
    p.set_defaults(func=run)


def run(args) -> int:
    from sit.train.phema import export_reconstruction, sigma_rel_to_gamma

    sigma_rel_to_gamma(args.sigma_rel)  # validates the range with a one-line error
    out = export_reconstruction(args.ckpt, args.sigma_rel, args.out, step=args.step)
    print(f"sit ema: wrote {str(out)!r} (sigma_rel {args.sigma_rel:g}; coefficients in phema.json)")
    return 0
