"""The CI speed gate: the base commit and the working tree timed side by side on one machine, judged
by a statistical rule that stops as soon as the verdict is clear.

How (after asv's ``continuous`` and duet benchmarking, Bulej et al., ICPE'20): the base commit is
checked out into a temporary git worktree; two worker processes (``dinat_timm/bench/gate_worker.py``)
import ``dinat_timm`` from the base tree and from the working tree, nothing installed. They take
turns, one forward of each gated model per turn, in quads ``A B B A`` then ``B A A B``: a quad's
sample is ``log(min(B1, B2) / min(A1, A2))`` (interference only adds time, so the faster of two
adjacent rounds is the cleaner one). The samples' median is the slowdown's estimate; its
distribution-free confidence interval comes from the order statistics (the sign test's interval: no
assumption on the noise's shape, and a burst of load moves a few samples, not the median). With ``s``
the slowdown to catch (15%), the boundary is its half on the log scale: a model regressed when its
whole interval is above the boundary, is clear when its whole interval is below it; after each quad
the gate stops once every model is clear or one regressed. When the budget is spent first, a model
whose interval lies wholly below ``s`` is clear (no slowdown of ``s``), else the gate cannot judge.

The rule's false-alarm and miss rates, simulated with this machine's measured noise, are in
``docs/ci-speed-gate.md`` and asserted by ``tests/test_gate.py``.
"""
from __future__ import annotations

import bisect
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

DEFAULT_MODELS = ("dinat_mini", "nat_mini")
DEFAULT_SLOWDOWN = 0.15
DEFAULT_BUDGET_S = 150.0  # timing rounds; with the two processes' start, within 3 minutes on 2 cores
CONFIDENCE = 0.99  # per model and look; the simulation counts what repeated looks add
FINAL_CONFIDENCE = 0.999  # the last look, where "clear" only needs the interval below the slowdown itself
MIN_QUADS = 10  # the smallest sample judged (an interval at CONFIDENCE exists from 8)
WORKER = Path(__file__).resolve().parents[1] / "bench" / "gate_worker.py"


class GateError(RuntimeError):
    """The gate cannot judge: the base cannot be checked out or built, a worker failed (exit 2)."""


# -- the decision rule ---------------------------------------------------------------------------------------


