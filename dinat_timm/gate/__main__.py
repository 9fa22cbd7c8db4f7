"""``python -m dinat_timm.gate``: does this change make a gated model slower? Exit 0 no, 1 yes (the line
names the model, by how much, the interval), 2 it cannot judge (the line says why: the noise figure that stopped
it, or the side that failed)."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from ..results.cli import Parser, fraction, invalid, model_names, number, refuse
from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, DEFAULT_SLOWDOWN


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m dinat_timm.gate",
               description="The CI speed gate (docs/ci-speed-gate.md): the base commit (a temporary git worktree) and "
                           "the working tree run in two processes, nothing installed, at the same moment on two cores "
                           "(swapping every round); each gated model's slowdown is the median of the rounds' log CPU-"
                           "time ratios with a distribution-free interval, sampled until the verdict is clear or the "
                           "budget is spent.")
    p.add_argument("--base", default=None, metavar="REF",
                   help="git ref to compare against [default: a pull request's merge base (GITHUB_BASE_REF); HEAD if "
                        "the working tree has uncommitted changes; else HEAD~1]")
    p.add_argument("--models", default=list(DEFAULT_MODELS), type=model_names("--models"),
                   help=f"gated models (forward, batch 1) [default: {','.join(DEFAULT_MODELS)}]")
    p.add_argument("--slowdown", default=DEFAULT_SLOWDOWN, type=fraction("--slowdown"),
                   help=f"the slowdown to catch, as '5%%' or 0.05 [default: {DEFAULT_SLOWDOWN * 100:g}%%]")
    p.add_argument("--budget", default=DEFAULT_BUDGET_S, type=number("--budget", 30, 3600, "seconds"),
                   help=f"seconds of wall clock for the whole run, start-up included [default: {DEFAULT_BUDGET_S:g}]")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="how the verdict is printed")
    p.add_argument("--samples", default=None, metavar="FILE",
                   help="also write every round's CPU seconds (JSON: per pair, per model, A1 B1 A2 B2) to FILE")
    return p


def _check_samples_path(path: str):
    """Where --samples will be written, checked before the run (an unwritable path must not turn a verdict into
    a failure after it)."""
    target = Path(path)
    if target.is_dir():
        return f"--samples {path} is a directory: give a file"
    folder = target.parent
    if not folder.is_dir():
        return f"--samples {path}: directory {folder} does not exist"
    import os

    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return f"--samples {path} cannot be written"
    return None


def _seconds_since_start() -> float:
    """How long this process has run (its imports included: the budget is of the whole command), on Linux."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        import os

        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP (a cancelled CI job, a closed terminal) end the run through its cleanup: the sides
    stopped, the worktree removed."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    problems = invalid(args)
    if args.slowdown == 0:
        problems.append("--slowdown 0 cannot be caught: give the slowdown that must fail, such as 5%")
    if args.samples and not problems:
        problem = _check_samples_path(args.samples)
        if problem:
            problems.append(problem)
    if problems:
        if args.format == "json":
            print(json.dumps({"verdict": None, "exit_code": 2, "errors": problems}, indent=2))
        return refuse("gate", problems)
    from .report import as_dict, as_markdown, refusal, summary_line
    from .sides import GateError, run_gate

    _stop_on_signals()
    try:
        result = run_gate(Path.cwd(), args.base, args.models, args.slowdown, args.budget,
                          progress=lambda n: print(f"gate: {n} pairs …", file=sys.stderr, flush=True),
                          already_s=_seconds_since_start())
    except GateError as e:
        line = f"gate: CANNOT JUDGE — {e}"
        if args.format != "text":
            print(refusal(line, e.reason, args.format))
        print(line, file=sys.stderr)
        return 2
    if args.samples:
        try:
            Path(args.samples).write_text(json.dumps({"base": result.base_commit, "order": "a1 b1 a2 b2",
                                                      "figure": "cpu seconds", "pairs": result.raw}) + "\n")
        except OSError as e:  # the verdict stands: said, not lost
            print(f"gate: the samples could not be written to {args.samples}: {e.strerror or e}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(as_dict(result), indent=2))
    elif args.format == "markdown":
        print(as_markdown(result))
    print(summary_line(result), file=sys.stderr if args.format != "text" else sys.stdout)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
