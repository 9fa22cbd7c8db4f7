"""What every row says about where and how it was measured, and keeping devices apart: TF32
settings per row, the package's own commit, device-aware boards and compare, the legacy NATTEN
build's CUDA architectures."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.boards import build_boards
from dinat_timm.results.compare import DeviceMismatch, compare
from dinat_timm.results.environment import environment, set_tf32

from _helpers import results_cli

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
    code = "from dinat_timm.results.environment import environment; print(environment('cpu')['git_commit'])"
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


def test_the_suite_writes_tf32_columns_and_accuracy_defaults_to_tf32_off(tmp_path):
    """The real benchmark suite, once: the accuracy row records TF32 off (its default), whatever
    PyTorch's default is; rows of an old CSV without those columns still load."""
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_accuracy.py", "--benchmark-only", "-q", "-p", "no:cacheprovider",
           "--models", "nat_mini", f"--results-dir={out}", "--eval-batch-size", "8", "--max-samples", "8"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    row = read_csv(out / "accuracy_generated.csv").iloc[-1]
    assert (row["tf32_matmul"], row["tf32_cudnn"]) == (0, 0)
    old = pd.DataFrame([{"suite": "accuracy", "model": "old", "top1": 1.0, "device": "cpu (x)"}])
    old.to_csv(out / "accuracy_generated.csv", index=False, mode="a", header=False)
    assert "tf32_matmul" in read_csv(out / "accuracy_generated.csv").columns


def _speed_rows(device, dinat, swin):
    common = dict(suite="throughput", infer_batch_size=8, infer_img_size=224, dtype="fp32", compile=0, status="ok")
    return [dict(common, model="dinat_tiny", backend="auto:tiled", device=device, infer_samples_per_sec=dinat),
            dict(common, model="swin_tiny_patch4_window7_224", backend="timm", device=device, infer_samples_per_sec=swin)]


def test_compare_refuses_rows_of_different_devices(tmp_path):
    cpu, gpu = pd.DataFrame(_speed_rows("cpu (x)", 10, 12)), pd.DataFrame(_speed_rows("NVIDIA H200", 4000, 5000))
    with pytest.raises(DeviceMismatch, match=r"\['cpu \(x\)'\].*\['NVIDIA H200'\].*--allow-device-mismatch"):
        compare(cpu, gpu)
    assert compare(cpu, gpu, allow_device_mismatch=True).regressions == 0  # told to: GPU rows read as faster
    append_rows(tmp_path / "cpu.csv", _speed_rows("cpu (x)", 10, 12))
    append_rows(tmp_path / "gpu.csv", _speed_rows("NVIDIA H200", 4000, 5000))
    cli = results_cli("compare", tmp_path / "cpu.csv", tmp_path / "gpu.csv")
    assert cli.returncode == 2 and "not comparable" in cli.stderr


def test_compare_keeps_each_devices_rows_of_a_mixed_file():
    """A CSV with CPU and GPU rows of the same configuration: each device pairs with itself."""
    both = pd.DataFrame(_speed_rows("cpu (x)", 10, 12) + _speed_rows("NVIDIA H200", 4000, 5000))
    slower_gpu = pd.DataFrame(_speed_rows("cpu (x)", 10, 12) + _speed_rows("NVIDIA H200", 2000, 5000))
    verdict = compare(both, slower_gpu, max_slowdown=0.1)
    assert verdict.regressions == 1
    flagged = verdict.table[verdict.table["regression"]]
    assert flagged["config"].str.contains("NVIDIA H200").all()


def test_speed_board_ranks_within_each_device_and_leaves_flagged_rows_out(tmp_path):
    rows = _speed_rows("cpu (x)", 10, 12) + _speed_rows("NVIDIA H200", 4000, 5000)
    rows.append(dict(rows[2], model="nat_tiny", infer_samples_per_sec=9000, flag="noisy: load 3.0"))
    append_rows(tmp_path / "throughput.csv", rows)
    build_boards(tmp_path)
    board = read_csv(tmp_path / "leaderboard_speed.csv")
    assert "nat_tiny" not in set(board["model"])  # flagged: kept in the raw CSV only
    ranks = {(r.device, r.model): r.infer_rank_in_device for r in board.itertuples()}
    assert ranks[("cpu (x)", "swin_tiny_patch4_window7_224")] == 1 and ranks[("cpu (x)", "dinat_tiny")] == 2
    assert ranks[("NVIDIA H200", "swin_tiny_patch4_window7_224")] == 1 and ranks[("NVIDIA H200", "dinat_tiny")] == 2
    build_boards(tmp_path, include_flagged=True)
    assert "nat_tiny" in set(read_csv(tmp_path / "leaderboard_speed.csv")["model"])


def test_committed_results_hold_cpu_and_h200_rows_with_their_settings():
    board = read_csv(ROOT / "results" / "leaderboard_speed.csv")
    devices = set(board["device"])
    assert "NVIDIA H200" in devices and any(d.startswith("cpu") for d in devices)
    raw = read_csv(ROOT / "results" / "throughput.csv")
    ours = raw[(raw["device"] == "NVIDIA H200") & raw["git_commit"].isin(["2f49a98", "1b99095"])]
    assert len(ours) and ours["tf32_cudnn"].notna().all() and ours["dinat_timm_version"].notna().all()


@pytest.mark.parametrize("arch,ok", [("9.0", True), ("8.0;9.0", True), ("10.0", False), ("sm_90", False), ("9", False)])
def test_legacy_natten_build_takes_a_cuda_arch_list(arch, ok):
    run = subprocess.run(["bash", str(ROOT / "tools" / "build_legacy_natten.sh"), "0.15.1", arch],
                         env=dict(os.environ, DRY_RUN="1"), capture_output=True, text=True, timeout=60)
    if ok:
        assert run.returncode == 0 and f"NATTEN_CUDA_ARCH={arch} FORCE_CUDA=1" in run.stdout
    else:
        assert run.returncode == 2 and "major.minor" in run.stderr and run.stdout == ""
