"""Argparse helpers shared by the subcommands: the parser with its examples text, the flags that
read a model (--ckpt, --weights, --precision ...: generated from `ModelOptions` and `SampleSpec`;
the latent decoding flags of `sit sample` / `sit sweep`), the closing --no-progress flag, `option`
(a field of a command's own options record, `sit.commands.flags`) and the ``>= N`` checks of
integer flags and fields (`require_at_least`, `at_least`, `checked`)."""

from __future__ import annotations

import argparse
import dataclasses

from sit.commands.flags import add_record_arguments, option  # noqa: F401  (option: re-exported for the commands)


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
    """--ckpt, --weights, --vae, --precision, --device: generated from `ModelOptions`' fields and
    `SampleSpec`'s (with its defaults); with ``overrides`` also the flags for what official files
    cannot state (`add_model_overrides`)."""
    from sit.generate.spec import SampleSpec

    g = p.add_argument_group("model")
    add_record_arguments(g, ModelOptions, ("ckpt",))
    add_record_arguments(g, SampleSpec, ("weights",), keep_defaults=True)
    add_record_arguments(g, SampleSpec, ("vae",))
    add_record_arguments(g, SampleSpec, ("precision",), keep_defaults=True)
    add_record_arguments(g, ModelOptions, ("device",))
    if overrides:
        add_model_overrides(g)


def add_vae_space_arguments(p) -> None:
    """--vae-scale / --vae-shift (`SampleSpec`'s fields): override the latent scale and shift a decode
    uses (default: the values recorded with the run; a --vae whose config contradicts them is refused)."""
    from sit.generate.spec import SampleSpec

    g = p.add_argument_group("latent decoding (latent models)")
    add_record_arguments(g, SampleSpec, ("vae_scale", "vae_shift"))


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
    """--kind and --num-heads (`ModelOptions`' fields): what an official .pt cannot state (the same flags
    as `sit convert` / `sit info`)."""
    add_record_arguments(g, ModelOptions, ("kind", "num_heads"))


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


def kind_option():
    """The field --kind: what an official .pt cannot state (one definition for every record that has it)."""
    return option(None, "override the SiT/DiT guess for official files", choices=lambda: ("sit", "dit"))


def num_heads_option():
    """The field --num-heads: the attention heads of an official .pt of a non-preset size."""
    return option(None, "attention heads, for official files of a non-preset size", metavar="N")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """The model-reading options the commands share that are no field of a library record (the
    checkpoint, the device, what an official .pt cannot state); their flags are these fields."""

    ckpt: str = option(help="official SiT/DiT .pt, sit .safetensors, checkpoint dir or run dir (newest checkpoint)",
                       metavar="PATH")
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda if available)", metavar="DEVICE")
    kind: str | None = kind_option()
    num_heads: int | None = num_heads_option()
