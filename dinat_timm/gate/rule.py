"""The gate's decision rule: from pairs of rounds to a verdict per model.

The two sides run at the same moment, one on each core, and swap cores every round; a pair of rounds (one each
way round) gives each model one sample, ``(log(B1/A1) + log(B2/A2)) / 2``: the mean of the two log ratios of CPU
time, in which a core's own speed cancels and the machine's drift cannot enter (both sides saw it). The samples'
median is the slowdown's estimate; its distribution-free confidence interval comes from the order statistics (the
sign test's interval: no assumption on the noise's shape, and a burst of load moves a few samples, not the median).

With ``s`` the slowdown to catch, the boundary is its half on the log scale: a model regressed when its whole
interval is above the boundary, is clear when its whole interval is below it; after each pair the gate stops once
every model is clear or one regressed. When the budget is spent first, a model whose interval lies wholly below
``s`` is clear (no slowdown of ``s``), one wholly above the boundary regressed, else the gate cannot judge.

The rule's false-alarm and miss rates, simulated on noise measured here, are in ``docs/ci-speed-gate.md`` and
asserted by the tests (``gate.simulation``).
"""
from __future__ import annotations

import bisect
import functools
import math
import statistics
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

DEFAULT_MODELS = ("dinat_mini", "nat_mini")
DEFAULT_SLOWDOWN = 0.05
DEFAULT_BUDGET_S = 180.0  # the whole run: the base's worktree, both sides' start-up, the rounds, the cleanup
CONFIDENCE = 0.99  # per model and look; the simulation counts what repeated looks add
FINAL_CONFIDENCE = 0.999  # the last look, where "clear" only needs the interval below the slowdown itself
MIN_PAIRS = 12  # the smallest sample judged (an interval at CONFIDENCE exists from 8)


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


def pair_sample(a1: float, b1: float, a2: float, b2: float) -> float:
    """One pair of rounds' log slowdown of B: (a1, b1) timed at the same moment with A on one core, (a2, b2) with
    the cores swapped; the mean of the two log ratios, in which each core's own speed cancels."""
    return (math.log(b1 / a1) + math.log(b2 / a2)) / 2


def boundary_for(slowdown: float) -> float:
    """Half the slowdown to catch, on the log scale: 5% -> log(1.05) / 2 (about 2.47%)."""
    return math.log1p(slowdown) / 2


def spread(samples: Sequence[float]) -> Optional[float]:
    """The samples' median absolute deviation (log scale): the noise figure a verdict line reports."""
    if not samples:
        return None
    mid = statistics.median(samples)
    return statistics.median(abs(x - mid) for x in samples)


@dataclass
class Judgement:
    """One model's state: its samples (log slowdown), the estimate and interval, and the word."""

    model: str
    samples: List[float] = field(default_factory=list)  # kept sorted
    verdict: str = "undecided"  # regressed | clear | undecided
    estimate: Optional[float] = None  # as a time factor: 1.05 = 5% slower
    low: Optional[float] = None
    high: Optional[float] = None
    confidence: float = CONFIDENCE  # of the interval last judged

    def add(self, log_slowdown: float) -> None:
        bisect.insort(self.samples, log_slowdown)

    @property
    def spread(self) -> Optional[float]:
        return spread(self.samples)

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


def overall(judgements: Sequence[Judgement]) -> str:
    if any(j.verdict == "regressed" for j in judgements):
        return "regressed"
    return "clear" if all(j.verdict == "clear" for j in judgements) else "undecided"


def decide_stream(pairs, models: Sequence[str], slowdown: float = DEFAULT_SLOWDOWN, max_pairs: int = 10**9,
                  stop_early: bool = True) -> Tuple[str, List[Judgement], int]:
    """The rule over a stream of pairs (each: {model: (a1, b1, a2, b2)}, CPU seconds of each side's forward, the
    cores swapped between the two rounds), as the gate applies it; the simulation feeds it synthetic streams.
    ``stop_early=False`` takes every pair the stream gives (to record a machine's noise). Returns (verdict,
    judgements, pairs used)."""
    boundary = boundary_for(slowdown)
    judgements = [Judgement(m) for m in models]
    used = 0
    for pair in pairs:
        used += 1
        for j in judgements:
            j.add(pair_sample(*pair[j.model]))
        if used >= MIN_PAIRS:
            for j in judgements:
                j.judge(boundary)
            verdict = overall(judgements)
            if verdict != "undecided" and stop_early:
                return verdict, judgements, used
        if used >= max_pairs:
            break
    for j in judgements:  # the budget is spent: clear unless the slowdown to catch is inside the interval
        j.judge(boundary, FINAL_CONFIDENCE, catch=math.log1p(slowdown))
    return overall(judgements), judgements, used
