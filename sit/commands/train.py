"""`sit train`: train a SiT (or DiT's DDPM) on the embedded demo data, an ImageFolder or latents."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass

from sit.commands._args import option
from sit.commands.flags import add_record_arguments, flag_fields, flag_of, given_values, show
from sit.config import RESUME_OVERRIDES, ModelConfig, TrainConfig

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

# the presets live in sit.train.recipes (the study and benchmarks read them there); --help reads them too
from sit.train.recipes import (  # noqa: E402,F401  (re-exported: earlier code imports them from here)
    DATA_IMAGE_SIZE,
    DEFAULT_PRESET,
    DEMO_MNIST,
    DEMO_MODEL,
    DEMO_MODEL_MNIST,
    DEMO_REPA_PROJ_DIM,
    DEMO_TRAIN,
)


def _demo(field: str):
    """The demo's value of a TrainConfig field (its DEMO_TRAIN entry, else the TrainConfig default;
    the projector width of --repa-encoder on the demo)."""
    if field == "repa_proj_dim":
        return DEMO_REPA_PROJ_DIM
    return DEMO_TRAIN.get(field, getattr(TrainConfig(), field))


# the TrainConfig fields that have a flag (the study builds a namespace of them)
TRAIN_FLAGS = flag_fields(TrainConfig)
# ModelConfig fields whose flag is generated from the field (metadata "help"): the size, then the modern block's
_SIZE = ("depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "learn_sigma", "class_dropout_prob")
MODEL_FIELD_FLAGS = (*_SIZE, *(f for f in flag_fields(ModelConfig) if f not in _SIZE))


@dataclass(frozen=True, kw_only=True)
class TrainCommand:
    """`sit train`'s options that are not TrainConfig / ModelConfig fields (their flags are these fields)."""

    model: str | None = option(None, f"preset SiT-S/2 ... SiT-XL/8 (default {DEFAULT_PRESET}; demo: custom small)",
                               metavar="NAME")
    resume: str | None = option(None, "continue a run exactly from its newest valid checkpoint; only these flags may "
                                "change it: " + ", ".join(f"{{TrainConfig.{k}}}" for k in RESUME_OVERRIDES),
                                metavar="RUN")
    overwrite: bool = option(False, "start a fresh run in an {TrainConfig.out} folder that holds one, deleting its "
                             "contents first", switch=True)
    dry_run: bool = option(False, "print the resolved config JSON and exit", switch=True)


# the options that change the network: the preset and the ModelConfig fields
ARCH_FLAGS = ("model", *MODEL_FIELD_FLAGS)
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def flag_for(field: str) -> str | None:
    """The `sit train` flag of a TrainConfig field (`sit.commands.flags.flag_of`: its metadata "flag",
    else --field-name; None for an internal field that has no flag) or of a ModelConfig field."""
    return flag_of(TrainConfig if field in _TRAIN_FIELDS else ModelConfig, field)


def default_note(f, choices) -> str:
    """" (default X; demo Y)" for a field's help: its TrainConfig default and, where it differs, the
    embedded demo's value; nothing for a field without a default (None / empty) unless None is a choice."""
    if f.name == "image_size":   # None in the record; `resolve` picks it by the data
        return f" ({flag_for('data')}: {DATA_IMAGE_SIZE}; digits: {DEMO_TRAIN['image_size']}; mnist_5k: {DEMO_MNIST['image_size']})"
    if f.default == () or (f.default is None and None not in (choices or ())):
        return ""
    demo = _demo(f.name)
    return f" (default {show(f.default)}" + (f"; demo {show(demo)}" if demo != f.default else "") + ")"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags: one argument group per TrainConfig record (`sit.config.TRAIN_GROUPS`), each field's flag
    generated from the field (`sit.commands.flags.add_record_arguments`, with the demo's value beside
    the default); the network's from ModelConfig's, --model / --resume / --overwrite / --dry-run from
    `TrainCommand`'s."""
    from sit.config import TRAIN_GROUPS

    fields = dataclasses.fields(TrainConfig)
    for name in ("data", "model", *(g for g in TRAIN_GROUPS if g != "data")):
        group = p.add_argument_group(name if name == "model" else f"{name} ({TRAIN_GROUPS[name]})")
        add_record_arguments(group, TrainConfig, tuple(f.name for f in fields if f.metadata["group"] == name
                                                       and flag_for(f.name) is not None),
                             default_note=default_note, flags=flag_for)
        if name == "model":
            add_record_arguments(group, TrainCommand, ("model",), keep_defaults=True)
            add_record_arguments(group, ModelConfig, MODEL_FIELD_FLAGS)   # generated from the fields' metadata
        if name == "run":
            add_record_arguments(group, TrainCommand, ("resume", "overwrite", "dry_run"), keep_defaults=True)


def given_fields(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line, as field values ("none" -> None, lists -> tuples)."""
    given = given_values(args, TrainConfig, TRAIN_FLAGS)
    if getattr(args, "no_progress", False):   # a namespace built by hand (sit study) may say it this way
        given["progress"] = False
    return given


def resolve(args: argparse.Namespace):
    """(TrainConfig, ModelConfig) from parsed flags (`sit.train.recipes.resolve_configs`: the demo's
    defaults without --data/--latents, the paper's otherwise; explicit flags always win)."""
    from sit.train.recipes import resolve_configs

    arch = given_values(args, ModelConfig, tuple(k for k in MODEL_FIELD_FLAGS if hasattr(args, k)))
    return resolve_configs(given_fields(args), arch, getattr(args, "model", None))


def resume_overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line with --resume; a flag outside
    `sit.train.RESUME_OVERRIDES` is refused by name."""
    from sit.config import RESUME_OVERRIDES

    given = given_fields(args)
    bad = sorted(k for k in given if k not in RESUME_OVERRIDES)
    bad += [k for k in ARCH_FLAGS if getattr(args, k, None) is not None]
    if getattr(args, "overwrite", False):
        bad.append("overwrite")
    if bad:
        allowed = ", ".join(flag_for(k) for k in RESUME_OVERRIDES)
        raise ValueError(f"--resume continues the run's saved config; {', '.join(flag_for(k) for k in bad)} cannot change "
                         f"(allowed with --resume: {allowed})")
    return given




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
