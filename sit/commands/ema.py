"""`sit ema`: reconstruct a post-hoc EMA of any length from a run's power-function EMA snapshots
(Karras et al. 2024; `sit.train.phema`), written as a post-hoc EMA folder (`sit.train.phema_folder`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from sit.commands.flags import add_record_arguments, given_values, option

EXAMPLES = """examples:
  sit train --phema-sigmas 0.05 0.10 --phema-every 4 --out runs/phema
  sit ema --ckpt runs/phema --sigma-rel 0.08 --out runs/phema-ema-0.08
  sit info runs/phema-ema-0.08                      # verified and read like a checkpoint by every reader
"""


def _sigma_help() -> str:
    from sit.config import PHEMA_SIGMA_RANGE

    lo, hi = PHEMA_SIGMA_RANGE
    return f"relative EMA length (std of the averaging profile / training length) in [{lo:g}, {hi:.4f}), e.g. 0.05-0.15"


def _max_fit_error() -> float:
    from sit.config import PHEMA_MAX_FIT_ERROR

    return PHEMA_MAX_FIT_ERROR


@dataclass(frozen=True)
class EmaOptions:
    """The options of `sit ema` (its flags are these fields): what `export_reconstruction` is asked."""

    ckpt: str = option(help="run folder trained with {TrainConfig.phema_sigmas}", metavar="RUN")
    sigma_rel: float = option(help=_sigma_help, metavar="S")
    step: int | None = option(None, "reconstruct the EMA at this snapshot step (default: the newest)", metavar="N")
    out: str = option(help="post-hoc EMA folder to write (config.json, ema.safetensors, phema.json, manifest.json): "
                      "a new or empty folder, or one holding an earlier output of the same request", metavar="DIR")
    overwrite: bool = option(False, "replace an earlier output of another request in {out}", switch=True)
    max_fit_error: float = option(_max_fit_error(), "largest relative L2 error of the reconstructed averaging profile",
                                  metavar="E")

    def __post_init__(self):
        from sit.config import ConfigError

        if not 0 < self.max_fit_error <= 1:
            raise ConfigError("EmaOptions", "max_fit_error", f"must be in (0, 1] (got {self.max_fit_error})")


def register(subparsers) -> None:
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
    add_record_arguments(p, EmaOptions)
    p.set_defaults(func=run)


def run(args) -> int:
    from sit.train.phema import sigma_rel_to_gamma
    from sit.train.phema_folder import export_reconstruction

    opts = EmaOptions(**given_values(args, EmaOptions))
    sigma_rel_to_gamma(opts.sigma_rel)  # validates the range with a one-line error
    out, info = export_reconstruction(opts.ckpt, opts.sigma_rel, opts.out, step=opts.step, overwrite=opts.overwrite,
                                      max_error=opts.max_fit_error)
    print(f"sit ema: wrote {str(out)!r} (sigma_rel {opts.sigma_rel:g} at step {info['step']} from {info['snapshots']} "
          f"snapshots, fit error {info['fit_error']:.4f}; coefficients in phema.json)")
    return 0
