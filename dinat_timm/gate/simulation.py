"""The speed gate's decision rule run on synthetic timing streams, thousands of times, to count its false alarms
(no change) and misses (a real slowdown), on noise measured here and on noise made worse.

A stream is what the gate reads: pairs of rounds, each side's CPU time of one forward per model, the two sides at
the same moment on two cores and the cores swapped between the two rounds of a pair. The noise (``Noise``): each
forward's heavy-tailed jitter (Student's t, 3 degrees of freedom), bursts that slow a few consecutive forwards of
one side (×1.1–×2), each core's own speed (cancels within a pair), and each process's own speed even for
identical code (a fixed offset per process, which only the gate's several processes per side average out). The rule sees the streams exactly as the gate
feeds it (``rule.decide_stream``)::

    python -m dinat_timm.gate.simulation 5000
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, DEFAULT_SLOWDOWN, decide_stream
from .sides import CLEANUP_S, PROCESSES, pairing


@dataclass(frozen=True)
class Noise:
    jitter: float  # scale of the t(3) jitter of one forward's log CPU time
    burst_rate: float  # chance that a burst starts at a round (each side separately)
    burst_rounds: float  # mean length of a burst, in rounds
    burst_factor: Tuple[float, float]  # a burst multiplies a forward's time by U(lo, hi)
    core_speed: float  # each core's own log speed ~ U(-core_speed, core_speed)
    process_offset: float  # s.d. of each side's fixed log offset (processes of identical code differ)
    pair_seconds: float  # one pair of rounds, both models, wall clock
    startup_seconds: float  # the worktree and both sides' start-up


# Measured here (docs/ci-speed-gate.md): eight gate runs of unchanged code spending a 70 s budget, four on the idle
# 2-core machine and four beside two busy processes at nice 19 on the same cores. Quiet: the pair samples' median
# absolute deviation 0.21-0.28%, 1.5% of them over 3% from the median, 0.2% over 10%, the runs' offsets (their
# two processes' own speeds) -0.47% to +0.64%, 0.5 s a pair, 3.5-4.6 s of start-up. Beside the neighbours: 0.41-1.05%,
# 4% over 3%, 0.2% over 10%, offsets -1.22% to +0.05%, 0.8 s a pair, 5.5 s of start-up. The parameters below give
# those figures in simulated streams; ``NOISE`` is the neighbours' made about twice as bad.
MEASURED_QUIET = Noise(jitter=0.0022, burst_rate=0.005, burst_rounds=1.5, burst_factor=(1.02, 1.2), core_speed=0.02,
                       process_offset=0.0035, pair_seconds=0.5, startup_seconds=5.0)
MEASURED_NEIGHBOURS = Noise(jitter=0.006, burst_rate=0.01, burst_rounds=1.5, burst_factor=(1.02, 1.2), core_speed=0.02,
                            process_offset=0.0045, pair_seconds=0.8, startup_seconds=6.0)
NOISE = Noise(jitter=0.012, burst_rate=0.03, burst_rounds=2.0, burst_factor=(1.05, 1.5), core_speed=0.03,
              process_offset=0.007, pair_seconds=1.0, startup_seconds=20.0)
CONDITIONS = {"quiet (as measured)": MEASURED_QUIET, "beside neighbours (as measured)": MEASURED_NEIGHBOURS,
              "worse than measured (the default)": NOISE,
              "a busy machine (jitter 3%, bursts at 10%)": replace(NOISE, jitter=0.03, burst_rate=0.10)}


def max_pairs(noise: Noise, budget_s: float = DEFAULT_BUDGET_S) -> int:
    """How many pairs of rounds the budget holds after start-up and cleanup."""
    return max(0, int((budget_s - CLEANUP_S - noise.startup_seconds) / noise.pair_seconds))


def _side(rng: np.random.Generator, rounds: int, noise: Noise) -> np.ndarray:
    """One side's log-time noise over ``rounds`` rounds: jitter and bursts."""
    log_t = noise.jitter * rng.standard_t(3, size=rounds)
    for start in np.flatnonzero(rng.random(rounds) < noise.burst_rate):
        length = int(rng.geometric(1 / noise.burst_rounds))
        log_t[start:start + length] += math.log(rng.uniform(*noise.burst_factor))
    return log_t


