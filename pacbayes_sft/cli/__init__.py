"""`pacbayes-sft` command line: parses, calls the library, prints.

Commands live in three modules by what they act on: :mod:`.numbers` (bound terms from numbers
or an adapter file), :mod:`.models` (one model or adapter) and :mod:`.jobs` (whole studies).
Every error from bad input ends the command with one readable line on stderr and exit status 2 —
never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .. import console
from . import estimate, jobs, models, numbers, race
from .models import pretrain_config_from_args

__all__ = ["CLIError", "build_parser", "main", "pretrain_config_from_args"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + exits 2; keep it to one line
        raise CLIError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pacbayes-sft", description="PAC-Bayes bound terms for LoRA fine-tuning runs.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    numbers.add_commands(sub)
    jobs.add_commands(sub)
    models.add_commands(sub)
    race.add_commands(sub)
    estimate.add_commands(sub)
    for command in sub.choices.values():
        loud = command.add_mutually_exclusive_group()
        loud.add_argument("--quiet", action="store_true", help="print only results and errors (no progress bars)")
        loud.add_argument("--verbose", action="store_true", help="also print library warnings and Trainer logs")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        console.configure("quiet" if args.quiet else "verbose" if args.verbose else "default")
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"pacbayes-sft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pacbayes-sft: interrupted", file=sys.stderr)
        return 130
