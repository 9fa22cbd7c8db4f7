"""What the gate says: one verdict line, and the same as JSON or a markdown table; a refusal ("cannot judge"
before any verdict) in the asked format too, so a script reading the output always gets one."""
from __future__ import annotations

import json
import math
from typing import Optional

from .rule import CONFIDENCE, boundary_for
from .sides import GateResult

MEASURED = "CPU time of one forward per model (batch 1, 224 px, one thread), the two sides at once on two cores"


def _factor(x: Optional[float]) -> str:
    return "–" if x is None else f"×{x:.3f}"


def _measured(j) -> str:
    return f"{j.model} {_factor(j.estimate)} [{_factor(j.low)}–{_factor(j.high)}]"


def summary_line(result: GateResult) -> str:
    catch = f"{result.slowdown:.0%}"
    head = (f"{len(result.judgements)} model(s) against {result.base} ({result.base_commit}), {result.pairs} pairs of "
            f"rounds in {result.seconds:.0f} s ({result.startup_seconds:.0f} s start-up); {MEASURED}")
    if result.verdict == "regressed":
        worst = [j for j in result.judgements if j.verdict == "regressed"]
        return "gate: REGRESSION — " + "; ".join(
            f"{j.model} is {_factor(j.estimate)} the base's time ({(j.estimate - 1):+.1%}, {j.confidence:.1%} interval "
            f"{_factor(j.low)}–{_factor(j.high)})" for j in worst) + f" [{head}]"
    if result.verdict == "clear":
        return (f"gate: PASS — no gated model is {catch} slower: " + "; ".join(_measured(j) for j in result.judgements)
                + f" [{head}]")
    loose = [j for j in result.judgements if j.verdict == "undecided"]
    return ("gate: CANNOT JUDGE — too noisy for the budget: "
            + "; ".join(f"{j.model} {_factor(j.estimate)}, interval {_factor(j.low)}–{_factor(j.high)} reaches from "
                        f"below ×{math.exp(boundary_for(result.slowdown)):.3f} to {catch} slower, the rounds' spread "
                        f"{j.spread:.1%} (median absolute deviation)" for j in loose)
            + f" [{head}]; re-run on a quieter machine or give --budget more seconds")


def as_dict(result: GateResult) -> dict:
    return {
        "verdict": result.verdict, "exit_code": result.exit_code, "base": result.base, "base_commit": result.base_commit,
        "base_chosen": result.why_base, "slowdown_caught": result.slowdown,
        "boundary": math.exp(boundary_for(result.slowdown)), "confidence": CONFIDENCE, "pairs": result.pairs,
        "seconds": round(result.seconds, 1), "startup_seconds": round(result.startup_seconds, 1),
        "cores": list(result.cores), "measured": MEASURED,
        "cannot_judge": "noisy" if result.verdict == "undecided" else None,
        "models": [dict(model=j.model, verdict=j.verdict, time_factor=j.estimate, low=j.low, high=j.high,
                        samples=len(j.samples), spread=j.spread) for j in result.judgements],
        "line": summary_line(result),
    }


def as_markdown(result: GateResult) -> str:
    word = {"clear": "✅ no regression", "regressed": "❌ regression", "undecided": "⚠️ cannot judge"}[result.verdict]
    lines = [f"### Speed gate: {word}", "",
             f"Working tree against `{result.base}` (`{result.base_commit}`, {result.why_base}); catches a "
             f"{result.slowdown:.0%} slowdown; {result.pairs} pairs of rounds in {result.seconds:.0f} s; {MEASURED}.", "",
             "| model | time vs base | interval | samples | spread | verdict |", "|---|---|---|---|---|---|"]
    for j in result.judgements:
        lines.append(f"| {j.model} | {_factor(j.estimate)} | {_factor(j.low)}–{_factor(j.high)} | {len(j.samples)} | "
                     f"{j.spread:.1%} | {j.verdict} |")
    return "\n".join(lines)


def refusal(line: str, reason: str, fmt: str) -> str:
    """A 'cannot judge' before any verdict (the base does not build, a side failed, the budget went on start-up),
    in the asked format: JSON with exit code 2 and the reason, a markdown note, or the line itself."""
    if fmt == "json":
        return json.dumps({"verdict": "undecided", "exit_code": 2, "cannot_judge": reason, "line": line}, indent=2)
    if fmt == "markdown":
        return f"### Speed gate: ⚠️ cannot judge\n\n{line}"
    return line
