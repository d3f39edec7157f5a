"""The `sit` command: one entry point, one subcommand per program.

Each subcommand lives in `sit/commands/<name>.py` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed args and returning an exit code).
User errors (ValueError, FileNotFoundError, ...) print one line and exit 2; ``--debug`` shows
the traceback. Options common to every subcommand (``--threads``) are added here, so no
subcommand can lack them. A mistyped flag gets the subcommand's usage and a "did you mean".
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

import sit

# subcommand modules, in the order `sit --help` lists them
COMMANDS = ("train", "extract", "sample", "eval", "likelihood", "lt", "sweep", "pathlength", "study", "convert",
            "info", "demo_gaussian", "ema")
THREADS_ENV = "SIT_THREADS"


def default_threads() -> tuple[int, str]:
    """(torch CPU threads, why). The cores this process may use, less the ones other processes keep
    busy (the 1-minute load average), at least 1: on a 2-core machine with one busy core, torch's
    default of 2 threads made `sit sample` 7x and `sit likelihood` 4x slower than 1 thread
    (docs/benchmarks.md, "Threads")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    free = max(1, int(cores - busy + 0.5))
    n = max(1, min(cores, free))
    return n, f"{cores} usable cores, load average {busy:.2f} -> {n}"


def resolve_threads(requested: int | None) -> tuple[int, str]:
    """--threads N > $SIT_THREADS > `default_threads`."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"--threads must be >= 1, or 0 for torch's own default (got {requested})")
        return requested, "--threads"
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive integer (got {env!r})")
        return int(env), f"${THREADS_ENV}"
    return default_threads()


def _add_common(p: argparse.ArgumentParser) -> None:
    have = {s for a in p._actions for s in a.option_strings}
    if "--threads" not in have:
        p.add_argument("--threads", type=int, metavar="N",
                       help=f"torch CPU threads; 0 = torch's default (default: ${THREADS_ENV}, else the free cores: usable "
                            "cores minus the load average, at least 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sit",
        description="SiT: Scalable Interpolant Transformers (train, sample, evaluate flow/diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"sit {sit.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sit.commands.{name}").register(sub)
    for p in sub.choices.values():
        _add_common(p)
    parser._sit_subparsers = sub.choices  # for errors in the subcommand's own words
    return parser


def _unknown_flags_error(parser: argparse.ArgumentParser, command: str | None, extras: list[str]) -> None:
    """Exit 2 with the subcommand's usage and the closest known flag for each unknown one."""
    subs = getattr(parser, "_sit_subparsers", {})
    target = subs.get(command, parser)
    known = sorted({s for a in target._actions for s in a.option_strings if s.startswith("--")})
    hints = []
    for e in extras:
        flag = e.split("=", 1)[0]
        if flag.startswith("-"):
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{flag} (did you mean {close[0]}?)")
                continue
        hints.append(flag)
    target.error(f"unrecognized arguments: {' '.join(hints)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_flags_error(parser, args.command, extras)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        import torch

        n, why = resolve_threads(getattr(args, "threads", None))
        if n > 0:
            torch.set_num_threads(n)
        if args.debug:
            print(f"sit: {n} CPU threads ({why})", file=sys.stderr)
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
