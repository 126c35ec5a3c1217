"""``midas-ref validate``: the validation harness (scenario matrix, legacy goldens, real data, CRLB, pyFAI).

Exit codes: 0 every accuracy gate passed, 1 a gate failed or a case raised an unexpected error, 2 bad
input (unknown suite, unreadable ``--compare`` file, Dask asked for but not installed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  midas-ref validate --suite quick --out validation-out
  midas-ref validate --suite full --out full --workers 2 --compare validation-out/results.sqlite
  midas-ref validate --suite full --scheduler tcp://10.0.0.5:8786 --db history.sqlite --no-html
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="run the validation suite: accuracy vs truth/legacy/real/CRLB/pyFAI, SQLite + HTML",
        description="Run a validation suite, record every case in SQLite, write an HTML dashboard, and exit 1 "
                    "when an accuracy gate of the calibration issue is broken (docs/validation.md).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--suite", choices=("quick", "full"), default="quick",
                        help="quick: the CI gates (a few minutes); full: the whole matrix + benchmarks")
    parser.add_argument("--out", default="validation-out", help="output folder (default: validation-out)")
    parser.add_argument("--db", default=None, help="results database (default: <out>/results.sqlite; runs append)")
    parser.add_argument("--compare", default=None, metavar="OLD.sqlite",
                        help="report what got better or worse against the latest run in OLD.sqlite")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="Dask scheduler address (needs midas-ref[scale]); default: no Dask, or a local "
                             "Dask cluster when --workers > 1")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes of the local Dask cluster (1 = serial in this process)")
    parser.add_argument("--seed", type=int, default=1, help="first seed of the simulated cases (default 1)")
    parser.add_argument("--shared", default=None, help="reference folder (default: $MIDAS_REF_SHARED or "
                                                         "../shared beside the repository)")
    parser.add_argument("--benchmarks", action=argparse.BooleanOptionalAction, default=None,
                        help="run the pytest-benchmark suites (default: only with --suite full)")
    parser.add_argument("--only", action="append", default=None, metavar="TEXT",
                        help="run only the cases whose id contains TEXT (repeatable), e.g. legacy/ or ge2048/poisson")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML dashboard")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=run)


def run(args) -> int:
    from validation.store import compare_text
    from validation.suite import run_validation

    from ..atomic import check_output_dir, check_output_file

    from ..errors import MidasRefError

    class BadOption(MidasRefError):
        pass

    # output locations and the history database are checked before any case runs
    out = check_output_dir(args.out, "--out")
    db = Path(args.db) if args.db else out / "results.sqlite"
    check_output_file(db, "--db" if args.db else "results database")
    if db.is_file() and db.stat().st_size and db.read_bytes()[:16] != b"SQLite format 3\x00":
        raise BadOption(f"{'--db' if args.db else 'results database'} {db} exists and is not an SQLite database "
                        "(name a new file or an earlier results.sqlite)")
    if args.workers < 1:
        raise BadOption(f"--workers must be >= 1, got {args.workers}")
    if args.seed < 0:
        raise BadOption(f"--seed must be >= 0, got {args.seed}")
    cases = None
    if args.only:
        from validation.scenarios import suite_cases
        from validation.shared import resolve_shared_dir

        cases = [c for c in suite_cases(args.suite, args.seed, resolve_shared_dir(args.shared))
                 if any(text in c.case_id for text in args.only)]
        if not cases:
            raise BadOption(f"no case of the {args.suite} suite matches --only {' '.join(args.only)}")
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    outcome = run_validation(args.suite, args.out, db=args.db, compare=args.compare, scheduler=args.scheduler,
                             workers=args.workers, seed=args.seed, html=not args.no_html, shared=args.shared,
                             benchmarks=args.benchmarks, cases=cases, progress=say)
    print(outcome.tables_text, end="")
    if outcome.compare is not None:
        print(compare_text(outcome.compare, args.compare), end="")
    print(f"results: {outcome.db} (run {outcome.run_id})" + (f"; report: {outcome.html}" if outcome.html else "")
          + f"; {len(outcome.records)} cases in {outcome.wall_s:.1f} s")
    for case_id, gate in outcome.failed_gates:
        print(f"midas-ref validate: GATE FAILED: {case_id}: {gate['quantity']} = {gate['value']:.4g} > "
              f"{gate['bound']:.4g}", file=sys.stderr)
    for case_id, reason in outcome.errors:
        print(f"midas-ref validate: ERROR in {case_id}: {reason}", file=sys.stderr)
    return outcome.exit_code
