"""Argparse helpers shared by the subcommands: the parser with its examples text, the flags that
read a model (--ckpt, --weights, --precision ...; the latent decoding and guidance flags of `sit
sample` / `sit sweep`), the closing --no-progress flag, and the ``>= N`` checks of integer flags."""

from __future__ import annotations

import argparse
import dataclasses

from sit.commands.flags import add_record_arguments


def add_command(sub, name: str, help: str, description: str, *, model: bool = False) -> argparse.ArgumentParser:
    """Subcommand ``name`` whose --help prints ``description`` as written (examples); with
    ``model`` also the model-reading flags (--ckpt, --weights, --vae, --precision, --device of
    `add_model_arguments`)."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        add_model_arguments(p)
    return p


# the --no-progress flag of every command: the help says what the option is (a progress bar, on by
# default) and that this flag turns it off (as `sit train`'s, generated from TrainConfig.progress)
PROGRESS_HELP = "show a progress bar (default on; this flag turns it off)"


def finish_command(p: argparse.ArgumentParser, func, progress_help: str = PROGRESS_HELP) -> None:
    """The closing --no-progress flag, and ``func`` as the command's entry point."""
    p.add_argument("--no-progress", action="store_true", help=progress_help)
    p.set_defaults(func=func)


def require_at_least(flag: str, value: int, minimum: int) -> None:
    """ValueError '--flag must be >= minimum (got value)' when value < minimum."""
    if value < minimum:
        raise ValueError(f"{flag} must be >= {minimum} (got {value})")


def add_model_arguments(p, overrides: bool = False) -> None:
    """--ckpt, --weights, --vae, --precision, --device (--weights / --precision generated from
    `SampleSpec`'s fields, with its defaults); with ``overrides`` also the flags for what official
    files cannot state (`add_model_overrides`)."""
    from sit.generate.spec import SampleSpec

    g = p.add_argument_group("model")
    g.add_argument("--ckpt", required=True, metavar="PATH", help="official SiT/DiT .pt, sit .safetensors, checkpoint dir or run dir (newest checkpoint)")
    add_record_arguments(g, SampleSpec, ("weights",), keep_defaults=True)
    g.add_argument("--vae", metavar="PATH", help="SD VAE folder (config.json + weights) to decode latent models; pixel-space models need none")
    add_record_arguments(g, SampleSpec, ("precision",), keep_defaults=True)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    if overrides:
        add_model_overrides(g)


def add_vae_space_arguments(p) -> None:
    """--vae-scale / --vae-shift: override the latent scale and shift a decode uses (default: the
    values recorded with the run; a --vae whose config contradicts them is refused)."""
    g = p.add_argument_group("latent decoding (latent models)")
    g.add_argument("--vae-scale", type=float, metavar="S",
                   help="decode z = x / S + shift (default: the scale recorded with the run, 0.18215 for official "
                        "checkpoints; a --vae whose config scaling_factor differs is refused unless this is given)")
    g.add_argument("--vae-shift", type=float, metavar="B",
                   help="decode shift (default: the run's recorded shift, 0 when none is recorded)")


def check_vae_space_args(args) -> None:
    from sit.config import latent_value_problem

    for name in ("vae_scale", "vae_shift"):
        v = getattr(args, name, None)
        problem = None if v is None else latent_value_problem(name[4:], v)
        if problem:
            raise ValueError(f"--{name.replace('_', '-')} {problem}")
        if v is not None and not getattr(args, "vae", None):
            raise ValueError(f"--{name.replace('_', '-')} applies to decoding with --vae (a latent model); give --vae PATH")


def add_model_overrides(g) -> None:
    """--kind and --num-heads: what an official .pt cannot state (the same flags as `sit convert` / `sit info`)."""
    g.add_argument("--kind", choices=["sit", "dit"], default=None, help="override the SiT/DiT guess for official files")
    g.add_argument("--num-heads", type=int, metavar="N", help="attention heads, for official files of a non-preset size")




def option(default=dataclasses.MISSING, help: str = "", **meta):
    """A field of a command's own options record (`sit.commands.flags`): its default (none: a
    required flag), help and metadata (flag, metavar, choices, switch, dest)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **meta))


def at_least(record, name: str, minimum: int) -> None:
    """ConfigError '<field> must be >= minimum (got value)' (its flag in `sit` messages) when
    ``record.name`` is below ``minimum``."""
    from sit.config import ConfigError

    value = getattr(record, name)
    if value is not None and value < minimum:
        raise ConfigError(type(record).__name__, name, f"must be >= {minimum} (got {value})")


def checked(record, name: str, check) -> None:
    """``check(value, "")`` (a `sit.bounds` check) on ``record.name`` unless it is None, its
    ValueError as a ConfigError of that field (its flag in `sit` messages)."""
    from sit.config import ConfigError

    value = getattr(record, name)
    if value is None:
        return
    try:
        check(value, "")
    except ValueError as e:
        raise ConfigError(type(record).__name__, name, str(e).strip()) from None
