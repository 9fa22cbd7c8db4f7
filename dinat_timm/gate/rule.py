"""The gate's decision rule: from quads of rounds (``A B B A``, ``B A A B``) to a verdict per model.

A quad's sample is ``log(min(B1, B2) / min(A1, A2))`` (interference only adds time, so the faster of two
adjacent rounds is the cleaner one). The samples' median is the slowdown's estimate; its
distribution-free confidence interval comes from the order statistics (the sign test's interval: no
assumption on the noise's shape, and a burst of load moves a few samples, not the median). With ``s``
the slowdown to catch, the boundary is its half on the log scale: a model regressed when its whole
interval is above the boundary, is clear when its whole interval is below it; after each quad the gate
stops once every model is clear or one regressed. When the budget is spent first, a model whose
interval lies wholly below ``s`` is clear (no slowdown of ``s``), else the gate cannot judge.

The rule's false-alarm and miss rates, simulated with this machine's measured noise, are in
``docs/ci-speed-gate.md`` and asserted by the tests (``gate.simulation``).
"""
from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

DEFAULT_MODELS = ("dinat_mini", "nat_mini")
DEFAULT_SLOWDOWN = 0.15
DEFAULT_BUDGET_S = 150.0  # timing rounds; with the two processes' start, within 3 minutes on 2 cores
CONFIDENCE = 0.99  # per model and look; the simulation counts what repeated looks add
FINAL_CONFIDENCE = 0.999  # the last look, where "clear" only needs the interval below the slowdown itself
MIN_QUADS = 10  # the smallest sample judged (an interval at CONFIDENCE exists from 8)


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


def in_quad_order(t1, t2, t3, t4, b_first: bool) -> tuple:
    """Four rounds in time order -> (a1, b1, b2, a2): A B B A as they are, B A A B rearranged."""
    return (t2, t1, t4, t3) if b_first else (t1, t2, t3, t4)
