"""Running the two sides: the base commit checked out into a temporary git worktree, and two worker processes
(``worker.py`` beside this file) importing ``dinat_timm`` from the base tree and from the working tree, nothing
installed, timed at the same moment on two cores and fed to the rule (``rule.py``).

This is duet benchmarking (Bulej et al., ICPE'20), after asv's ``continuous``: the two sides are timed side by side
on the same machine, so its speed and drift cancel; each process's CPU time is the figure, which neighbours that
take a core from it do not add to; the sides swap cores every round, so a core's own speed cancels too.

Everything runs against one deadline, the whole budget: the worktree, both sides' start-up, the rounds, and every
answer a side owes (a side that does not answer in time is stopped and named).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, DEFAULT_SLOWDOWN, MIN_PAIRS, Judgement, decide_stream

# Started by its path, not as ``-m dinat_timm.gate.worker``: the worker must import the dinat_timm of the tree
# it times (the base commit's, which need not have this file), so it cannot itself live in that import.
WORKER = Path(__file__).with_name("worker.py")
CLEANUP_S = 8.0  # kept from the budget for stopping the sides and removing the worktree
# Large buffers on fresh pages at every allocation: a process's memory placement would otherwise give it a
# speed of its own (measured here: ±2.5% between processes of identical code, ±0.6% with this). What remains of
# a process's own speed is averaged over several processes per side (``PROCESSES``), every pairing in turn.
PROCESSES = 2
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


class GateError(RuntimeError):
    """The gate cannot judge: the base cannot be checked out or built, a side failed or did not answer (exit 2).
    ``reason``: ``base`` (the base side or its checkout), ``candidate`` (the working tree's side), or ``time``."""

    def __init__(self, message: str, reason: str = "base"):
        super().__init__(message)
        self.reason = reason


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


class Worktree:
    """The base commit checked out beside the repository, hooks off (a failing post-checkout hook must not leave
    a half-made worktree); removed, and git's record of it pruned, however the gate ends."""

    def __init__(self, root: Path, commit: str):
        self.root, self.commit = root, commit
        self.tmp = Path(tempfile.mkdtemp(prefix="dinat-gate-"))
        self.path = self.tmp / "base"

    def __enter__(self) -> Path:
        try:
            _git(self.root, "-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet", str(self.path),
                 self.commit)
        except BaseException:
            self.remove()
            raise
        return self.path

    def remove(self) -> None:
        subprocess.run(["git", "-C", str(self.root), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        subprocess.run(["git", "-C", str(self.root), "worktree", "prune"], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.tmp)], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.remove()


class NoAnswer(GateError):
    """A side did not answer before its deadline."""


class _Worker:
    """One side's process: its answers on a pipe of their own, its output in a log file (never a pipe nobody
    reads), every answer awaited with a deadline."""

    def __init__(self, label: str, tree: Path, models: Sequence[str], batch_size: int, img_size: int):
        self.label = label
        self.log = tempfile.TemporaryFile(mode="w+")
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PYTHONPATH=str(tree), **ENV)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--tree", str(tree), "--models", ",".join(models),
             "--batch-size", str(batch_size), "--img-size", str(img_size), "--answer-fd", str(write_fd)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, text=True, env=env, cwd=str(tree),
            pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        self.answers = os.fdopen(read_fd, "r")

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it has ended: the read below says how

    def read(self, deadline: float, waiting_for: str) -> dict:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([self.answers], [], [], max(0.0, left))
        if not ready:
            raise NoAnswer(f"the {self.label} side did not answer {waiting_for} within {max(0.0, left):.0f} s "
                           "(a forward that never returns?); it was stopped", self._blame())
        line = self.answers.readline()
        if not line:
            raise GateError(f"the {self.label} side failed to start or run: {self._last_words()}", self._blame())
        try:
            return json.loads(line)
        except ValueError:
            raise GateError(f"the {self.label} side answered {line.strip()[:80]!r}, not the gate's protocol",
                            self._blame()) from None

    def _blame(self) -> str:
        return "base" if self.label == "base" else "candidate"

    def _last_words(self) -> str:
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        self.log.seek(0)
        lines = [line for line in self.log.read().strip().splitlines() if line.strip()]
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (the out-of-memory killer?)" if -code == signal.SIGKILL else ""
            return f"killed by {name}{hint}" + (f"; its last line: {lines[-1]}" if lines else "")
        return lines[-1] if lines else f"exit status {code}, no output"

    def ask_to_quit(self) -> None:
        self.send("quit")
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def close(self, by: float) -> None:
        """Wait for it to end until ``by`` (monotonic), else kill its whole process group."""
        try:
            self.proc.wait(timeout=max(0.0, by - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.answers.close()
        self.log.close()


def close_all(workers: Sequence[_Worker], grace_s: float = 3.0) -> None:
    """Every side asked to quit at once, then given ``grace_s`` together before the stragglers are killed."""
    for w in workers:
        w.ask_to_quit()
    by = time.monotonic() + grace_s
    for w in workers:
        w.close(by)


@dataclass
class GateResult:
    verdict: str  # regressed | clear | undecided
    base: str
    base_commit: str
    why_base: str
    slowdown: float
    judgements: List[Judgement]
    pairs: int
    seconds: float
    startup_seconds: float = 0.0
    cores: Tuple[int, ...] = ()
    raw: List[dict] = field(default_factory=list)  # every pair's CPU seconds, {model: [a1, b1, a2, b2]}

    @property
    def exit_code(self) -> int:
        return {"clear": 0, "regressed": 1}.get(self.verdict, 2)


def _two_cores() -> Tuple[int, ...]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return tuple(cores[:2])


def pairing(k: int, processes: int) -> Tuple[int, int]:
    """Which process of each side times pair ``k``: every (A, B) pairing in turn, each as often."""
    return k % processes, (k // processes) % processes


def _pairs(sides: Tuple[List[_Worker], List[_Worker]], models: Sequence[str], deadline: float,
           cores: Tuple[int, ...]):
    """Pairs of rounds until the deadline: with two cores, a process of A and one of B at the same moment, A on
    the first core and then on the second; with one, A then B then B then A. Yields {model: (a1, b1, a2, b2)}
    (CPU seconds)."""
    step_s, done = None, 0
    while True:
        i, j = pairing(done, len(sides[0]))
        a, b = sides[0][i], sides[1][j]
        now = time.monotonic()
        if step_s is not None and now + 2.5 * step_s > deadline:
            return  # another pair would not finish in the budget
        answer_by = min(deadline, now + max(60.0, 20 * (step_s or 3.0)))
        started = time.monotonic()
        rounds = []
        try:
            for swap in (False, True):
                if len(cores) == 2:
                    a.send(f"run {cores[swap]}")
                    b.send(f"run {cores[not swap]}")
                    ta, tb = a.read(answer_by, "a round"), b.read(answer_by, "a round")
                else:
                    first, second = (b, a) if swap else (a, b)
                    first.send("run")
                    t1 = first.read(answer_by, "a round")
                    second.send("run")
                    t2 = second.read(answer_by, "a round")
                    ta, tb = (t2, t1) if swap else (t1, t2)
                rounds.append((ta["cpu"], tb["cpu"]))
        except NoAnswer:
            if answer_by >= deadline and done >= MIN_PAIRS:
                return  # the budget ended during a pair: judge the pairs that finished
            raise
        done += 1
        step_s = (time.monotonic() - started) / 2
        (a1, b1), (a2, b2) = rounds
        yield {m: (a1[m], b1[m], a2[m], b2[m]) for m in models}


def _reporting(pairs, progress, raw):
    for i, pair in enumerate(pairs, 1):
        raw.append({m: list(t) for m, t in pair.items()})
        if progress is not None and i % 20 == 0:
            progress(i)
        yield pair


def checkout_root(where: Path) -> Path:
    """The top of the git checkout ``where`` is in (the gate may be started from any of its folders)."""
    proc = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise GateError(f"{where.resolve()} is not inside a git checkout: the gate compares two commits")
    return Path(proc.stdout.strip()).resolve()


def resolve_base(root: Path, base: Optional[str]) -> Tuple[str, str, str]:
    """(ref, commit, why the ref): the base asked for, or the natural one, as a commit of ``root``."""
    why = "as given"
    if base is None:
        base, why = default_base(root)
    try:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    except GateError:
        raise GateError(f"the base {base!r} is not a commit of {root} (a shallow clone, or a ref not fetched?): "
                        "give --base a commit that is here") from None
    return base, commit, why


def run_gate(root: Path, base: Optional[str] = None, models: Sequence[str] = DEFAULT_MODELS,
             slowdown: float = DEFAULT_SLOWDOWN, budget_s: float = DEFAULT_BUDGET_S, batch_size: int = 1,
             img_size: int = 224, progress=None, stop_early: bool = True, processes: int = PROCESSES,
             already_s: float = 0.0) -> GateResult:
    """Time the base commit against the working tree of ``root`` and judge, all within ``budget_s`` seconds of
    wall clock, ``already_s`` of which were spent before the call (the command's own start); see the module's
    docstring. ``stop_early=False`` spends the whole budget (to record the machine's noise in ``raw``)."""
    started = time.monotonic() - already_s
    deadline = started + budget_s - CLEANUP_S
    root = checkout_root(Path(root))
    base, commit, why = resolve_base(root, base)
    cores = _two_cores()
    with Worktree(root, commit) as tree:
        workers: List[_Worker] = []
        try:
            for _ in range(processes):
                workers += [_Worker("base", tree, models, batch_size, img_size),
                            _Worker("working-tree", root, models, batch_size, img_size)]
            for w in workers:
                w.read(deadline, "that it is ready")  # all start at once; the budget's deadline bounds the wait
            startup = time.monotonic() - started
            if deadline - time.monotonic() < 10:
                raise GateError(f"the two sides took {startup:.0f} s to start, leaving no time to measure in the "
                                f"{budget_s:.0f} s budget: give --budget more seconds", "time")
            raw: List[dict] = []
            pairs = _pairs((workers[0::2], workers[1::2]), models, deadline, cores)
            verdict, judgements, used = decide_stream(_reporting(pairs, progress, raw), models, slowdown,
                                                      stop_early=stop_early)
        finally:
            close_all(workers)
    if used < MIN_PAIRS:
        raise GateError(f"only {used} pair(s) of rounds fit in the {budget_s:.0f} s budget after {startup:.0f} s of "
                        f"start-up ({MIN_PAIRS} are needed): give --budget more seconds", "time")
    return GateResult(verdict, base, commit[:12], why, slowdown, judgements, used, time.monotonic() - started,
                      startup, cores, raw)
