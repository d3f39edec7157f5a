"""`sit sample`: images (and latents) from a checkpoint, for looking or for evaluation."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

EXAMPLES = """\
examples:
  # a grid of 8 digits from the demo run (pixel-space model, no VAE), Heun 25 steps
  sit sample --ckpt runs/demo --labels 0,1,2,3,4,5,6,7 --method heun --num-steps 25 --grid-png --out samples/demo

  # the paper's SiT-XL/2 setting (Heun ODE, 250 NFE, cfg 1.5): 50K images for FID, resumable;
  # on 8 GPUs: torchrun --nproc-per-node 8 -m sit.cli sample ...
  sit sample --ckpt SiT-XL-2-256x256.pt --vae /models/sd-vae-ft-ema --preset sit-xl2-ode --out samples/xl2-ode

  # SDE with w_KL,eta (needs `sit lt` run on the checkpoint first), explicit classes, bf16
  sit sample --ckpt runs/xl2 --vae /models/sd-vae-ft-ema --method euler_maruyama --num-steps 250 \\
      --w kl_eta --eta 1 --t-start 0.999 --labels 207,360,387,974 --cfg-scale 4 --precision bf16 --grid-png --out samples/x

presets: {presets}
"""


def register(sub) -> None:
    from sit.evaluate.presets import PRESETS

    p = sub.add_parser(
        "sample",
        help="sample images/latents from a checkpoint (grids, 50K npz for FID)",
        description=EXAMPLES.format(presets=", ".join(sorted(PRESETS))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network for inference with frozen weights (sit.models.sit.compile_for_inference): "
                        "faster sampling after a one-off compile of about 20-60 s per batch shape")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="CUDA: TF32 matmuls for fp32 networks, as the official sample.py (default on)")
    add_sampler_arguments(p)
    g = p.add_argument_group("what to sample")
    g.add_argument("--preset", metavar="NAME", help="named paper setting (listed above); explicit options override it")
    g.add_argument("--labels", metavar="LIST", help="'random' (default; per-sample seeded), 'null' (unconditional) or class indices 207,360 (cycled)")
    g.add_argument("--num-samples", type=int, metavar="N", help="samples to make (default: the number of --labels, else 16)")
    g.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i (default 0)")
    g.add_argument("--noise", metavar="FILE", help="explicit initial noise (N, C, H, W) as .npy or .safetensors")
    g.add_argument("--batch-size", type=int, default=32, metavar="B", help="samples per batch and process (default 32)")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="output folder: samples.npz (ADM layout), manifest.json, ...")
    o.add_argument("--grid-png", action="store_true", help="write grid.png of (up to 256) samples")
    o.add_argument("--png-folder", action="store_true", help="also write every image to DIR/images/NNNNNN.png")
    o.add_argument("--save-latents", choices=["npy", "safetensors"], help="also write the sampled latents")
    o.add_argument("--keep-parts", action="store_true", help="keep the per-batch part files after merging")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_model_arguments(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--ckpt", required=True, metavar="PATH", help="official SiT/DiT .pt, sit .safetensors, checkpoint dir or run dir (newest checkpoint)")
    g.add_argument("--weights", choices=["ema", "model"], default="ema", help="EMA or raw weights where both exist (default ema)")
    g.add_argument("--vae", metavar="PATH", help="SD VAE folder (config.json + weights) to decode latent models; pixel-space models need none")
    g.add_argument("--precision", choices=["fp32", "bf16", "bf16-weights"], default="fp32",
                   help="network precision: bf16 = autocast, bf16-weights = weights and activations in bf16 (fastest, "
                        "more rounding); the sampler math stays fp32 (default fp32)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def add_sampler_arguments(p) -> None:
    g = p.add_argument_group("sampler (defaults: Heun 50 steps, or the preset's values)")
    g.add_argument("--method", metavar="NAME", help="euler, heun, dopri5 (or any torchdiffeq method), euler_maruyama, sde_heun; ddpm, ddim for DiT checkpoints")
    g.add_argument("--num-steps", type=int, metavar="N", help="steps (not grid points); Heun spends 2 NFE per step")
    g.add_argument("--atol", type=float, help="adaptive ODE solver absolute tolerance")
    g.add_argument("--rtol", type=float, help="adaptive ODE solver relative tolerance")
    g.add_argument("--grid", metavar="KIND", help="time grid: uniform, shifted, edm, cosine")
    g.add_argument("--t-start", type=float, metavar="T", help="start time (default 1; use 1 - eps for w_KL on Linear/GVP)")
    g.add_argument("--t-end", type=float, metavar="T", help="end time before the last step")
    g.add_argument("--w", metavar="NAME", help="SDE diffusion coefficient w_t: kl, sigma, sin2, kl_eta, constant, official-*")
    g.add_argument("--w-scale", type=float, metavar="S", help="multiplier of w_t")
    g.add_argument("--eta", type=float, help="eta of w_KL,eta (eq. 14); DDIM eta for --method ddim")
    g.add_argument("--lt-table", metavar="JSON", help="L_t table for w_KL,eta (default: the one stored with the checkpoint by `sit lt`)")
    g.add_argument("--last-step", metavar="KIND", help="SDE last step: mean, tweedie, euler, none")
    g.add_argument("--last-step-size", type=float, metavar="H", help="size of the SDE last step (official 0.04)")
    g.add_argument("--cfg-scale", type=float, metavar="ZETA", help="classifier-free guidance scale (1 = off, default)")
    g.add_argument("--cfg-channels", metavar="all|K", help="guide all channels (default) or the first K (official: 3)")
    g.add_argument("--cfg-interval", metavar="LO,HI", help="guide only for t in [LO, HI]")


# option name -> SampleConfig field name (same names; listed so the mapping is explicit)
SAMPLER_OPTIONS = ("num_steps", "atol", "rtol", "grid", "t_start", "t_end", "w", "w_scale", "eta", "last_step", "last_step_size")
DEFAULTS = dict(method="heun", num_steps=50, cfg_scale=1.0, cfg_channels="all", labels="random")


def resolve_options(args) -> tuple[dict, str | None]:
    """Explicit options > preset > built-in defaults. Returns (values, preset name)."""
    from sit.evaluate.presets import get_preset

    values = dict(DEFAULTS)
    if getattr(args, "preset", None):
        values.update(get_preset(args.preset))
    for k in ("method", "cfg_scale", "cfg_channels", "cfg_interval", "labels", "num_samples", *SAMPLER_OPTIONS):
        v = getattr(args, k, None)
        if v is not None:
            values[k] = v
    if values.get("last_step") is not None:
        ls = str(values["last_step"]).lower()
        values["last_step"] = ls  # "none" (no last step) becomes None in build_latent_sampler
    return values, getattr(args, "preset", None)


def check_args(args) -> None:
    """One-line errors for values argparse cannot check."""
    if args.num_steps is not None and args.num_steps < 1:
        raise ValueError(f"--num-steps must be >= 1 (got {args.num_steps})")
    if args.num_samples is not None and args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1 (got {args.num_samples})")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.cfg_scale is not None and not math.isfinite(args.cfg_scale):
        raise ValueError(f"--cfg-scale must be a finite number (got {args.cfg_scale})")
    if args.eta is not None and not (math.isfinite(args.eta) and args.eta >= 0):
        raise ValueError(f"--eta must be a finite number >= 0 (got {args.eta})")
    for name in ("atol", "rtol", "last_step_size", "w_scale"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0 (got {v})")


def run(args) -> int:
    from sit.evaluate.sampling import sample_command

    check_args(args)
    values, preset = resolve_options(args)
    t0 = time.perf_counter()
    res = sample_command(
        ckpt=args.ckpt, out=Path(args.out), values=values, preset=preset, seed=args.seed,
        batch_size=args.batch_size, vae=args.vae, precision=args.precision, device=args.device,
        weights=args.weights, noise=args.noise, lt_table=args.lt_table, grid_png=args.grid_png,
        png_folder=args.png_folder, save_latents=args.save_latents, keep_parts=args.keep_parts,
        progress=not args.no_progress, compile=args.compile, tf32=args.tf32,
    )
    from sit import dist

    dist.print0(
        f"wrote {res.npz} ({res.num_generated} samples generated now); NFE per sample actually spent: "
        f"{', '.join(str(v) for v in res.nfe) or 'n/a'}; {time.perf_counter() - t0:.1f} s; manifest {res.manifest}"
    )
    return 0
