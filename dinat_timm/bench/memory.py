"""Peak memory of one step, measured one way by every suite: the bytes of tensors alive at the step's
peak beyond those alive before it (activations, gradients, workspaces; not the weights, not the
optimizer state), the same meaning on every device.

CUDA: the caching allocator's counters of the device the step runs on.
CPU: there is no counter, and the kernel's resident set (``VmHWM``) is not one either: it counts
allocator slack and pages an earlier step freed but glibc kept, so it moved with what ran before
(dinat_tiny read 18.0 MB, then 22.7 MB in a second identical run, and 42.3 MB for nat_tiny, whose
tensors have the same shapes). PyTorch's profiler records every allocation and free of the CPU
allocator (``profile_memory=True``); replaying them in order gives the peak, the same on every run
and in any process. The profiler reports a free only for a block it saw allocated, and a training
step frees the previous step's gradients, so the step runs twice under it and only the second run is
replayed. Memory that libraries allocate themselves (oneDNN scratch pads, OpenMP) is not a tensor
and is not counted; the resident-set peak, which includes it, is kept as a second figure where a
step runs in a fresh process (``rss_peak_mb``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from .steps import StepConfig, build_model, inference_step, train_step

from ..results.validate import EXACT_MEMORY_METHODS

_MB = 1024 * 1024
CPU_METHOD, CUDA_METHOD = EXACT_MEMORY_METHODS
_MEASURED = "dinat_timm: measured step"
_BLOCK = "dinat_timm block: "


@dataclass(frozen=True)
class PeakMemory:
    """A step's peak: bytes beyond what was alive before it, how they were measured, and (on request)
    which block allocated the bytes alive at the peak (``by_block``; they add up to ``bytes``)."""

    bytes: int
    method: str
    by_block: Optional[Dict[str, int]] = None

    @property
    def mb(self) -> float:
        return self.bytes / _MB


def step_peak_memory(step: Callable[[], None], device, model: Optional[torch.nn.Module] = None) -> PeakMemory:
    """The peak of one ``step`` on ``device`` (run it once before: lazy initialisation is not the step).
    With ``model``, the bytes alive at the peak are attributed to its blocks (CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_peak(step, device)
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on cpu or cuda devices, not {device.type!r}")
    return _replayed_peak(step, model)


def _cuda_peak(step: Callable[[], None], device: torch.device) -> PeakMemory:
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return PeakMemory(torch.cuda.max_memory_allocated(device) - before, CUDA_METHOD)


# -- CPU: the allocator's events, replayed ------------------------------------------------------------------

def _replayed_peak(step: Callable[[], None], model: Optional[torch.nn.Module]) -> PeakMemory:
    from torch.profiler import ProfilerActivity, profile, record_function

    with _labelled_blocks(model), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()  # its allocations are known to the profiler, so the measured run's frees of them are reported
        with record_function(_MEASURED):
            step()
    mark, events = _allocations_of_measured_step(prof.profiler.kineto_results.experimental_event_tree())
    peak, at = 0, -1
    running = 0
    for i, (_, size, _) in enumerate(events):
        running += size
        if running > peak:
            peak, at = running, i
    by_block = _alive_by_block(events[: at + 1], mark) if model is not None else None
    return PeakMemory(peak, CPU_METHOD, by_block)


def _walk(roots) -> Iterator:
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _allocations_of_measured_step(roots) -> Tuple[object, List[Tuple[int, int, object]]]:
    """The measured run's mark, and (time, signed bytes, event) of every CPU allocation and free inside it, in order."""
    from torch._C._profiler import _EventType

    nodes = list(_walk(roots))
    marks = [n for n in nodes if n.name == _MEASURED]
    if len(marks) != 1:
        raise RuntimeError(f"the profiler recorded {len(marks)} measured steps, not 1")
    start, end = marks[0].start_time_ns, marks[0].end_time_ns
    events = [(n.start_time_ns, n.extra_fields.alloc_size, n) for n in nodes
              if n.tag == _EventType.Allocation and start <= n.start_time_ns <= end
              and n.extra_fields.device.type == "cpu"]
    events.sort(key=lambda e: e[0])
    return marks[0], events


def _alive_by_block(events, mark) -> Dict[str, int]:
    """Bytes alive at the peak (the last of ``events``), by who allocated them; blocks freed before
    the step started count as a negative line, so the lines add up to the peak. ``mark``: the measured
    run's profiler node, under which its forward and backward ops ran."""
    alive: Dict[int, Tuple[int, object]] = {}
    freed_from_before = 0
    for _, size, node in events:
        ptr = node.extra_fields.ptr
        if size > 0:
            alive[ptr] = (size, node)
        elif ptr in alive:
            del alive[ptr]
        else:
            freed_from_before += size
    forward_owner = _forward_owners(mark)
    lines: Dict[str, int] = defaultdict(int)
    for size, node in alive.values():
        lines[_owner(node, forward_owner)] += size
    if freed_from_before:
        lines["(freed: allocated before the step)"] += freed_from_before
    return dict(sorted(lines.items(), key=lambda kv: -kv[1]))


def _ancestors(node) -> Iterator:
    while node is not None:
        yield node
        node = node.parent


def _forward_owners(mark) -> Dict[int, str]:
    """Forward ops' sequence numbers -> the block they ran in: a backward op carries its forward op's
    number, so the gradient memory it allocates is put on the same block."""
    owners: Dict[int, str] = {}
    for node in _walk([mark]):
        seq = _sequence_number(node)
        if seq >= 0 and not node.name.startswith("autograd::"):
            block = _block_of(node)
            if block:
                owners.setdefault(seq, block)
    return owners


def _block_of(node) -> Optional[str]:
    for a in _ancestors(node):
        if a.name.startswith(_BLOCK):
            return a.name[len(_BLOCK):]
    return None


def _sequence_number(node) -> int:
    seq = getattr(node.extra_fields, "sequence_number", -1)
    return -1 if seq is None else seq


def _owner(node, forward_owner: Dict[int, str]) -> str:
    block = _block_of(node)
    if block:
        return block
    for a in _ancestors(node):
        if a.name.startswith("autograd::engine::evaluate_function"):
            # the engine's op, or the backward op it runs, carries the forward op's sequence number
            seq = max([_sequence_number(a)] + [_sequence_number(c) for c in a.children])
            owner = forward_owner.get(seq)
            return f"{owner} (backward)" if owner else "(backward, outside the blocks)"
        if a.name.startswith("Optimizer."):
            return "(optimizer)"
    return "(outside the blocks)"


def block_names(model: torch.nn.Module) -> List[str]:
    """The modules a breakdown names: the model's children and every numbered element of a module list
    or sequence (stages, blocks, layers); an allocation goes to the innermost one it ran in."""
    names = [n for n, _ in model.named_children()]
    names += [n for n, _ in model.named_modules() if re.search(r"\.\d+$", n)]
    return list(dict.fromkeys(names))


@contextmanager
def _labelled_blocks(model: Optional[torch.nn.Module]):
    if model is None:
        yield
        return
    from torch.profiler import record_function

    open_labels: Dict[int, List] = defaultdict(list)
    handles = []
    modules = dict(model.named_modules())

    def enter(name):
        def hook(module, args):
            label = record_function(_BLOCK + name)
            label.__enter__()
            open_labels[id(module)].append(label)
        return hook

    def leave(module, args, output):
        open_labels[id(module)].pop().__exit__(None, None, None)

    for name in block_names(model):
        module = modules[name]
        handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# -- a step in a fresh process: the memory suite's, which also reads the resident set ------------------------

def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_peak_mb(step: Callable[[], None]) -> Optional[float]:
    """The growth of the kernel's resident-set high-water mark over one step (Linux), or None."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        before = status_kb("VmRSS")
    except OSError:
        return None
    step()
    return (status_kb("VmHWM") - before) / 1024


def measure_step(cfg: StepConfig, mode: str, breakdown: bool = False) -> Dict:
    """``mode``'s step of ``cfg`` measured here: the peak (and its breakdown), and on CPU the resident set."""
    import dinat_timm  # noqa: F401  (registers the models in a worker)

    model = build_model(cfg)
    step = (train_step if mode == "train" else inference_step)(cfg, model)
    step()  # warm-up: lazy inits, optimizer state, layout caches
    rss = None if cfg.device.startswith("cuda") else _rss_peak_mb(step)
    peak = step_peak_memory(step, cfg.device, model if breakdown else None)
    return dict(peak_mem_mb=peak.mb, method=peak.method, rss_peak_mb=rss, by_block=peak.by_block)


def peak_memory(cfg: StepConfig, mode: str, breakdown: bool = False, timeout: float = 900) -> Dict:
    """``measure_step`` of a ``mode`` ("infer" or "train") step; on CPU in a fresh worker process, so a
    step that runs out of memory kills the worker, not the run."""
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if cfg.device.startswith("cuda"):
        return measure_step(cfg, mode, breakdown)
    cmd = [sys.executable, "-m", "dinat_timm.bench.memory", "--mode", mode, "--config", json.dumps(asdict(cfg)),
           "--threads", str(torch.get_num_threads())]  # kernels allocate per thread: measure what this process would
    if breakdown:
        cmd.append("--breakdown")
    # fixed glibc thresholds: large blocks are mmap'd and returned on free, so the resident-set figure
    # reads the step's own growth (the allocator-event figure does not depend on them)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        killed = proc.returncode in (-9, 137)
        raise MemoryError(f"worker ran out of memory (killed, rc={proc.returncode})") if killed else RuntimeError(
            f"memory worker failed (rc={proc.returncode}): {' | '.join(tail)}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["infer", "train"], required=True)
    parser.add_argument("--config", required=True, help="StepConfig as JSON")
    parser.add_argument("--breakdown", action="store_true", help="attribute the bytes alive at the peak to blocks")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = StepConfig(**json.loads(args.config))
    print(json.dumps(measure_step(cfg, args.mode, args.breakdown)))


if __name__ == "__main__":
    main()
