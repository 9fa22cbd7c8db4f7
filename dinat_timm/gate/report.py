"""What the gate says: one verdict line, and the same as JSON or a markdown table."""
from __future__ import annotations

import json
import math
from typing import Optional

from .rule import CONFIDENCE, boundary_for
from .sides import GateResult


def _factor(x: Optional[float]) -> str:
    return "–" if x is None else f"×{x:.3f}"


def summary_line(result: GateResult) -> str:
    catch = f"{result.slowdown:.0%}"
    head = f"{len(result.judgements)} model(s) against {result.base} ({result.base_commit}), {result.quads} quads in {result.seconds:.0f} s"
    if result.verdict == "regressed":
        worst = [j for j in result.judgements if j.verdict == "regressed"]
        return "gate: REGRESSION — " + "; ".join(
            f"{j.model} is {_factor(j.estimate)} the base's time ({(j.estimate - 1):+.1%}, {j.confidence:.1%} interval "
            f"{_factor(j.low)}–{_factor(j.high)})" for j in worst) + f" [{head}]"
    if result.verdict == "clear":
        return f"gate: PASS — no gated model is {catch} slower ({head})"
    loose = [j for j in result.judgements if j.verdict == "undecided"]
    return ("gate: CANNOT JUDGE — too noisy for the budget: "
            + "; ".join(f"{j.model} {_factor(j.estimate)}, interval {_factor(j.low)}–{_factor(j.high)} reaches from "
                        f"below ×{math.exp(boundary_for(result.slowdown)):.3f} to {catch} slower" for j in loose)
            + f" [{head}]; re-run on an idle machine or give --budget more seconds")


def as_json(result: GateResult) -> str:
    return json.dumps({
        "verdict": result.verdict, "exit_code": result.exit_code, "base": result.base, "base_commit": result.base_commit,
        "base_chosen": result.why_base, "slowdown_caught": result.slowdown,
        "boundary": math.exp(boundary_for(result.slowdown)), "confidence": CONFIDENCE, "quads": result.quads,
        "seconds": round(result.seconds, 1),
        "models": [dict(model=j.model, verdict=j.verdict, time_factor=j.estimate, low=j.low, high=j.high,
                        samples=len(j.samples)) for j in result.judgements],
    }, indent=2)


def as_markdown(result: GateResult) -> str:
    word = {"clear": "✅ no regression", "regressed": "❌ regression", "undecided": "⚠️ cannot judge"}[result.verdict]
    lines = [f"### Speed gate: {word}", "",
             f"Working tree against `{result.base}` (`{result.base_commit}`, {result.why_base}); catches a "
             f"{result.slowdown:.0%} slowdown; {result.quads} quads (A B B A) in {result.seconds:.0f} s.", "",
             "| model | time vs base | interval | samples | verdict |", "|---|---|---|---|---|"]
    for j in result.judgements:
        lines.append(f"| {j.model} | {_factor(j.estimate)} | {_factor(j.low)}–{_factor(j.high)} | {len(j.samples)} | {j.verdict} |")
    return "\n".join(lines)
