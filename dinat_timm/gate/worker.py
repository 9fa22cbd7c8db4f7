"""One side of the speed gate: a process that imports ``dinat_timm`` from one source tree (the base commit's
worktree or the working tree), builds the gated models once, and times one forward of each whenever it is told
to, on the core it is told to, so that the two sides can run at the same moment on two cores.

Run as a script by ``python -m dinat_timm.gate`` (the candidate's copy of this file drives both sides: the base
commit need not have it). One intra-op thread; the figure is the process's own CPU time (``time.process_time``),
which a process waiting for a core does not accrue. The parent sets ``MALLOC_MMAP_THRESHOLD_`` so that every
large buffer gets fresh pages: where a process's memory lands otherwise gives it a speed of its own (±2.5% between
processes of identical code here), which would read as a change.

Protocol, one JSON object a line on the file descriptor given by ``--answer-fd`` (the process's stdout and
stderr both go to its log, so a ``print`` in the timed code cannot break it): ``{"ready": …}`` once built; then
for each ``run CORE`` line read on stdin, ``{"cpu": {model: s}, "wall": {model: s}}``; ``quit`` (or end of
input) ends it. Nothing is installed: the tree comes first on ``sys.path``.
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
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--answer-fd", type=int, required=True)
    args = parser.parse_args()
    answer = os.fdopen(args.answer_fd, "w", buffering=1)
    os.dup2(2, 1)  # the timed code's own output (a print, a C library's) goes to the log, not into the protocol
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(1)
    where = _import_from(args.tree)
    import timm

    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    models = {name: timm.create_model(name).eval() for name in args.models.split(",")}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(args.warmup):
                model(x)
    answer.write(json.dumps({"ready": True, "dinat_timm": where, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "run":
            break
        if len(words) > 1 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {int(words[1])})
        cpu, wall = {}, {}
        with torch.inference_mode():
            for name, model in models.items():
                start_cpu, start = time.process_time(), time.perf_counter()
                model(x)
                cpu[name], wall[name] = time.process_time() - start_cpu, time.perf_counter() - start
        answer.write(json.dumps({"cpu": cpu, "wall": wall}) + "\n")


if __name__ == "__main__":
    main()
