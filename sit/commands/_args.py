"""Argparse helpers shared by the subcommands: the parser with its examples text, the model
flags, the closing --no-progress flag, and the ``>= N`` checks of integer flags."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help: str, description: str, *, model: bool = False) -> argparse.ArgumentParser:
    """Subcommand ``name`` whose --help prints ``description`` as written (examples); with
    ``model`` also the model-reading flags (--ckpt, --weights, --vae, --precision, --device of
    `sit.commands.sample.add_model_arguments`)."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        from sit.commands.sample import add_model_arguments

        add_model_arguments(p)
    return p


def finish_command(p: argparse.ArgumentParser, func, progress_help: str = "no progress bar") -> None:
    """The closing --no-progress flag, and ``func`` as the command's entry point."""
    p.add_argument("--no-progress", action="store_true", help=progress_help)
    p.set_defaults(func=func)


def require_at_least(flag: str, value: int, minimum: int) -> None:
    """ValueError '--flag must be >= minimum (got value)' when value < minimum."""
    if value < minimum:
        raise ValueError(f"{flag} must be >= {minimum} (got {value})")
