"""`sit ema`: reconstruct a post-hoc EMA of any length from a run's power-function EMA snapshots
(Karras et al. 2024; `sit.train.phema`), written as a post-hoc EMA folder (`sit.train.phema_folder`)."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  sit train --phema-sigmas 0.05 0.10 --phema-every 4 --out runs/phema
  sit ema --ckpt runs/phema --sigma-rel 0.08 --out runs/phema-ema-0.08
  sit info runs/phema-ema-0.08                      # verified and read like a checkpoint by every reader
"""


def register(subparsers) -> None:
    from sit.config import PHEMA_MAX_FIT_ERROR as MAX_FIT_ERROR
    from sit.config import PHEMA_SIGMA_RANGE

    lo, hi = PHEMA_SIGMA_RANGE
    p = subparsers.add_parser(
        "ema",
        help="reconstruct a post-hoc EMA (any sigma_rel) from a run's snapshots",
        description="Reconstruct the power-function EMA of relative length --sigma-rel at --step from the "
        "snapshots `sit train --phema-sigmas ... --phema-every N` stored in RUN/phema (least squares over "
        "the snapshots' averaging profiles, coefficients summing to 1: edm2's post-hoc EMA). Refused: a step "
        "that is not a snapshot step, and a length the snapshots reconstruct with a larger error than "
        "--max-fit-error (the lengths that can are named).\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ckpt", required=True, metavar="RUN", help="run folder trained with --phema-sigmas")
    p.add_argument("--sigma-rel", type=float, required=True, metavar="S",
                   help=f"relative EMA length (std of the averaging profile / training length) in [{lo:g}, {hi:.4f}), "
                        "e.g. 0.05-0.15")
    p.add_argument("--step", type=int, metavar="N", help="reconstruct the EMA at this snapshot step (default: the newest)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="post-hoc EMA folder to write (config.json, ema.safetensors, phema.json, manifest.json): "
                        "a new or empty folder, or one holding an earlier output of the same request")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output of another request in --out")
    p.add_argument("--max-fit-error", type=float, default=MAX_FIT_ERROR, metavar="E",
                   help="largest relative L2 error of the reconstructed averaging profile")
    p.set_defaults(func=run)


def run(args) -> int:
    from sit.train.phema import sigma_rel_to_gamma
    from sit.train.phema_folder import export_reconstruction

    sigma_rel_to_gamma(args.sigma_rel)  # validates the range with a one-line error
    if not 0 < args.max_fit_error <= 1:
        raise ValueError(f"--max-fit-error must be in (0, 1] (got {args.max_fit_error})")
    out, info = export_reconstruction(args.ckpt, args.sigma_rel, args.out, step=args.step, overwrite=args.overwrite,
                                      max_error=args.max_fit_error)
    print(f"sit ema: wrote {str(out)!r} (sigma_rel {args.sigma_rel:g} at step {info['step']} from {info['snapshots']} "
          f"snapshots, fit error {info['fit_error']:.4f}; coefficients in phema.json)")
    return 0
