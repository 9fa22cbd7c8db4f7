"""What every row says about where and how it was measured (``dinat_timm.bench.environment``): the precision
settings in force, the package's own commit."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dinat_timm.bench.environment import environment, set_tf32

ROOT = Path(__file__).resolve().parents[1]


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True).stdout.strip()


def test_rows_record_the_precision_settings_in_force_when_written():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        set_tf32(False)
        off = environment("cpu")
        set_tf32(True)
        on = environment("cpu")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert (off["tf32_matmul"], off["tf32_cudnn"], on["tf32_matmul"], on["tf32_cudnn"]) == (0, 0, 1, 1)
    assert off["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    for column in ("dinat_timm_version", "cudnn_version", "gpu_memory_gb", "git_commit", "torch", "timm"):
        assert column in off


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs this checkout's git")
def test_git_commit_is_the_packages_own_not_the_callers(tmp_path):
    """Run from inside another repository, a row records dinat_timm's commit; a copy of the
    package outside any checkout records none."""
    expected = _git("rev-parse", "--short", "HEAD", cwd=ROOT)
    other = tmp_path / "notebooks"
    other.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=other, check=True)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=other, check=True)
    code = "from dinat_timm.bench.environment import environment; print(environment('cpu')['git_commit'])"
    env = {k: v for k, v in os.environ.items() if k != "DINAT_TIMM_COMMIT"}
    inside_other = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True,
                                  env=dict(env, PYTHONPATH=str(ROOT)))
    assert inside_other.stdout.strip().split("+")[0] == expected, inside_other.stderr
    # installed inside another (committed) repository, e.g. a venv in a project: not its checkout
    copy = other / "lib" / "dinat_timm"
    shutil.copytree(ROOT / "dinat_timm", copy, ignore=shutil.ignore_patterns("__pycache__"))
    copied = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(other / "lib")))
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.strip() == ""