def _binomial_cdf(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@functools.lru_cache(maxsize=None)
def order_statistic_rank(n: int, confidence: float = CONFIDENCE) -> Optional[int]:
    """The largest k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2: the median's interval is
    [x_(k), x_(n+1-k)] (1-based); None when n is too small for the confidence."""
    tail = (1 - confidence) / 2
    k = 0
    while k + 1 <= n and _binomial_cdf(k, n) <= tail:
        k += 1
    return k if k >= 1 else None


@dataclass
class Judgement:
    """One model's state: its samples (log slowdown), the estimate and interval, and the word."""

    model: str
    samples: List[float] = field(default_factory=list)  # kept sorted
    verdict: str = "undecided"  # regressed | clear | undecided
    estimate: Optional[float] = None  # as a speed factor: 1.15 = 15% slower
    low: Optional[float] = None
    high: Optional[float] = None
    confidence: float = CONFIDENCE  # of the interval last judged

    def add(self, log_slowdown: float) -> None:
        bisect.insort(self.samples, log_slowdown)

    def judge(self, boundary: float, confidence: float = CONFIDENCE, catch: Optional[float] = None) -> str:
        """``catch`` (the log of the slowdown to catch), at the end of the budget only: an interval
        wholly below it is clear too (no such slowdown), though it reaches over the boundary."""
        n = len(self.samples)
        if n == 0:
            return self.verdict
        mid = (self.samples[(n - 1) // 2] + self.samples[n // 2]) / 2
        self.estimate = math.exp(mid)
        k = order_statistic_rank(n, confidence)
        self.confidence = confidence
        if k is None:
            self.low = self.high = None
            self.verdict = "undecided"
            return self.verdict
        lo, hi = self.samples[k - 1], self.samples[n - k]
        self.low, self.high = math.exp(lo), math.exp(hi)
        clear_below = boundary if catch is None else catch
        self.verdict = "regressed" if lo > boundary else "clear" if hi < clear_below else "undecided"
        return self.verdict


def quad_sample(a1: float, b1: float, b2: float, a2: float) -> float:
    """One quad's log slowdown of B: interference only ever adds time, so the faster of each side's two
    rounds is the cleaner reading; in A B B A (and B A A B) a drift favours each side alike."""
    return math.log(min(b1, b2) / min(a1, a2))


def boundary_for(slowdown: float) -> float:
    """Half the slowdown to catch, on the log scale: 15% -> log(1.15) / 2 (about 7.2%)."""
    return math.log1p(slowdown) / 2


def overall(judgements: Sequence[Judgement]) -> str:
    if any(j.verdict == "regressed" for j in judgements):
        return "regressed"
    return "clear" if all(j.verdict == "clear" for j in judgements) else "undecided"


def decide_stream(quads, models: Sequence[str], slowdown: float = DEFAULT_SLOWDOWN, max_quads: int = 10**9,
                  stop_early: bool = True) -> Tuple[str, List[Judgement], int]:
    """The rule over a stream of quads (each: {model: (a1, b1, b2, a2)}, each side's two rounds in seconds), as
    the gate applies it; the simulation feeds it synthetic streams. ``stop_early=False`` takes every quad the
    stream gives (to record a machine's noise). Returns (verdict, judgements, quads used)."""
    boundary = boundary_for(slowdown)
    judgements = [Judgement(m) for m in models]
    used = 0
    for quad in quads:
        used += 1
        for j in judgements:
            j.add(quad_sample(*quad[j.model]))
        if used >= MIN_QUADS:
            for j in judgements:
                j.judge(boundary)
            verdict = overall(judgements)
            if verdict != "undecided" and stop_early:
                return verdict, judgements, used
        if used >= max_quads:
            break
    for j in judgements:  # the budget is spent: clear unless the slowdown to catch is inside the interval
        j.judge(boundary, FINAL_CONFIDENCE, catch=math.log1p(slowdown))
    return overall(judgements), judgements, used


# -- running the two sides -----------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise GateError(f"git {' '.join(args)}: {said[-1] if said else 'failed'}")
    return proc.stdout.strip()


def default_base(root: Path) -> Tuple[str, str]:
    """(ref, why): a pull request's target branch (GitHub's ``GITHUB_BASE_REF``) where it is one; the
    last commit where the tree has uncommitted changes; else the commit before this one (a push)."""
    target = os.environ.get("GITHUB_BASE_REF")
    if target:
        return _git(root, "merge-base", "HEAD", f"origin/{target}"), f"the merge base with origin/{target} (pull request)"
    if _git(root, "status", "--porcelain", "--untracked-files=no"):
        return "HEAD", "HEAD (the working tree has uncommitted changes)"
    return "HEAD~1", "HEAD~1 (the commit before this one)"


class _Worker:
    def __init__(self, label: str, tree: Path, models: Sequence[str], batch_size: int, img_size: int):
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
        self.label = label
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty side cannot block on it
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--tree", str(tree), "--models", ",".join(models),
             "--batch-size", str(batch_size), "--img-size", str(img_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env, cwd=str(tree))

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            self.stderr.seek(0)
            err = self.stderr.read().strip().splitlines()
            raise GateError(f"the {self.label} side failed to start or run: {err[-1] if err else 'no output'}")
        return json.loads(line)

    def run(self) -> Dict[str, float]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self.read()["seconds"]

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
        self.stderr.close()


@dataclass
class GateResult:
    verdict: str  # regressed | clear | undecided
    base: str
    base_commit: str
    why_base: str
    slowdown: float
    judgements: List[Judgement]
    quads: int
    seconds: float
    raw: List[dict] = field(default_factory=list)  # every quad's seconds, {model: [a1, b1, b2, a2]}

    @property
    def exit_code(self) -> int:
        return {"clear": 0, "regressed": 1}.get(self.verdict, 2)


def run_gate(root: Path, base: Optional[str] = None, models: Sequence[str] = DEFAULT_MODELS,
             slowdown: float = DEFAULT_SLOWDOWN, budget_s: float = DEFAULT_BUDGET_S, batch_size: int = 4,
             img_size: int = 224, progress=None, stop_early: bool = True) -> GateResult:
    """Time the base commit against the working tree of ``root`` and judge; see the module's docstring.
    ``stop_early=False`` spends the whole budget (to record the machine's noise in ``raw``)."""
    root = Path(root).resolve()
    why = "as given"
    if base is None:
        base, why = default_base(root)
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except GateError:
        raise GateError(f"the base {base!r} is not a commit of {root} (a shallow clone, or a ref not fetched?): "
                        "give --base a commit that is here") from None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dinat-gate-") as tmp:
        tree = Path(tmp) / "base"
        _git(root, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        workers = []
        try:
            workers = [_Worker("base", tree, models, batch_size, img_size),
                       _Worker("working-tree", root, models, batch_size, img_size)]
            for w in workers:
                w.read()  # ready
            a, b = workers
            raw: List[dict] = []
            quads = _quads(a, b, models, started + budget_s)
            verdict, judgements, used = decide_stream(_reporting(quads, progress, raw), models, slowdown,
                                                      stop_early=stop_early)
        finally:
            for w in workers:
                w.close()
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return GateResult(verdict, base, commit[:12], why, slowdown, judgements, used, time.perf_counter() - started, raw)


def in_quad_order(t1, t2, t3, t4, b_first: bool) -> tuple:
    """Four rounds in time order -> (a1, b1, b2, a2): A B B A as they are, B A A B rearranged."""
    return (t2, t1, t4, t3) if b_first else (t1, t2, t3, t4)


def _quads(a: _Worker, b: _Worker, models: Sequence[str], deadline: float):
    """Quads until the deadline: A B B A, then B A A B (each side starts every other quad)."""
    b_first = False
    while time.perf_counter() < deadline:
        first, second = (b, a) if b_first else (a, b)
        rounds = first.run(), second.run(), second.run(), first.run()
        yield {m: in_quad_order(*(r[m] for r in rounds), b_first) for m in models}
        b_first = not b_first


def _reporting(quads, progress, raw):
    for i, quad in enumerate(quads, 1):
        raw.append({m: list(t) for m, t in quad.items()})
        if progress is not None and i % 10 == 0:
            progress(i)
        yield quad


# -- what the gate says ---------------------------------------------------------------------------------------


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
