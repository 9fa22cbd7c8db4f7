"""The speed gate's decision rule run on synthetic timing streams, thousands of times, to count its
false alarms (no change) and misses (a real slowdown).

The noise is this machine's, measured (``NOISE``: from gate runs of unchanged code on the 2-core dev
machine, ``--samples``), made worse where it was mild: heavy-tailed jitter (Student's t, 3 degrees of
freedom) on every round, bursts of outside load that hit a few consecutive rounds of either process
(×1.2–×3), a slow drift of the whole machine (±10% over a run, a sine and a trend), and a fixed
offset between the two processes even for identical code. The rule sees the streams exactly as the
gate feeds it (``rule.decide_stream``)::

    python -m dinat_timm.gate.simulation 5000
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, decide_stream, in_quad_order


@dataclass(frozen=True)
class Noise:
    jitter: float  # scale of the t(3) jitter of one round's log time
    burst_rate: float  # chance that a burst starts at a round (each process separately)
    burst_rounds: float  # mean length of a burst, in rounds
    burst_factor: Tuple[float, float]  # a burst multiplies a round's time by U(lo, hi)
    drift: float  # amplitude of the machine's slow drift (log scale)
    process_offset: float  # s.d. of the fixed log offset between two processes of identical code
    round_seconds: float  # one round of one side (every gated model once)


# Measured here (docs/ci-speed-gate.md: gate runs of unchanged code on the idle 2-core machine, --samples):
# a round's log time has a MAD of 0.025-0.03 (t(3) scale ~0.035), 5-9% of rounds are over 1.3x the
# median, the two processes of identical code differ by -0.1% to +2.7%, a round of both models takes
# 0.37 s. Made worse here: jitter 0.05, bursts starting at 6% of rounds (~18% of rounds hit), the
# processes' offset with s.d. 2%, a drift of ±10% over a run.
NOISE = Noise(jitter=0.05, burst_rate=0.06, burst_rounds=3.0, burst_factor=(1.2, 3.0), drift=0.10,
              process_offset=0.02, round_seconds=0.37)


def _side(rng: np.random.Generator, rounds: int, noise: Noise) -> np.ndarray:
    """Multiplicative noise of one process over ``rounds`` rounds (drift added by the caller)."""
    log_t = noise.jitter * rng.standard_t(3, size=rounds)
    factor = np.ones(rounds)
    for start in np.flatnonzero(rng.random(rounds) < noise.burst_rate):
        length = int(rng.geometric(1 / noise.burst_rounds))
        factor[start:start + length] *= rng.uniform(*noise.burst_factor)
    return np.exp(log_t) * factor


def stream(rng: np.random.Generator, slowdown: float, models: Sequence[str], max_quads: int,
           noise: Noise = NOISE) -> Iterator[Dict[str, tuple]]:
    """Quads {model: (a1, b1, b2, a2)} as the gate takes them, B slowed by ``slowdown``."""
    rounds = 4 * max_quads
    phase, trend = rng.uniform(0, 2 * math.pi), rng.uniform(-1, 1)
    x = np.arange(rounds) / rounds
    drift = np.exp(noise.drift * (0.5 * np.sin(2 * math.pi * 2 * x + phase) + 0.5 * trend * x))
    per_model = {}
    for m in models:
        base = rng.uniform(0.5, 1.5)
        offset = math.exp(rng.normal(0, noise.process_offset))
        a = base * drift * _side(rng, rounds, noise)
        b = base * offset * (1 + slowdown) * drift * _side(rng, rounds, noise)
        per_model[m] = (a, b)
    for q in range(max_quads):
        b_first = q % 2 == 1  # A B B A, then B A A B, as the gate runs them
        order = "BAAB" if b_first else "ABBA"
        yield {m: in_quad_order(*((a if side == "A" else b)[4 * q + i] for i, side in enumerate(order)), b_first)
               for m, (a, b) in per_model.items()}


def error_rates(runs: int, seed: int = 0, noise: Noise = NOISE, slowdown_caught: float = 0.15,
                budget_s: float = DEFAULT_BUDGET_S, models: Sequence[str] = DEFAULT_MODELS) -> Dict[str, float]:
    """False alarms (not 'clear' at 0% change: 'regressed' fails, 'undecided' cannot judge) and misses
    (not 'regressed' at ``slowdown_caught``) over ``runs`` simulated gate runs each."""
    rng = np.random.default_rng(seed)
    max_quads = int(budget_s / (4 * noise.round_seconds))
    counts = {"false_alarm": 0, "undecided_at_0": 0, "miss": 0, "undecided_at_catch": 0}
    quads_used = {0.0: [], slowdown_caught: []}
    for _ in range(runs):
        for change in (0.0, slowdown_caught):
            verdict, _, used = decide_stream(stream(rng, change, models, max_quads, noise), models,
                                             slowdown_caught, max_quads=max_quads)
            quads_used[change].append(used)
            if change == 0.0:
                counts["false_alarm"] += verdict == "regressed"
                counts["undecided_at_0"] += verdict == "undecided"
            else:
                counts["miss"] += verdict == "clear"
                counts["undecided_at_catch"] += verdict == "undecided"
    rates = {k: v / runs for k, v in counts.items()}
    rates.update(runs=runs, max_quads=max_quads,
                 median_quads_at_0=float(np.median(quads_used[0.0])),
                 median_quads_at_catch=float(np.median(quads_used[slowdown_caught])))
    return rates


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for key, value in error_rates(n).items():
        print(f"{key}: {value}")
