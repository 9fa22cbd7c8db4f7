"""The noise guard (``dinat_timm.bench.guard``): its rules, and the load meter against a real busy process."""
import subprocess
import sys
import time

import pytest

from dinat_timm.bench import guard

HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def test_guard_rules():
    clean = guard.LoadReading(outside_load=0.02, steal=0.0, seconds=5.0)
    busy = guard.LoadReading(outside_load=0.6, steal=0.0, seconds=5.0)
    brief = guard.LoadReading(outside_load=0.6, steal=0.0, seconds=0.05)  # a few jiffies: not judged on load
    assert guard.noise_flag(clean, 0.05) == "" and guard.noise_flag(brief, 0.05) == ""
    assert guard.noise_flag(busy, 0.05).startswith("noisy: outside CPU load 0.60")
    assert "round spread" in guard.noise_flag(clean, 0.5)
    assert guard.spread([1.0, 1.0, 1.0, 1.0]) == 0 and guard.spread([1.0, 2.0]) is None
    assert guard.spread([1.0, 1.1, 1.2, 3.0, 3.1]) > guard.SPREAD_LIMIT
    assert guard.reference_flag(5.0, [13.0, 13.6]).startswith("suspect: reference model")
    assert guard.reference_flag(12.0, [13.0, 13.6]) == "" and guard.reference_flag(12.0, []) == ""


def test_load_meter_sees_another_process_burning_cpu():
    hog = subprocess.Popen([sys.executable, "-c", HOG.format(seconds=10)])
    try:
        time.sleep(0.5)
        with guard.LoadMeter() as meter:
            time.sleep(2.0)  # this process idles; the hog takes a whole core
    finally:
        hog.kill()
    if meter.reading.outside_load is None:
        pytest.skip("no /proc/stat on this platform")
    assert meter.reading.outside_load > 1.0 / guard._cpu_count() * 0.6
