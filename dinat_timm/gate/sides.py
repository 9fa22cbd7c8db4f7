"""Running the two sides: the base commit checked out into a temporary git worktree, and two worker
processes (``worker.py`` beside this file) importing ``dinat_timm`` from the base tree and from the
working tree, nothing installed, timed in alternating rounds and fed to the rule (``rule.py``).

This is the design of asv's ``continuous`` and of duet benchmarking (Bulej et al., ICPE'20): times taken
side by side on the same machine within a second are compared, so the machine's speed and its drift cancel.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .rule import DEFAULT_BUDGET_S, DEFAULT_MODELS, DEFAULT_SLOWDOWN, Judgement, decide_stream, in_quad_order

# Started by its path, not as ``-m dinat_timm.gate.worker``: the worker must import the dinat_timm of the tree
# it times (the base commit's, which need not have this file), so it cannot itself live in that import.
WORKER = Path(__file__).with_name("worker.py")


class GateError(RuntimeError):
    """The gate cannot judge: the base cannot be checked out or built, a worker failed (exit 2)."""


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
