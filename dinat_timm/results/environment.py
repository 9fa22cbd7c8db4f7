"""What a leaderboard row must say about where it was measured."""
from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@lru_cache(maxsize=None)
def environment(device: str = "cpu") -> dict:
    """Columns describing the machine and software stack, for every row written."""
    import timm

    from ..ops.backends._natten import natten_version

    version, _ = natten_version()
    info = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "natten": ".".join(map(str, version)) if version else "none",
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "git_commit": os.environ.get("DINAT_TIMM_COMMIT") or _git_commit(),
        "cuda": torch.version.cuda or "",
        "driver": "",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(torch.device(device))
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            )
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    else:
        info["device"] = f"cpu ({info['cpu']})"
    return info
