"""Rows and checks the results tests share: throughput rows as the suites write them, pytest-benchmark test code
for real JSON (``BENCH_FILE``, the ``bench_json`` fixture's), and what a refusal on stderr looks like."""



BENCH_FILE = """
import time
import pytest

@pytest.mark.parametrize("model,speed", [("dinat_mini", 1.0), ("swin_tiny_patch4_window7_224", 2.0)])
def test_speed(benchmark, model, speed):
    benchmark.pedantic(lambda: time.sleep(0.001), rounds=3, iterations=1)
    benchmark.extra_info.update(suite="throughput", model=model, infer_batch_size=8, infer_img_size=224,
                                infer_samples_per_sec=speed * SCALE, dtype="fp32", backend="auto:tiled")
"""

def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]

def _errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]

def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")

def _speed_row(speed, **extra):
    return dict(suite="throughput", status="ok", model="dinat_mini", dtype="fp32", device="cpu (x)", backend="tiled",
                infer_batch_size=8, infer_img_size=224, infer_samples_per_sec=speed, **extra)

def _speed_rows(dinat=10.0, swin=12.0, model="dinat_tiny"):
    common = dict(suite="throughput", status="ok", infer_batch_size=8, infer_img_size=224, dtype="fp32", device="cpu (x)")
    return [dict(common, model=model, backend="auto:tiled", infer_samples_per_sec=dinat),
            dict(common, model="swin_tiny_patch4_window7_224", backend="timm", infer_samples_per_sec=swin)]

def _speed_rows2(device, dinat, swin):
    common = dict(suite="throughput", infer_batch_size=8, infer_img_size=224, dtype="fp32", compile=0, status="ok")
    return [dict(common, model="dinat_tiny", backend="auto:tiled", device=device, infer_samples_per_sec=dinat),
            dict(common, model="swin_tiny_patch4_window7_224", backend="timm", device=device, infer_samples_per_sec=swin)]

def _rows(dinat_infer=10.0, dinat_train=3.0, device="cpu (x)"):
    common = dict(suite="throughput", dtype="fp32", compile=0, channels_last=0, device=device, status="ok")
    return [dict(common, model="dinat_tiny", backend="auto:tiled", infer_batch_size=8, infer_img_size=224,
                 infer_samples_per_sec=dinat_infer),
            dict(common, model="dinat_tiny", backend="auto:tiled", train_batch_size=8, train_img_size=224,
                 train_samples_per_sec=dinat_train)]


