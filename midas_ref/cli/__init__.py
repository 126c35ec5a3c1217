"""The ``midas-ref`` command line: one entry point, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=<callable(args) -> int>``. Errors derived from :class:`midas_ref.errors.MidasRefError` become one
line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import signal
import sys
import threading

from .. import __version__
from ..atomic import clear_signals, note_signal
from ..errors import MidasRefError

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("simulate", "calibrate", "panels", "rings", "export", "validate")


def job_console(threads: int, quiet: bool):
    """Set numba's thread count (0 = all) and return the ``say`` that prints progress lines to stderr."""
    if threads:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


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


class Terminated(BaseException):
    """SIGTERM, raised where the process happens to be so that every output set is discarded on the way out."""


def _on_signal(signum, frame):
    note_signal(signum)  # a writer that swallows the exception still cannot commit (atomic.OutputSet)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def _with_negative_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``-StoppingStrain -1e-4`` → ``-StoppingStrain=-1e-4``: argparse takes a value that starts with '-' and
    is not a plain decimal for an option; a single-value option followed by a number gets it joined."""
    sub = next((action.choices[a] for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for a in argv[:1] if a in action.choices), None)
    if sub is None:
        return argv
    single = {o for action in sub._actions if action.nargs is None and action.option_strings
              for o in action.option_strings}
    out = []
    for token in argv:
        if out and out[-1] in single and token.startswith("-") and _NUMBER.fullmatch(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


_NUMBER = re.compile(r"-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|-inf|-nan", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    0 success, 1 failed calibration or failed validation gate, 2 bad input (one line on stderr), 130 SIGINT,
    143 SIGTERM. An interrupted or failed run leaves its output folder as it was (docs/cli.md, "Output
    contract").
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_with_negative_values(argv, parser))
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    clear_signals()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.func(args) or 0)
    except MidasRefError as exc:
        print(f"midas-ref {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"midas-ref {args.command}: interrupted (SIGINT); the output folder is as it was", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``midas-ref rings … | head``): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # no second complaint when Python flushes stdout at exit
        return 0
    except Terminated:
        print(f"midas-ref {args.command}: terminated (SIGTERM); the output folder is as it was", file=sys.stderr)
        return 143
    finally:
        clear_signals()  # the next command run in this process (tests, notebooks) starts clean
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
