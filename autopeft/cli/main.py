"""The ``autopeft`` command line: one module per subcommand in :mod:`autopeft.cli.commands`.

A :class:`~autopeft.core.errors.UserError` (a mistake in the input) is printed as one ``error:`` line and
exits with code 2, like argparse's own usage errors, and so is a full disk or a read-only study directory
(:mod:`autopeft.core.faults`); anything else is a bug and keeps its traceback. Ctrl-C exits with code 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from autopeft.cli.commands import COMMAND_MODULES
from autopeft.core.errors import UserError
from autopeft.core.logs import quiet_libraries

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autopeft", description="Search hybrid PEFT architectures under budgets.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"autopeft.cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="[autopeft] %(message)s")
    quiet_libraries()
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from autopeft.core.faults import environment_error

        message = environment_error(exc)  # a full disk or a read-only directory: not a bug, one line
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