def stream(rng: np.random.Generator, slowdown: float, models: Sequence[str], pairs: int,
           noise: Noise = NOISE, processes: int = PROCESSES) -> Iterator[Dict[str, tuple]]:
    """Pairs {model: (a1, b1, a2, b2)} as the gate takes them, B slowed by ``slowdown``; ``processes`` per side,
    each with its own speed, paired in turn as the gate pairs them."""
    rounds = 2 * pairs
    core = rng.uniform(-noise.core_speed, noise.core_speed, size=2)  # log speed of core 0 and core 1
    a_core = np.where(np.arange(rounds) % 2 == 0, core[0], core[1])  # A on core 0, then on core 1
    b_core = np.where(np.arange(rounds) % 2 == 0, core[1], core[0])
    which = np.array([pairing(k // 2, processes) for k in range(rounds)]).reshape(rounds, 2)
    per_model = {}
    for m in models:
        base = math.log(rng.uniform(0.05, 0.2))
        offsets = rng.normal(0, noise.process_offset, size=(2, processes))  # each process's own speed
        a = np.exp(base + offsets[0][which[:, 0]] + a_core + _side(rng, rounds, noise))
        b = np.exp(base + offsets[1][which[:, 1]] + math.log1p(slowdown) + b_core + _side(rng, rounds, noise))
        per_model[m] = (a, b)
    for p in range(pairs):
        yield {m: (a[2 * p], b[2 * p], a[2 * p + 1], b[2 * p + 1]) for m, (a, b) in per_model.items()}


def error_rates(runs: int, seed: int = 0, noise: Noise = NOISE, slowdown_caught: float = DEFAULT_SLOWDOWN,
                true_slowdown: float = None, budget_s: float = DEFAULT_BUDGET_S,
                models: Sequence[str] = DEFAULT_MODELS) -> Dict[str, float]:
    """Over ``runs`` simulated gate runs each: at no change, false alarms ('regressed': exit 1) and 'cannot
    judge' (exit 2); at ``true_slowdown`` (default: the slowdown caught), misses ('clear': exit 0), 'cannot
    judge', and the power (the share caught); the median pairs used at each."""
    true_slowdown = slowdown_caught if true_slowdown is None else true_slowdown
    rng = np.random.default_rng(seed)
    limit = max_pairs(noise, budget_s)
    verdicts = {0.0: [], true_slowdown: []}
    used = {0.0: [], true_slowdown: []}
    for _ in range(runs):
        for change in (0.0, true_slowdown):
            verdict, _, n = decide_stream(stream(rng, change, models, limit, noise), models, slowdown_caught,
                                          max_pairs=limit)
            verdicts[change].append(verdict)
            used[change].append(n)
    at_0, at_s = verdicts[0.0], verdicts[true_slowdown]
    return dict(
        runs=runs, max_pairs=limit, slowdown_caught=slowdown_caught, true_slowdown=true_slowdown,
        false_alarm=at_0.count("regressed") / runs, undecided_at_0=at_0.count("undecided") / runs,
        miss=at_s.count("clear") / runs, undecided_at_slowdown=at_s.count("undecided") / runs,
        power=at_s.count("regressed") / runs,
        median_pairs_at_0=float(np.median(used[0.0])), median_pairs_at_slowdown=float(np.median(used[true_slowdown])),
        median_seconds_at_0=noise.startup_seconds + float(np.median(used[0.0])) * noise.pair_seconds)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for name, noise in CONDITIONS.items():
        for caught, true in ((DEFAULT_SLOWDOWN, DEFAULT_SLOWDOWN), (DEFAULT_SLOWDOWN, 0.15), (0.02, 0.02)):
            rates = error_rates(n, noise=noise, slowdown_caught=caught, true_slowdown=true)
            print(f"{name}: catch {caught:.0%}, true {true:.0%}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rates.items()
                if k not in ("runs", "slowdown_caught", "true_slowdown")))
