"""Peak memory of one inference or training step.

GPU: ``torch.cuda.max_memory_allocated`` around the step, after a reset of the peak counter.
CPU: there is no allocator counter, so the step runs in a fresh worker process (no caches or
fragmentation left by earlier models, glibc told to hand freed blocks back) that resets the
kernel's peak-RSS mark (``VmHWM``, via ``/proc/self/clear_refs``) after building the model and
inputs and one warm-up step, then reads it after the measured step: the reported figure is that
peak minus the RSS before the step, i.e. the activation, gradient and workspace memory the step
itself needed (weights and optimizer state excluded), as on GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict

import torch

from .steps import StepConfig, inference_step, train_step

_MB = 1024 * 1024


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_here(cfg: StepConfig, mode: str) -> float:
    import dinat_timm  # noqa: F401  (registers the models in the worker)

    step = (train_step if mode == "train" else inference_step)(cfg)
    step()  # warm-up: lazy inits, optimizer state, layout caches
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / _MB
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status_kb("VmRSS")
    step()
    return (status_kb("VmHWM") - before) / 1024


def peak_memory_mb(cfg: StepConfig, mode: str, timeout: float = 900) -> float:
    """Peak MiB a ``mode`` ("infer" or "train") step needs beyond what is allocated before it."""
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if cfg.device.startswith("cuda"):
        return _measure_here(cfg, mode)
    if not os.path.exists("/proc/self/clear_refs"):
        raise RuntimeError("CPU peak memory needs Linux's /proc/self/clear_refs")
    cmd = [sys.executable, "-m", "dinat_timm.bench.memory", "--mode", mode, "--config", json.dumps(asdict(cfg))]
    # fixed glibc thresholds: large blocks are mmap'd and returned on free, so memory the warm-up
    # step freed is not silently reused by the measured one (which would read as zero growth)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        killed = proc.returncode in (-9, 137)
        raise MemoryError(f"worker ran out of memory (killed, rc={proc.returncode})") if killed else RuntimeError(
            f"memory worker failed (rc={proc.returncode}): {' | '.join(tail)}"
        )
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mem_mb"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["infer", "train"], required=True)
    parser.add_argument("--config", required=True, help="StepConfig as JSON")
    args = parser.parse_args(argv)
    cfg = StepConfig(**json.loads(args.config))
    print(json.dumps({"peak_mem_mb": _measure_here(cfg, args.mode)}))


if __name__ == "__main__":
    main()
