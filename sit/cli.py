"""The `sit` command: one entry point, one subcommand per program.

Each subcommand lives in `sit/commands/<name>.py` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed args and returning an exit code).
User errors (ValueError, FileNotFoundError, ...) print one line and exit 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import sit

# subcommand modules, in the order `sit --help` lists them
COMMANDS = ("train", "extract", "sample", "eval", "likelihood", "lt", "sweep", "pathlength", "convert", "info", "demo_gaussian", "study")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sit",
        description="SiT: Scalable Interpolant Transformers (train, sample, evaluate flow/diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"sit {sit.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"sit.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"sit.commands.{name}":
                continue  # not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sit: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, ImportError, RuntimeError, OSError) as e:
        if args.debug:
            raise
        print(f"sit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
