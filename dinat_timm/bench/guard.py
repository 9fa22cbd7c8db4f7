"""Whether a measurement can be trusted: outside CPU load while it ran, the spread of its timed
rounds, and results that cannot be true.

Many small kernels (neighborhood attention on a CPU is many) suffer most when another process
takes a core: on a 2-core machine with one busy neighbour, DiNAT rows came out 6–9× too slow while
Swin-T lost 30%, so even same-run ratios moved 5×. Rows measured like that carry a ``flag``; boards
and the plot leave flagged rows out and ``compare`` refuses them.
"""
from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Optional, Sequence

# Thresholds. Outside load: CPU time of other processes, as a fraction of all cores, while the
# benchmark ran (one busy neighbour on 2 cores reads ~0.5; an idle machine ~0.0–0.05). Spread:
# interquartile range of the timed rounds over their median (idle runs here: 0.01–0.10).
OUTSIDE_LOAD_LIMIT = 0.25
SPREAD_LIMIT = 0.25
# A reference model (Swin-T…) this many times slower than its committed rows on the same device
# and settings means the machine, not the code, changed.
REFERENCE_SLOWDOWN_LIMIT = 2.0
# /proc/stat counts in jiffies (10 ms): over a shorter window one stray tick reads as heavy load,
# so shorter benchmarks record the load but only their round spread can flag them.
MIN_LOAD_WINDOW_S = 1.0


def _cpu_jiffies():
    """(busy, steal) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


def _own_cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the memory suite's workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _cpu_count() -> int:
    try:
        with open("/proc/stat") as f:
            return max(1, sum(1 for line in f if line.startswith("cpu") and line[3:4].isdigit()))
    except OSError:
        return os.cpu_count() or 1


@dataclass
class LoadReading:
    outside_load: Optional[float]  # other processes' CPU time / (wall time × cores); None off Linux
    steal: Optional[float]  # hypervisor steal, same units
    seconds: float


class LoadMeter:
    """``with LoadMeter() as meter: …`` then ``meter.reading``: how busy the rest of the machine was."""

    def __enter__(self):
        self._start = (time.perf_counter(), _cpu_jiffies(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc):
        wall0, jiffies0, own0 = self._start
        wall, jiffies, own = time.perf_counter() - wall0, _cpu_jiffies(), _own_cpu_seconds() - own0
        if jiffies0 is None or jiffies is None or wall <= 0:
            self.reading = LoadReading(None, None, wall)
            return False
        hz, cores = os.sysconf("SC_CLK_TCK"), _cpu_count()
        busy = (jiffies[0] - jiffies0[0]) / hz
        steal = (jiffies[1] - jiffies0[1]) / hz
        self.reading = LoadReading(max(0.0, busy - own) / (wall * cores), steal / (wall * cores), wall)
        return False


def spread(times: Sequence[float]) -> Optional[float]:
    """Interquartile range over median of the timed rounds (None for fewer than 3)."""
    if len(times) < 3:
        return None
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return (q3 - q1) / median if median > 0 else None


def noise_flag(reading: Optional[LoadReading], round_spread: Optional[float]) -> str:
    """'' when the measurement looks clean, else why it is not (the row's ``flag``)."""
    reasons = []
    if (reading is not None and reading.outside_load is not None and reading.seconds >= MIN_LOAD_WINDOW_S
            and reading.outside_load > OUTSIDE_LOAD_LIMIT):
        reasons.append(f"outside CPU load {reading.outside_load:.2f} > {OUTSIDE_LOAD_LIMIT}")
    if round_spread is not None and round_spread > SPREAD_LIMIT:
        reasons.append(f"round spread (IQR/median) {round_spread:.2f} > {SPREAD_LIMIT}")
    return "noisy: " + "; ".join(reasons) if reasons else ""


def reference_flag(samples_per_sec: float, committed: Sequence[float]) -> str:
    """A yardstick model far slower (or faster) than its committed rows on the same device and settings."""
    if not committed:
        return ""
    usual = statistics.median(committed)
    ratio = usual / samples_per_sec if samples_per_sec > 0 else float("inf")
    if ratio > REFERENCE_SLOWDOWN_LIMIT or ratio < 1 / REFERENCE_SLOWDOWN_LIMIT:
        return (f"suspect: reference model at {samples_per_sec:.3g} img/s against {usual:.3g} in the committed rows "
                f"for this device and settings ({ratio:.1f}x)")
    return ""
