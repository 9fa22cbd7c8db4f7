"""Registers and spill stack of the Triton kernels on sm_90 (H100/H200), compiled here without a GPU.

Every launch candidate of each kernel (``triton_fused._candidates``) at DiNAT's two halo kinds (k=7:
the 14-row halo of dilation-1 layers, and the 7×7 sub-grids of its dilated layers), head_dim 32, in
bf16 and fp32, compiled by Triton for ``cuda:90`` and read by ``cuobjdump -res-usage``. A change to the
kernels' code that is meant to leave their arithmetic and speed alone must leave this table alone:

    python tools/kernel_resources.py > before.txt   (then after the change)   diff before.txt after.txt
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _signature(fn, dtype: str, constexprs: dict) -> dict:
    pointer = f"*{dtype}"
    types = {}
    for name in fn.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in ("LSE", "DELTA", "DRPB", "RPB"):
            types[name] = "*fp32"
        elif name.isupper():
            types[name] = pointer
        elif name in ("scale_log2", "scale"):
            types[name] = "fp32"
        else:
            types[name] = "i32"
    return types


def compile_resources(kernel, dtype: str, constexprs: dict, num_warps: int, num_stages: int, maxnreg):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernel  # the JITFunction (its arg_names, its source)
    source = ASTSource(fn, _signature(fn, dtype, constexprs), constexprs=constexprs)
    options = dict(num_warps=num_warps, num_stages=num_stages)
    if maxnreg:
        options["maxnreg"] = maxnreg
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        usage = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    return int(regs.group(1)) if regs else -1, int(stack.group(1)) if stack else -1


def main() -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    from dinat_timm.ops.backends import _triton_kernels as kernels
    from dinat_timm.ops.backends import triton_fused

    for halo in (14, 7):
        candidates = triton_fused._candidates(7, 32, halo, halo)
        for dtype in ("bf16", "fp32"):
            for which, configs in candidates.items():
                for config in configs:
                    constexprs = dict(config["meta"], KS=7, HAS_RPB=True, PRECISION=triton_fused._precision(
                        {"bf16": __import__("torch").bfloat16, "fp32": __import__("torch").float32}[dtype]), UPCAST=False)
                    if which == "dq":
                        constexprs.update(RPB_GRAD=True, SPLIT_BINS=dtype != "fp32")
                    try:
                        regs, stack = compile_resources(getattr(kernels, triton_fused._KERNELS[which]), dtype, constexprs,
                                                        config["num_warps"],
                                                        config["num_stages"], config["maxnreg"])
                        result = f"{regs:3d} registers, {stack:4d} bytes stack"
                    except Exception as e:  # noqa: BLE001 - reported, the table goes on
                        result = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    meta = ",".join(f"{k}={v}" for k, v in sorted(config["meta"].items()))
                    print(f"halo {halo:2d} {dtype} {which:4s} w{config['num_warps']} s{config['num_stages']} "
                          f"maxnreg={config['maxnreg']} [{meta}]: {result}", flush=True)


if __name__ == "__main__":
    main()
