"""One side of the speed gate: a process that imports ``dinat_timm`` from one source tree (the base
commit's worktree or the working tree), builds the gated models once, and times one forward of each
whenever it is told to, so that two such processes can be timed in alternating rounds.

Run as a script by ``python -m dinat_timm.gate`` (the candidate's copy of this file drives both sides:
the base commit need not have it). Protocol, one JSON object a line: it prints
``{"ready": …}`` once built; then for each ``run`` line read on stdin it prints ``{"seconds": {model:
s}}``; ``quit`` (or end of input) ends it. Nothing is installed: the tree comes first on ``sys.path``.
"""
import argparse
import json
import os
import sys
import time


def _import_from(tree: str):
    sys.path.insert(0, tree)
    # an editable install of another tree must not answer ``import dinat_timm``
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "editable" not in f"{getattr(f, '__module__', '')} {type(f).__module__}".lower()]
    import dinat_timm

    where = os.path.realpath(os.path.dirname(dinat_timm.__file__))
    if not where.startswith(os.path.realpath(tree) + os.sep):
        raise SystemExit(f"dinat_timm imported from {where}, not from {tree}")
    return where


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    where = _import_from(args.tree)

    import timm
    import torch

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    models = {name: timm.create_model(name).eval() for name in args.models.split(",")}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(args.warmup):
                model(x)
    print(json.dumps({"ready": True, "dinat_timm": where, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        seconds = {}
        with torch.inference_mode():
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                seconds[name] = time.perf_counter() - start
        print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
