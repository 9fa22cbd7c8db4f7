"""``python -m dinat_timm.results {compare,merge,boards,timm-results,write}``: the leaderboards' command line.

Exit status: 0 done (compare: no regression), 1 regression found, 2 the command cannot be carried
out as asked: a bad option, a missing, empty or malformed CSV (a truncated line, a text or infinite
figure), CSVs of different suites or devices, flagged rows, nothing in common to compare. Every
such problem is reported at once, one line each on stderr, and nothing is written.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .cli import Parser, UsageError, fraction, invalid, top1_points


def _existing_files(paths):
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(*(f"no such file: {p}" for p in missing))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m dinat_timm.results", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("compare", help="compare two CSVs of one suite; exit 1 on a regression, 2 if they cannot be compared",
                       description="Pair BASE's and NEW's rows by configuration (and device) and report each change; "
                                   "a speed drop beyond --max-slowdown or a top-1 drop beyond --max-top1-drop is a regression.")
    p.add_argument("base", help="the reference CSV (e.g. results/throughput.csv)")
    p.add_argument("new", help="the CSV to judge, of the same suite (throughput.csv, memory.csv, op_speed.csv, accuracy_*.csv)")
    p.add_argument("--max-slowdown", default=0.10, type=fraction("--max-slowdown"),
                   help="largest tolerated fall in images/s (or rise in step time), as '10%%' or 0.1 [default: 10%%]")
    p.add_argument("--max-top1-drop", default=0.1, type=top1_points, help="largest tolerated top-1 fall, in points (>= 0) [default: 0.1]")
    p.add_argument("--relative-to", default=None, metavar="MODEL",
                   help="divide each speed by MODEL's, measured in the same file on the same settings (cancels machine speed)")
    p.add_argument("--allow-device-mismatch", action="store_true",
                   help="compare rows measured on different devices (refused by default)")
    p.add_argument("--include-flagged", action="store_true",
                   help="compare rows flagged as untrustworthy (noisy, impossible; refused by default)")
    p.add_argument("--only-regressions", action="store_true", help="print only the rows that regressed")
    p.add_argument("--require-same-rows", action="store_true",
                   help="a row present in only one of the files fails the verdict (by default it is listed as not compared)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                   help="text, a markdown table (a CI job summary, a PR comment) or JSON")

    p = sub.add_parser("merge", help="merge CSVs from several machines / NATTEN versions into one",
                       description="Concatenate CSVs and keep the latest row of each configuration per device, torch "
                                   "and NATTEN version (a re-run supersedes the earlier row of the same machine).")
    p.add_argument("inputs", nargs="+", help="CSV files to merge")
    p.add_argument("-o", "--out", required=True, help="the merged CSV to write")

    p = sub.add_parser("boards", help="rebuild the leaderboards and the plot from a results directory's raw CSVs")
    p.add_argument("--results-dir", default="results", help="directory holding throughput.csv, memory.csv, … [default: results]")
    p.add_argument("--include-flagged", action="store_true", help="also rank and plot rows that carry a flag")

    sub.add_parser("gate", add_help=False, help="the CI speed gate: `python -m dinat_timm.gate`, which this runs with the "
                                                "options that follow")

    p = sub.add_parser("timm-results", help="write timm's results files (results-imagenet.csv, -real, -a, …) from the "
                                            "accuracy rows",
                       description="timm's results/ files, in its format, for every evaluation set with rows (the "
                                   "comparison files only where their base has rows): docs/accuracy.md.")
    p.add_argument("results_dir", help="a results directory (its accuracy CSVs and those of runs/*/)")
    p.add_argument("-o", "--out", required=True, help="the directory to write results-*.csv into")
    p.add_argument("--overwrite", action="store_true", help="replace results-*.csv files already there")

    p = sub.add_parser("write", help="append rows from pytest-benchmark --benchmark-json output to a CSV")
    p.add_argument("json", help="a pytest-benchmark JSON file")
    p.add_argument("-o", "--out", required=True, help="the CSV to append to (created if missing)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gate"]:  # the gate's own command line, in a process of its own (it runs the models)
        return subprocess.run([sys.executable, "-m", "dinat_timm.gate", *argv[1:]]).returncode
    args = build_parser().parse_args(argv)
    from .boards import BoardsRefused
    from .writer import CsvWriteError

    try:
        if args.command != "compare" and invalid(args):  # compare says them with its files' problems
            raise UsageError(*invalid(args))
        return _run(args)
    except (UsageError, BoardsRefused) as e:
        for problem in e.problems:
            print(f"error: {args.command}: {problem}", file=sys.stderr)
        return 2
    except CsvWriteError as e:
        print(f"error: {args.command}: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:  # a file-system problem, malformed JSON: one line, not a traceback
        what = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename and e.strerror else str(e)
        print(f"error: {args.command}: {type(e).__name__}: {what}", file=sys.stderr)
        return 2


def _run(args) -> int:
    # imported here, not at the top: --help and usage errors should not wait for pandas
    from .boards import build_boards, merge
    from .compare import run as run_compare
    from .writer import append_rows, rows_from_benchmark_json

    if args.command == "compare":
        return run_compare(args.base, args.new, max_slowdown=args.max_slowdown, max_top1_drop=args.max_top1_drop,
                           relative_to=args.relative_to, allow_device_mismatch=args.allow_device_mismatch,
                           only_regressions=args.only_regressions, include_flagged=args.include_flagged,
                           require_same_rows=args.require_same_rows, output_format=args.format,
                           option_problems=invalid(args))
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
    elif args.command == "timm-results":
        from .boards import accuracy_rows, read_raw
        from .timm_format import check_targets, timm_tables, write_timm_files

        if not Path(args.results_dir).is_dir():
            raise UsageError(f"no such directory: {args.results_dir}")
        tables, problems = read_raw(args.results_dir)
        if problems:
            raise UsageError(*problems)
        texts = timm_tables(accuracy_rows(tables))
        if not texts:
            raise UsageError(f"{args.results_dir} has no accuracy row timm's files may hold: of one of timm's evaluation "
                             "sets (the eval_set column: run the accuracy tool with --dataset), of the published weights "
                             "(--pretrained), unflagged, every figure present")
        problem = check_targets(args.out, list(texts), args.overwrite)
        if problem:
            raise UsageError(problem)
        write_timm_files(args.out, texts)
        for name, text in texts.items():
            print(f"{Path(args.out) / name}: {text.count(chr(10)) - 1} row(s)")
    elif args.command == "write":
        _existing_files([args.json])
        try:
            rows = rows_from_benchmark_json(args.json)
        except (ValueError, AttributeError, TypeError) as e:
            raise UsageError(f"{args.json} is not pytest-benchmark's --benchmark-json output: {e}") from None
        if not rows:
            raise UsageError(f"{args.json} holds no benchmark: nothing to write")
        append_rows(args.out, rows)
        print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
