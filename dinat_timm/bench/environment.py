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


def _git(*args, cwd) -> str:
    try:
        out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _git_commit() -> str:
    """The commit of the dinat_timm source, only when the package itself is a git checkout (not
    the commit of whatever repository the caller happens to run in, or installs it into)."""
    package = Path(__file__).resolve().parents[1]
    top = _git("rev-parse", "--show-toplevel", cwd=package)
    if not top or Path(top).resolve() != package.parent:
        return ""
    commit = _git("rev-parse", "--short", "HEAD", cwd=package)
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "dinat_timm", cwd=package.parent)
    return commit + ("+dirty" if commit and dirty else "")


def _dinat_timm_version() -> str:
    from .. import __version__

    return __version__


def precision_settings() -> dict:
    """Settings that change fp32 results on GPUs (TF32 moves the fixtures' logits by ~1e-3 on an
    H200), read when each row is written: a run may change them between rows."""
    return {
        "tf32_matmul": int(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": int(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def set_tf32(enabled: bool) -> None:
    """TF32 for matmuls and cuDNN convolutions together (``--tf32 0|1``)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)


def environment(device: str = "cpu") -> dict:
    """Columns describing the machine, the software stack and the precision settings, for every row; and the
    name of the matrix environment the row was measured in, where a matrix job ran it (``bench.matrix``)."""
    named = os.environ.get("DINAT_TIMM_ENVIRONMENT")
    return {**_static_environment(device), **precision_settings(), **({"environment": named} if named else {})}


@lru_cache(maxsize=None)
def _static_environment(device: str = "cpu") -> dict:
    import timm

    from ..ops.backends._natten import natten_version

    version, _ = natten_version()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "natten": ".".join(map(str, version)) if version else "none",
        "dinat_timm_version": _dinat_timm_version(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "git_commit": os.environ.get("DINAT_TIMM_COMMIT") or _git_commit(),
        "cuda": torch.version.cuda or "",
        "cudnn_version": str(cudnn) if cudnn and torch.version.cuda else "",
        "driver": "",
        "gpu_memory_gb": "",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["device"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
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
