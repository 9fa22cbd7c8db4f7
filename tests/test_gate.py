"""The CI speed gate: its decision rule (order-statistic interval of the median log slowdown, judged
against half the slowdown to catch) proven on simulated streams with this machine's noise, and the
command run for real on two trees (the working tree and a commit made slower on purpose)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dinat_timm.gate.rule import (CONFIDENCE, MIN_QUADS, Judgement, boundary_for, decide_stream,
                                     in_quad_order, order_statistic_rank, quad_sample)
from dinat_timm.gate.simulation import NOISE, error_rates, stream


ROOT = Path(__file__).resolve().parents[1]


def test_the_interval_is_the_sign_test_s():
    """[x_(k), x_(n+1-k)] covers the median with at least CONFIDENCE: P(Binomial(n, 1/2) < k) <= (1-c)/2,
    and k is the largest such rank (checked against the binomial tail computed here independently)."""
    for n in (8, MIN_QUADS, 11, 20, 37, 100):
        k = order_statistic_rank(n)
        tail = lambda j: sum(math.comb(n, i) for i in range(j)) / 2 ** n  # noqa: E731  P(X < j)
        assert tail(k) <= (1 - CONFIDENCE) / 2 < tail(k + 1), n
    assert order_statistic_rank(7) is None  # too few for the confidence: no interval, no verdict


def test_a_verdict_needs_the_whole_interval_on_one_side_of_half_the_slowdown():
    boundary = boundary_for(0.15)
    assert math.exp(boundary) == pytest.approx(math.sqrt(1.15))
    clear, regressed, wide = Judgement("a"), Judgement("b"), Judgement("c")
    for i in range(12):
        clear.add(0.01 * (i - 6) / 6)
        regressed.add(math.log(1.15) + 0.01 * (i - 6) / 6)
        wide.add(0.3 * (i - 6) / 6)
    assert (clear.judge(boundary), regressed.judge(boundary), wide.judge(boundary)) == ("clear", "regressed", "undecided")
    assert regressed.estimate == pytest.approx(1.15, rel=0.01) and regressed.low > math.exp(boundary)


def _quads(times, order=None):
    """Rounds in time order (a list of (A, B) seconds per round) as the gate takes them: A B B A, B A A B, …"""
    quads = []
    for q in range(len(times) // 4):
        b_first = q % 2 == 1
        rounds = [times[4 * q + i][0 if side == "A" else 1] for i, side in enumerate("BAAB" if b_first else "ABBA")]
        quads.append({"m": in_quad_order(*rounds, b_first)})
    return quads


def test_a_burst_on_a_few_rounds_does_not_move_the_verdict():
    """Four of 30 quads hit by a ×3 burst on both of the candidate's rounds: still clear, the estimate
    untouched (a mean of the ratios would read +30%)."""
    times = [(1.0, 1.0)] * 120
    for q in (3, 4, 11, 20):
        for i in range(4 * q, 4 * q + 4):
            times[i] = (1.0, 3.0)
    verdict, (j,), _ = decide_stream(iter(_quads(times)), ["m"])
    assert verdict == "clear" and j.estimate == pytest.approx(1.0)


def test_a_drift_does_not_read_as_a_slowdown():
    """The machine slows by 1% a round: quads that alternate which side starts see none."""
    times = [(1.01 ** i, 1.01 ** i) for i in range(4 * 40)]
    verdict, (j,), _ = decide_stream(iter(_quads(times)), ["m"])
    assert verdict == "clear" and j.estimate == pytest.approx(1.0, abs=1e-3)


def test_a_real_slowdown_is_estimated():
    rng = np.random.default_rng(3)
    times = [(t, 1.2 * t * math.exp(rng.normal(0, 0.02))) for t in np.exp(rng.normal(0, 0.02, 4 * 60))]
    verdict, (j,), used = decide_stream(iter(_quads(times)), ["m"])
    assert verdict == "regressed" and j.estimate == pytest.approx(1.2, rel=0.03) and used < 60
    assert j.low > math.exp(boundary_for(0.15))


def test_the_simulated_streams_carry_the_noise_they_claim():
    """The simulator's jitter, bursts and drift are there (so the rates below are earned)."""
    rng = np.random.default_rng(1)
    quads = list(stream(rng, 0.0, ["m"], 400))
    log_ratio = np.array([quad_sample(*q["m"]) for q in quads])
    mad = np.median(np.abs(log_ratio - np.median(log_ratio)))
    assert 0.01 < mad < 0.1
    assert (np.abs(log_ratio) > 0.3).mean() > 0.01  # bursts: a few rounds far off
    slowed = list(stream(np.random.default_rng(1), 0.15, ["m"], 400))
    assert math.exp(np.median([quad_sample(*q["m"]) for q in slowed])) == pytest.approx(1.15, rel=0.04)


