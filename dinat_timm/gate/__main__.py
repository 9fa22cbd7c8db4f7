"""``python -m dinat_timm.gate``: does this change make a gated model slower? Exit 0 no, 1 yes (the line
names the model, by how much, the interval), 2 it cannot judge (the line says why)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..results.cli import Parser, fraction, invalid, model_names, number, refuse
from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, DEFAULT_SLOWDOWN


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m dinat_timm.gate",
               description="The CI speed gate (docs/ci-speed-gate.md): the base commit (a temporary git worktree) and "
                           "the working tree run in two processes, nothing installed, in alternating rounds (A B B A); "
                           "each gated model's slowdown is the median of the rounds' log ratios with a "
                           "distribution-free interval, sampled until the verdict is clear or the budget is spent.")
    p.add_argument("--base", default=None, metavar="REF",
                   help="git ref to compare against [default: a pull request's merge base (GITHUB_BASE_REF); HEAD if "
                        "the working tree has uncommitted changes; else HEAD~1]")
    p.add_argument("--models", default=list(DEFAULT_MODELS), type=model_names("--models"),
                   help=f"gated models (forward, batch 4) [default: {','.join(DEFAULT_MODELS)}]")
    p.add_argument("--slowdown", default=DEFAULT_SLOWDOWN, type=fraction("--slowdown"),
                   help=f"the slowdown to catch, as '15%%' or 0.15 [default: {DEFAULT_SLOWDOWN * 100:g}%%]")
    p.add_argument("--budget", default=DEFAULT_BUDGET_S, type=number("--budget", 10, 3600, "seconds"),
                   help=f"seconds of timing rounds at most [default: {DEFAULT_BUDGET_S:g}]")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="how the verdict is printed")
    p.add_argument("--samples", default=None, metavar="FILE",
                   help="also write every round's seconds (JSON: per quad, per model, A1 B1 B2 A2) to FILE")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problems = invalid(args)
    if args.slowdown == 0:
        problems.append("--slowdown 0 cannot be caught: give the slowdown that must fail, such as 15%")
    if problems:
        return refuse("gate", problems)
    from .report import as_json, as_markdown, summary_line
    from .sides import GateError, run_gate

    try:
        result = run_gate(Path.cwd(), args.base, args.models, args.slowdown, args.budget,
                          progress=lambda n: print(f"gate: {n} quads …", file=sys.stderr, flush=True))
    except GateError as e:
        print(f"gate: CANNOT JUDGE — {e}", file=sys.stderr)
        return 2
    if args.samples:
        Path(args.samples).write_text(json.dumps({"base": result.base_commit, "order": "a1 b1 b2 a2",
                                                  "quads": result.raw}) + "\n")
    if args.format == "json":
        print(as_json(result))
    elif args.format == "markdown":
        print(as_markdown(result))
    print(summary_line(result), file=sys.stderr if args.format != "text" else sys.stdout)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
