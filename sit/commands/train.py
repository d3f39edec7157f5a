"""`sit train`: train a SiT (or DiT's DDPM) on the embedded demo data, an ImageFolder or latents."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

EXAMPLES = """\
examples:
  sit train --out runs/demo                        # embedded digits demo, CPU, under 2 minutes on 2 idle cores
  sit train --dataset mnist_5k --out runs/mnist    # the other embedded dataset (28x28 -> 32x32)
  sit train --path gvp --prediction score --loss-weight likelihood --out runs/gvp_s
  sit train --time discrete --out runs/ddpm        # DiT's DDPM baseline (sit.discrete)
  sit train --repa-encoder digits-cnn --out runs/repa   # REPA with the embedded encoder (docs/training.md)
  sit train --latents latents/in256 --model SiT-XL/2 --out runs/xl2     # ImageNet latents
  torchrun --nproc_per_node 8 -m sit.cli train --data /imagenet/train --vae sd-vae-ft-ema --out runs/xl2
  sit train --resume runs/demo                     # continue exactly from the newest valid checkpoint
  sit train --dry-run                              # print the resolved config JSON and exit
"""

# the presets live in sit.train.presets (the study and benchmarks read them there); --help reads them too
from sit.train.presets import (  # noqa: E402,F401  (re-exported: earlier code imports them from here)
    DATA_IMAGE_SIZE,
    DEFAULT_PRESET,
    DEMO_MNIST,
    DEMO_MODEL,
    DEMO_MODEL_MNIST,
    DEMO_REPA_PROJ_DIM,
    DEMO_TRAIN,
)


def _none_or(v):
    return None if v in (None, "none", "None", "") else v


def _demo(field: str):
    """The demo's value of a TrainConfig field (its DEMO_TRAIN entry, else the TrainConfig default)."""
    from sit.config import TrainConfig

    return DEMO_TRAIN.get(field, getattr(TrainConfig(), field))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags; every default in a help text is read from TrainConfig / ModelConfig / DEMO_TRAIN."""
    from sit.config import RESUME_OVERRIDES, TRAIN_CHOICES, ModelConfig, TrainConfig

    D, M = TrainConfig(), ModelConfig()
    _RESUME_FLAGS = [_flag(k) for k in RESUME_OVERRIDES]
    d = p.add_argument_group("data (default: the embedded demo)")
    d.add_argument("--dataset", choices=TRAIN_CHOICES["dataset"], help=f"embedded dataset (default {D.dataset})")
    d.add_argument("--data", metavar="DIR", help="ImageFolder root (one folder per class), encoded by --vae")
    d.add_argument("--latents", metavar="DIR", help="pre-extracted latents (`sit extract`)")
    d.add_argument("--vae", metavar="PATH", help="SD VAE folder or cached name (ema / mse) for --data (and grids of --latents)")
    d.add_argument("--vae-scale", type=float, metavar="S",
                   help="latent scale: the network sees (z - shift) * S (default: the VAE config's scaling_factor for "
                        "--data, the latent index's for --latents; recorded in the run)")
    d.add_argument("--vae-shift", type=float, metavar="B",
                   help="latent shift (default: the VAE config's shift_factor, 0 when it has none; the index's for --latents)")
    d.add_argument("--image-size", type=int, metavar="PX", help=f"pixels (--data: {DATA_IMAGE_SIZE}; digits: {DEMO_TRAIN['image_size']}; mnist_5k: {DEMO_MNIST['image_size']})")
    d.add_argument("--on-error", choices=TRAIN_CHOICES["on_error"], help=f"unreadable image: stop or skip and count (default {D.on_error})")
    d.add_argument("--num-workers", type=int, metavar="N", help=f"DataLoader workers (default {D.num_workers}; demo {_demo('num_workers')})")

    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME", help=f"preset SiT-S/2 ... SiT-XL/8 (default {DEFAULT_PRESET}; demo: custom small)")
    m.add_argument("--depth", type=int)
    m.add_argument("--hidden-size", type=int)
    m.add_argument("--num-heads", type=int)
    m.add_argument("--patch-size", type=int)
    m.add_argument("--mlp-ratio", type=float)
    m.add_argument("--learn-sigma", action=argparse.BooleanOptionalAction, default=None,
                   help="2C output channels like official checkpoints (default: on for presets, off for the demo)")
    m.add_argument("--label-dropout", type=float, metavar="P", help=f"label dropout for guidance (default {M.class_dropout_prob})")

    o = p.add_argument_group("objective (paper axes)")
    o.add_argument("--path", choices=TRAIN_CHOICES["path"], help=f"interpolant (default {D.path})")
    o.add_argument("--prediction", choices=TRAIN_CHOICES["prediction"], help=f"network output (default {D.prediction})")
    o.add_argument("--loss-weight", choices=[v or "none" for v in TRAIN_CHOICES["loss_weight"]], help=f"score/noise loss weighting (default {D.loss_weight or 'none'})")
    o.add_argument("--time", dest="time_input", choices=TRAIN_CHOICES["time_input"], help=f"continuous (SiT) or discrete DDPM (DiT) (default {D.time_input})")
    o.add_argument("--time-dist", choices=TRAIN_CHOICES["time_dist"], help=f"training t distribution (default {D.time_dist}; demo {_demo('time_dist')})")
    o.add_argument("--t-min", type=float)
    o.add_argument("--t-max", type=float)

    a = p.add_argument_group("representation alignment (REPA, Yu et al. 2024; docs/training.md)")
    a.add_argument("--repa-encoder", metavar="ENC", help="frozen encoder whose patch features the network aligns with: "
                   "digits-cnn (embedded, offline) or a local DINOv2 folder (transformers save_pretrained); default off")
    a.add_argument("--repa-depth", type=int, metavar="D", help="align the output of block D (1-based; without it ceil(2 x depth / 7): XL 8, B 4, demo 2)")
    a.add_argument("--repa-coeff", type=float, metavar="LAMBDA", help=f"weight of the alignment term (default {D.repa_coeff:g})")
    a.add_argument("--repa-proj-dim", type=int, metavar="N", help=f"projector MLP width (default {D.repa_proj_dim}); {DEMO_REPA_PROJ_DIM} on the embedded demo")

    a.add_argument("--cosine-coeff", type=float, metavar="W", help="weight of LightningDiT's velocity-direction term "
                   f"1 - cos(v_theta, v*) per pixel over channels (default {D.cosine_coeff:g} = off; LightningDiT: 1)")

    e = p.add_argument_group("post-hoc EMA (Karras et al. 2024; `sit ema` reconstructs any length afterwards)")
    e.add_argument("--phema-sigmas", type=float, nargs="+", metavar="S",
                   help="relative lengths of the tracked power-function EMAs (edm2: 0.05 0.10); off without it")
    e.add_argument("--phema-every", type=int, metavar="STEPS", help="steps between snapshots of them (needs --phema-sigmas)")

    t = p.add_argument_group("optimisation")
    t.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps (default {D.steps}; demo {_demo('steps')})")
    t.add_argument("--batch", dest="global_batch", type=int, metavar="N", help=f"global batch over all ranks (default {D.global_batch}; demo {_demo('global_batch')})")
    t.add_argument("--grad-accum", type=int, metavar="K")
    t.add_argument("--lr", type=float, help=f"AdamW learning rate (default {D.lr:g}; demo {_demo('lr'):g})")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--warmup", dest="warmup_steps", type=int, metavar="STEPS", help=f"linear lr warm-up (default {D.warmup_steps}; demo {_demo('warmup_steps')})")
    t.add_argument("--grad-clip", type=float, metavar="NORM", help=f"0 = off (default {D.grad_clip:g}; demo {_demo('grad_clip'):g})")
    t.add_argument("--ema", dest="ema_decay", type=float, metavar="DECAY", help=f"EMA decay (default {D.ema_decay}; demo {_demo('ema_decay')})")
    t.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--precision", choices=TRAIN_CHOICES["precision"])
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the network")
    t.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute each block's activations in the backward pass: less memory, ~1/3 more compute (default off)")
    t.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                   help=f"CUDA: TF32 matmuls for fp32 work, as the official train.py (default {'on' if D.tf32 else 'off'})")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="cpu / cuda (default: cuda if available)")
    t.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: $SIT_THREADS, else the free cores: usable cores minus the load average, at least 1; 0 = torch's own default)")

    r = p.add_argument_group("run folder, logging, checkpoints")
    r.add_argument("--out", metavar="DIR", help=f"run folder (default {D.out})")
    r.add_argument("--resume", metavar="RUN",
                   help="continue a run exactly from its newest valid checkpoint; only these flags may change it: "
                   + ", ".join(_RESUME_FLAGS))
    r.add_argument("--overwrite", action="store_true",
                   help="start a fresh run in an --out folder that holds one, deleting its contents first")
    r.add_argument("--log-every", type=int, metavar="STEPS", help=f"(default {D.log_every}; demo {_demo('log_every')})")
    r.add_argument("--ckpt-every", type=int, metavar="STEPS", help=f"(default {D.ckpt_every}; demo {_demo('ckpt_every')})")
    r.add_argument("--keep-last", type=int, metavar="K", help=f"checkpoints kept (default {D.keep_last}; demo {_demo('keep_last')})")
    r.add_argument("--sample-every", type=int, metavar="STEPS", help="EMA sample grids (0: only at the end)")
    r.add_argument("--cfg-scale", type=float, help=f"guidance scale of sample grids, 1 = off (default {D.cfg_scale:g}; demo {_demo('cfg_scale'):g})")
    r.add_argument("--sample-method", choices=TRAIN_CHOICES["sample_method"])
    r.add_argument("--sample-steps", type=int, help=f"(default {D.sample_steps}; demo {_demo('sample_steps')})")
    r.add_argument("--samples-per-class", type=int, help=f"grid columns (default {D.samples_per_class}; demo {_demo('samples_per_class')})")
    r.add_argument("--max-nonfinite", type=int, metavar="K", help=f"stop after K non-finite steps in a row (default {D.max_nonfinite})")
    r.add_argument("--lt-table", action=argparse.BooleanOptionalAction, default=None, help="estimate L_t after training")
    r.add_argument("--quality-samples-per-class", type=int, metavar="N", help=f"samples per class for the quality number (default {D.quality_samples_per_class})")
    r.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None, help="quality number (embedded data)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--dry-run", action="store_true", help="print the resolved config JSON and exit")


TRAIN_FLAGS = ("dataset", "data", "latents", "vae", "image_size", "on_error", "num_workers", "path", "prediction",
               "loss_weight", "time_input", "time_dist", "t_min", "t_max", "steps", "global_batch", "grad_accum", "lr",
               "weight_decay", "warmup_steps", "grad_clip", "ema_decay", "ema_warmup", "precision", "compile", "tf32", "seed",
               "device", "threads", "out", "log_every", "ckpt_every", "keep_last", "sample_every", "cfg_scale", "sample_method",
               "sample_steps", "samples_per_class", "max_nonfinite", "lt_table", "quality",
               "quality_samples_per_class", "repa_encoder", "repa_depth", "repa_coeff", "repa_proj_dim",
               "phema_sigmas", "phema_every", "grad_checkpointing", "cosine_coeff", "vae_scale", "vae_shift")
ARCH_FLAGS = ("model", "depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "learn_sigma", "label_dropout")


def resolve(args: argparse.Namespace):
    """(TrainConfig, ModelConfig) from parsed flags: the demo's defaults without --data/--latents,
    the paper's otherwise; explicit flags always win."""
    from sit.config import ModelConfig, TrainConfig, model_preset

    given = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    if "loss_weight" in given:
        given["loss_weight"] = _none_or(given["loss_weight"])
    if "phema_sigmas" in given:
        given["phema_sigmas"] = tuple(given["phema_sigmas"])
    if getattr(args, "no_progress", False):
        given["progress"] = False
    demo = args.data is None and args.latents is None
    base = {}
    if demo:
        base = dict(DEMO_TRAIN)
        if given.get("dataset") == "mnist_5k":
            base.update(DEMO_MNIST)
    elif args.data is not None:
        base = {"image_size": DATA_IMAGE_SIZE}
    if demo and given.get("repa_encoder") is not None:
        base["repa_proj_dim"] = DEMO_REPA_PROJ_DIM
    cfg = TrainConfig(**{**base, **given})

    # data shape
    if demo:
        channels, size, classes = 1, cfg.image_size, 10
    elif cfg.latents is not None:
        channels, size, classes = _latent_shape(cfg.latents)
    else:
        channels, down = _vae_geometry(cfg.vae)
        if cfg.image_size % down:
            raise ValueError(f"--image-size {cfg.image_size} must be divisible by the VAE's downsampling factor {down}")
        channels, size, classes = channels, cfg.image_size // down, _num_folders(cfg.data)
    arch = {k: getattr(args, k) for k in ("depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "learn_sigma")
            if getattr(args, k, None) is not None}
    if args.label_dropout is not None:
        arch["class_dropout_prob"] = args.label_dropout
    common = dict(input_size=size, in_channels=channels, num_classes=classes)
    if args.model:
        mc = model_preset(args.model, **common, **arch)
    elif demo:
        dm = DEMO_MODEL_MNIST if cfg.dataset == "mnist_5k" else DEMO_MODEL
        mc = ModelConfig(**{**dm, **common, **arch})
    else:
        mc = model_preset(DEFAULT_PRESET, **common, **arch)
    if cfg.time_input == "discrete" and "learn_sigma" not in arch and not mc.learn_sigma:
        mc = dataclasses.replace(mc, learn_sigma=True)  # DiT learns the variance (hybrid loss)
    return cfg, mc


def _latent_shape(root: str) -> tuple[int, int, int]:
    from sit.data.latents import read_index

    idx = read_index(root)
    c, h, w = idx["latent_shape"]
    return int(c), int(h), int(idx["num_classes"])


def _vae_geometry(vae: str | None) -> tuple[int, int]:
    """(latent channels, downsampling factor) from a VAE folder's config.json; the SD VAE's (4, 8)
    for names and folders without one."""
    from pathlib import Path

    cfg = Path(vae).expanduser() / "config.json" if vae else None
    if cfg is not None and cfg.is_file():
        d = json.loads(cfg.read_text())
        return int(d.get("latent_channels", 4)), 2 ** (len(d.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return 4, 8


def _num_folders(root: str) -> int:
    from sit.data.imagefolder import find_classes

    return len(find_classes(root))


def resume_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line with --resume; a flag outside
    `sit.train.RESUME_OVERRIDES` is refused by name."""
    from sit.config import RESUME_OVERRIDES

    given = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "no_progress", False):
        given["progress"] = False
    bad = sorted(k for k in given if k not in RESUME_OVERRIDES)
    bad += [k for k in ARCH_FLAGS if getattr(args, k, None) is not None]
    if getattr(args, "overwrite", False):
        bad.append("overwrite")
    if bad:
        allowed = ", ".join(_flag(k) for k in RESUME_OVERRIDES)
        raise ValueError(f"--resume continues the run's saved config; {', '.join(_flag(k) for k in bad)} cannot change "
                         f"(allowed with --resume: {allowed})")
    return given


def _flag(field: str) -> str:
    from sit.commands._errors import flag_of

    return flag_of("TrainConfig", field)


def run(args: argparse.Namespace) -> int:
    return _run(args)  # a ConfigError names its field; sit.cli writes it as the flag


def _run(args: argparse.Namespace) -> int:
    from sit import dist
    from sit.train import NonFiniteLossError, find_resumable, run_meta, train
    from sit.train.folder import run_config

    try:
        if args.resume:
            overrides = resume_overrides(args)
            if args.dry_run:
                ck, (state, meta, *_rest) = find_resumable(args.resume)
                print(json.dumps(dict(meta.to_config(), resume_from=str(ck), overrides=overrides), indent=2, sort_keys=True))
                return 0
            res = train(resume=args.resume, overrides=overrides)
        else:
            cfg, mc = resolve(args)
            if args.dry_run:
                print(json.dumps(run_config(run_meta(cfg, mc), []), indent=2, sort_keys=True))
                return 0
            res = train(cfg, mc, overwrite=args.overwrite)
    except NonFiniteLossError as e:
        from sit.commands._errors import in_flags

        print(f"sit train: error: {in_flags(e, 'train')}", file=sys.stderr)
        return 3
    dist.print0(f"sit train: {res.status} at step {res.step}; run folder {str(res.run_dir)!r}")
    dist.cleanup()
    return 0 if res.status == "done" else 143


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a SiT (embedded digits demo by default)",
        description="Train a SiT / DiT-DDPM model. Without --data/--latents: the embedded digits demo.\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