@pytest.mark.parametrize("runs", [pytest.param(2000, id="2000-runs"),
                                  pytest.param(20000, id="20000-runs", marks=pytest.mark.full)])
def test_false_alarms_and_misses_are_rare(runs):
    """The rule's error rates over simulated gate runs of the default models and budget: a false alarm
    (exit 1 at 0% change) and a miss (exit 0 at 15%) at most 0.1% each; "cannot judge" (exit 2, a word,
    not a wrong verdict) rare at both."""
    rates = error_rates(runs, seed=runs)
    assert rates["false_alarm"] <= 0.001 and rates["miss"] <= 0.001, rates
    assert rates["undecided_at_0"] <= 0.005 and rates["undecided_at_catch"] <= 0.005, rates


# -- the command, for real ------------------------------------------------------------------------------------


SLOWER = """

def _slowed(forward_features, extra):
    import time

    def slower(self, x):
        start = time.perf_counter()
        out = forward_features(self, x)
        end = time.perf_counter() + extra * (time.perf_counter() - start)
        a = torch.ones(64, 64)
        while time.perf_counter() < end:  # busy compute, not sleep
            a = (a @ a) * 1e-3
        return out

    return slower


HierarchicalNAT.forward_features = _slowed(HierarchicalNAT.forward_features, {extra!r})
"""


def clone_with_slower_hierarchical_models(where: Path, extra: float) -> Path:
    """A clone of this checkout plus one commit that makes the hierarchical models' forward (DiNAT-mini's,
    NAT-mini's) ``extra`` slower by busy compute sized to the measured forward time."""
    clone = where / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    src = clone / "dinat_timm" / "models" / "_hierarchical.py"
    src.write_text(src.read_text() + SLOWER.format(extra=extra))
    env = dict(os.environ, GIT_AUTHOR_NAME="gate test", GIT_AUTHOR_EMAIL="gate@test", GIT_COMMITTER_NAME="gate test",
               GIT_COMMITTER_EMAIL="gate@test")
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", f"{extra:.0%} slower forward"], check=True, env=env)
    return clone


def _gate_in(tree: Path, *args):
    return subprocess.run([sys.executable, "-m", "dinat_timm.gate", "--format", "json", *args],
                          capture_output=True, text=True, cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                          timeout=400)


@pytest.mark.full
def test_the_gate_fails_a_commit_that_makes_the_forward_15_percent_slower_and_passes_its_parent(tmp_path):
    clone = clone_with_slower_hierarchical_models(tmp_path, 0.15)
    slower = _gate_in(clone)  # a clean clone: the base is HEAD~1, this checkout's HEAD
    assert slower.returncode == 1, slower.stderr[-2000:]
    report = json.loads(slower.stdout)
    assert report["verdict"] == "regressed" and report["base_chosen"].startswith("HEAD~1")
    assert any(m["verdict"] == "regressed" and 1.08 < m["time_factor"] < 1.25 for m in report["models"]), report
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "HEAD~1"], check=True)
    same = _gate_in(clone, "--base", "HEAD")
    assert same.returncode == 0, same.stderr[-2000:]
    assert json.loads(same.stdout)["verdict"] == "clear"


def gate_cli(*args):
    """``python -m dinat_timm.gate ARGS`` in this process: what it prints and its exit status."""
    import contextlib
    import io
    import types

    from dinat_timm.gate.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_gate_refuses_bad_options_in_one_line_each(tmp_path):
    result = gate_cli("--slowdown", "150", "--budget", "abc", "--models", ",")
    err = result.stderr
    assert result.returncode == 2 and len(err.strip().splitlines()) == 3
    assert "--slowdown '150'" in err and "--budget 'abc' is not a number" in err and "--models names no model" in err


def test_gate_says_it_cannot_judge_when_the_base_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = gate_cli("--base", "no-such-ref-anywhere", "--budget", "10")
    assert result.returncode == 2 and "CANNOT JUDGE" in result.stderr and "no-such-ref-anywhere" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_gate_cannot_judge_a_base_that_does_not_build(tmp_path):
    """The previous commit fails to import: exit 2 and the base side's own error, in one line."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    src = clone / "dinat_timm" / "models" / "_hierarchical.py"
    good = src.read_text()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    src.write_text(good + "\nraise ImportError('broken on purpose')\n")
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "broken"], check=True, env=env)
    src.write_text(good)
    subprocess.run(["git", "-C", str(clone), "commit", "-qam", "fixed"], check=True, env=env)
    result = subprocess.run([sys.executable, "-m", "dinat_timm.gate", "--base", "HEAD~1"], cwd=clone,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(clone)), timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines == ["gate: CANNOT JUDGE — the base side failed to start or run: "
                                                "ImportError: broken on purpose"], result.stderr
    assert subprocess.run(["git", "-C", str(clone), "worktree", "list"], capture_output=True, text=True).stdout.count("\n") == 1
