"""``python -m dinat_timm.results {compare,merge,boards,write}``."""
from __future__ import annotations

import argparse
import sys

from .boards import build_boards, merge
from .compare import run as run_compare
from .writer import append_rows, rows_from_benchmark_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dinat_timm.results", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="compare two CSVs; exit 1 on regression")
    p.add_argument("base")
    p.add_argument("new")
    p.add_argument("--max-slowdown", default="10%")
    p.add_argument("--max-top1-drop", default="0.1", type=float)
    p.add_argument("--relative-to", default=None, help="divide speed by this model's, measured in the same file")
    p.add_argument("--allow-device-mismatch", action="store_true",
                   help="compare rows measured on different devices (refused by default, exit 2)")

    p = sub.add_parser("merge", help="merge CSVs from several machines / NATTEN versions")
    p.add_argument("inputs", nargs="+")
    p.add_argument("-o", "--out", required=True)

    p = sub.add_parser("boards", help="rebuild leaderboards and plot from a results dir's raw CSVs")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--include-flagged", action="store_true", help="also rank and plot rows that carry a flag")

    p = sub.add_parser("write", help="append rows from pytest-benchmark --benchmark-json output to a CSV")
    p.add_argument("json")
    p.add_argument("-o", "--out", required=True)

    args = parser.parse_args(argv)
    if args.command == "compare":
        return run_compare(args.base, args.new, args.max_slowdown, args.max_top1_drop, args.relative_to,
                           args.allow_device_mismatch)
    if args.command == "merge":
        table = merge(args.inputs, args.out)
        print(f"{len(table)} rows -> {args.out}")
    elif args.command == "boards":
        for name, path in build_boards(args.results_dir, args.include_flagged).items():
            print(f"{name}: {path}")
    elif args.command == "write":
        rows = rows_from_benchmark_json(args.json)
        append_rows(args.out, rows)
        print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
