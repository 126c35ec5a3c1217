"""The ``midas-ref`` command line: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Errors derived from :class:`midas_ref.errors.MidasRefError` become one
line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import MidasRefError

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("simulate", "calibrate", "panels", "rings", "export", "validate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midas-ref",
        description="MIDAS-style powder-calibrant detector calibration: simulate, calibrate, validate.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"midas-ref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 success, 2 user error, 1 failed calibration)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except MidasRefError as exc:
        print(f"midas-ref {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"midas-ref {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
