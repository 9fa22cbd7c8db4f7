"""``python -m dinat_timm.results {compare,merge,boards,write}``: the leaderboards' command line.

Exit status: 0 done (compare: no regression), 1 regression found, 2 the command cannot be carried
out as asked: a bad option, a missing, empty or malformed CSV (a truncated line, a text or infinite
figure), CSVs of different suites or devices, flagged rows, nothing in common to compare. Every
such problem is reported at once, one line each on stderr, and nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """Printed one line per problem, exit 2."""

    def __init__(self, *problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line and exit 2, like every other refusal of this command."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _existing_files(paths):
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(*(f"no such file: {p}" for p in missing))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dinat_timm.results", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("compare", help="compare two CSVs of one suite; exit 1 on a regression, 2 if they cannot be compared",
                       description="Pair BASE's and NEW's rows by configuration (and device) and report each change; "
                                   "a speed drop beyond --max-slowdown or a top-1 drop beyond --max-top1-drop is a regression.")
    p.add_argument("base", help="the reference CSV (e.g. results/ci_baseline_cpu.csv)")
    p.add_argument("new", help="the CSV to judge, of the same suite (throughput.csv, memory.csv, op_speed.csv, accuracy_*.csv)")
    p.add_argument("--max-slowdown", default="10%",
                   help="largest tolerated fall in images/s (or rise in step time), as '10%%' or 0.1 [default: 10%%]")
    p.add_argument("--max-top1-drop", default="0.1", help="largest tolerated top-1 fall, in points (>= 0) [default: 0.1]")
    p.add_argument("--relative-to", default=None, metavar="MODEL",
                   help="divide each speed by MODEL's, measured in the same file on the same settings (cancels machine speed)")
    p.add_argument("--allow-device-mismatch", action="store_true",
                   help="compare rows measured on different devices (refused by default)")
    p.add_argument("--include-flagged", action="store_true",
                   help="compare rows flagged as untrustworthy (noisy, impossible; refused by default)")
    p.add_argument("--only-regressions", action="store_true", help="print only the rows that regressed")
    p.add_argument("--require-same-rows", action="store_true",
                   help="a row present in only one of the files fails the verdict (by default it is listed as not compared)")

    p = sub.add_parser("merge", help="merge CSVs from several machines / NATTEN versions into one",
                       description="Concatenate CSVs and keep the latest row of each configuration per device, torch "
                                   "and NATTEN version (a re-run supersedes the earlier row of the same machine).")
    p.add_argument("inputs", nargs="+", help="CSV files to merge")
    p.add_argument("-o", "--out", required=True, help="the merged CSV to write")

    p = sub.add_parser("boards", help="rebuild the leaderboards and the plot from a results directory's raw CSVs")
    p.add_argument("--results-dir", default="results", help="directory holding throughput.csv, memory.csv, … [default: results]")
    p.add_argument("--include-flagged", action="store_true", help="also rank and plot rows that carry a flag")

    p = sub.add_parser("write", help="append rows from pytest-benchmark --benchmark-json output to a CSV")
    p.add_argument("json", help="a pytest-benchmark JSON file")
    p.add_argument("-o", "--out", required=True, help="the CSV to append to (created if missing)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .boards import BoardsRefused
    from .writer import CsvWriteError

    try:
        return _run(args)
    except (UsageError, BoardsRefused) as e:
        for problem in e.problems:
            print(f"error: {args.command}: {problem}", file=sys.stderr)
        return 2
    except CsvWriteError as e:
        print(f"error: {args.command}: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    # imported here, not at the top: --help and usage errors should not wait for pandas
    from .boards import build_boards, merge
    from .compare import run as run_compare
    from .writer import append_rows, rows_from_benchmark_json

    if args.command == "compare":
        return run_compare(args.base, args.new, args.max_slowdown, args.max_top1_drop, args.relative_to,
                           args.allow_device_mismatch, args.only_regressions, args.include_flagged,
                           args.require_same_rows)
    if args.command == "merge":
        _existing_files(args.inputs)
        table, total = merge(args.inputs, args.out)  # checks every input first
        print(f"{args.out}: kept {len(table)} of {total} rows from {len(args.inputs)} file(s), the latest row of each "
              f"configuration per device, torch and NATTEN version ({total - len(table)} earlier duplicates dropped)")
    elif args.command == "boards":
        if not Path(args.results_dir).is_dir():
            raise UsageError(f"no such directory: {args.results_dir}")
        for name, path in build_boards(args.results_dir, args.include_flagged).items():
            print(f"{name}: {path}")
    elif args.command == "write":
        _existing_files([args.json])
        rows = rows_from_benchmark_json(args.json)
        append_rows(args.out, rows)
        print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
