"""The `sit` command: one entry point, one subcommand per program.

Each subcommand lives in `sit/commands/<name>.py` and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed args and returning an exit code).
User errors (ValueError, FileNotFoundError, ...) print one line and exit 2, a record field named
as its flag (`sit.commands._errors.in_flags`); ``--debug`` shows the traceback. Options common to
every subcommand (``--threads``) are added here, so no subcommand can lack them.
A mistyped flag gets the subcommand's usage and a "did you mean".

Building the parsers imports no torch, numpy or tqdm: each command's flags are generated from
torch-free records (`sit.commands.flags`), so ``--help`` and flag errors answer at once; torch is
imported once a command runs.
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
            "info", "demo_gaussian", "ema", "tiny_vae")
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
    """--threads N > $SIT_THREADS > `default_threads`; N = 0 means torch's own default, and N is at
    most `sit.config.MAX_THREADS_PER_CORE` per usable core (more crashed inside torch)."""
    from sit.config import check_threads

    if requested is not None:
        check_threads(requested, "--threads")
        return requested, "--threads"
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"${THREADS_ENV} must be an integer: 0 for torch's default, else the threads (got {env!r})")
        check_threads(int(env), f"${THREADS_ENV}")
        return int(env), f"${THREADS_ENV}"
    return default_threads()


def _add_common(p: argparse.ArgumentParser) -> None:
    have = {s for a in p._actions for s in a.option_strings}
    if "--threads" not in have:
        p.add_argument("--threads", type=int, metavar="N",
                       help=f"torch CPU threads; 0 = torch's default (default: ${THREADS_ENV}, else the free cores: usable "
                            "cores minus the load average, at least 1)")


class _Parser(argparse.ArgumentParser):
    """Flag errors in one line (the usage block is one `--help` away), with a "did you mean" for a
    mistyped command."""

    def error(self, message: str):
        import re

        m = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if m:
            names = [c.replace("_", "-") for c in COMMANDS]
            close = difflib.get_close_matches(m.group(1), names, n=1, cutoff=0.5)
            message = (f"unknown command {m.group(1)!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; the commands are {', '.join(names)}")
        else:
            from sit.commands._errors import with_suggestion

            message = with_suggestion(message)
        self.exit(2, f"{self.prog}: error: {message} (see usage: {self.prog} --help)\n")


_METAVAR = {int: "N", float: "X"}
_METAVAR_BY_NAME = {"device": "DEVICE", "method": "NAME", "tolerance": "TOL"}


def _complete_help(p: argparse.ArgumentParser) -> None:
    """Every option has help, a placeholder (N for integers, X for numbers, else a word; never the
    flag's own name in capitals) and, where it has one, its default (read from the parser)."""
    for a in p._actions:
        if not a.option_strings or isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if not a.help:
            a.help = a.dest.replace("_", " ")  # every flag is generated with its help: a last resort
        takes_value = a.nargs != 0 and not isinstance(a, (argparse._StoreConstAction, argparse.BooleanOptionalAction))
        if takes_value and a.metavar is None and a.choices is None:
            a.metavar = _METAVAR.get(a.type) or _METAVAR_BY_NAME.get(a.dest, "VALUE")
        if a.default not in (None, False, argparse.SUPPRESS) and "default" not in a.help:
            a.help += " (default %(default)s)"


class Options(frozenset):
    """A command's option strings, with ``dests``: the long flag of each option's dest (a command's
    own option named by its dest in a message, `sit.commands._errors.flag_of`)."""

    dests: dict[str, str]

    @classmethod
    def of(cls, p: argparse.ArgumentParser) -> "Options":
        opts = cls(s for a in p._actions for s in a.option_strings)
        opts.dests = {a.dest: next(s for s in a.option_strings if s.startswith("--"))
                      for a in p._actions if any(s.startswith("--") for s in a.option_strings)}
        return opts


# each command's option strings: `sit.commands._errors.in_flags` names a field by its flag only where
# the command has that flag
_OPTIONS: dict[str, Options] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sit",
        description="SiT: Scalable Interpolant Transformers (train, sample, evaluate flow/diffusion models).",
    )
    parser.add_argument("--version", action="version", version=f"sit {sit.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sit.commands.{name}").register(sub)
    for name, p in sub.choices.items():
        _add_common(p)
        _complete_help(p)
        _OPTIONS[name] = Options.of(p)
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


def _parse(argv: list[str]):
    """Build the parser and parse ``argv``: the namespace of a command to run, or None after
    printing the top-level help; flag errors exit with one line."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unknown_flags_error(parser, args.command, extras)
    if not getattr(args, "func", None):
        parser.print_help()
        return None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)   # torch-free: help and flag errors answer here, before torch is imported
    if args is None:
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
        from sit.commands._errors import cli_message

        print(f"sit {args.command}: error: {cli_message(e, args.command, _OPTIONS)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
