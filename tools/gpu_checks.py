"""Exactness of the attention backends on a GPU, printed one line per check.

1. The operator at DiNAT-tiny's stage shapes (batch 2) against float64 ``gather`` on the CPU:
   fp32 forward and the gradients of q, k, v and rpb; bf16 forward and gradients (rpb in fp32,
   as under autocast), with ``gather`` run in bf16 beside it for scale.
2. The reference fixtures' logits (original code's DiNAT state dict) on the device, per backend,
   with TF32 off (the reproducible setting) and on (PyTorch's default for cuDNN convolutions).
3. The autotuner's choice for the triton kernels at these shapes.

    python tools/gpu_checks.py [--device cuda]      # --device cpu dry-runs it (tiled only)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import timm  # noqa: E402

import dinat_timm  # noqa: E402,F401
from dinat_timm.ops.chooser import why_not  # noqa: E402
from dinat_timm.ops.testing import outputs_and_grads  # noqa: E402
from dinat_timm.bench.environment import set_tf32  # noqa: E402

STAGES = [(56, 2, 1), (56, 2, 8), (28, 4, 1), (28, 4, 4), (14, 8, 1), (14, 8, 2), (7, 16, 1), (30, 3, 3)]
QUICK_STAGES = [(56, 2, 8), (28, 4, 1), (7, 16, 1)]


def run(backend, q, k, v, rpb, grad, dilation, dtype, device):
    # the rpb stays fp32 in half precision, as under autocast
    rpb_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return outputs_and_grads(backend, q, k, v, rpb, grad, 7, dilation, dtype, device, rpb_dtype)


def operator_checks(device, backends, quick=False):
    print("== operator vs float64 gather (max |err| / max |ref|): out dq dk dv drpb", flush=True)
    for size, heads, dilation in QUICK_STAGES if quick else STAGES:
        g = torch.Generator().manual_seed(size * 31 + dilation)
        q, k, v, grad = (torch.randn(2, heads, size, size, 32, generator=g) for _ in range(4))
        rpb = torch.randn(heads, 13, 13, generator=g) * 0.5
        ref = run("gather", q, k, v, rpb, grad, dilation, torch.float64, "cpu")
        lines = []
        for dtype in (torch.bfloat16,) if quick else (torch.float32, torch.bfloat16):
            for backend in backends + (["gather"] if dtype != torch.float32 else []):
                on = "cpu" if backend == "gather" else device
                if why_not(backend, q.to(on, dtype), rpb, True):
                    continue
                got = run(backend, q, k, v, rpb, grad, dilation, dtype, on)
                errs = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, ref)]
                lines.append(f"  {str(dtype)[6:]:8s} {backend:7s} " + " ".join(f"{e:.1e}" for e in errs))
        print(f"{size}² h{heads} d{dilation}:\n" + "\n".join(lines), flush=True)


def fixture_checks(device, backends):
    from _helpers import fixture
    from test_dinat_models import small_kwargs

    from dinat_timm.models.dinat import checkpoint_filter_fn

    print("== fixture logits (original DiNAT, small config) on the device: max |Δ| to the reference", flush=True)
    up = fixture("upstream_dinat_small.pt")
    model = timm.create_model("dinat_tiny", **small_kwargs(up["config"])).eval()
    model.load_state_dict(checkpoint_filter_fn(up["state_dict"], model))
    model.to(device)
    for tf32 in (0, 1):
        set_tf32(bool(tf32))
        for backend in backends:
            model.set_attn_backend(backend)
            with torch.no_grad():
                logits = model(up["input"].to(device)).cpu()
            print(f"  tf32={tf32} {backend:7s} {(logits - up['logits']).abs().max().item():.2e}", flush=True)
    set_tf32(False)


def autotune_report(device):
    if device != "cuda":
        return
    from dinat_timm.ops.backends import triton_fused

    print("== triton autotuner's choices (k=7, head_dim=32; halo 14: dilation-1 layers, 7: k×k sub-grids)", flush=True)
    for halo in (14, 7):
        for which in triton_fused._KERNELS:
            tuner = triton_fused._tuned(which, 7, 32, halo, halo)
            for key, config in getattr(tuner, "cache", {}).items():
                print(f"  halo {halo} {which:4s} {key}: chose {config}", flush=True)
            for config, ms in (getattr(tuner, "configs_timings", None) or {}).items():
                print(f"      {config}: {ms}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="bf16 only, three shapes")
    args = parser.parse_args()
    backends = ["triton", "tiled"] if args.device == "cuda" else ["tiled"]
    print("torch", torch.__version__, "timm", timm.__version__, "device",
          torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", flush=True)
    operator_checks(args.device, backends, args.quick)
    fixture_checks(args.device, backends + ["gather"])
    autotune_report(args.device)


if __name__ == "__main__":
    main()
