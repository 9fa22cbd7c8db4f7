"""``python -m dinat_timm.bench.matrix {plan,run,collect} CONFIG``: the benchmark matrix (suites × NATTEN
environments × GPU types) as jobs on a cluster's scheduler, through submitit (SLURM, or local processes where there
is none), resumable, its rows merged into one board.

A job is one suite (or one evaluation set of the accuracy tool) in one environment (a Python interpreter: a NATTEN
version) on one kind of machine (a SLURM partition and constraint, GPUs per job). It runs its models one at a time,
each a *unit* with a folder of its own under the job's (``RESULTS/jobs/JOB/MODEL/``), marked done only once its
suite ended well. Run again, the same command skips every unit marked done, starts afresh every unit that was not
(a preempted or failed one: its partial rows are removed first, so nothing is counted twice), and resubmits only the
jobs with such units. ``collect`` (run at the end of ``run`` too) merges every done unit's rows into ``RESULTS/``,
then builds the boards and ``LEADERBOARD.md`` (a column per machine and environment) and timm's results files.

The config (YAML or JSON; docs/cluster.md)::

    results_dir: results/matrix
    executor: slurm                     # or local: the same jobs as processes on this machine
    models: [dinat_mini, dinat_tiny]
    suites: [throughput, memory]        # and op, scaling, accuracy
    eval_sets: {imagenet: /data/imagenet/val}     # accuracy: set -> folder
    environments: {natten021: /envs/n021/bin/python, natten015: /envs/n015/bin/python}
    machines: {h100: {partition: gpu, constraint: h100, gpus: 1, device: cuda}}
    suite_options: {dtypes: fp32,bf16, rounds: 5}
    timeout_min: 120
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

SUITE_FILES = {"throughput": "test_throughput.py", "memory": "test_memory.py", "op": "test_op_speed.py",
               "scaling": "test_scaling.py"}
SUITES = (*SUITE_FILES, "accuracy")
DONE = "DONE.json"  # a unit's mark: written last, once its rows are all there


class ConfigError(ValueError):
    """A config the matrix cannot run; ``problems`` says every reason, one line each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Unit:
    """One model (or tag) of a job: a command, run in its own folder."""

    name: str
    folder: str
    command: List[str]

    def done(self) -> bool:
        return (Path(self.folder) / DONE).is_file()


@dataclass
class Job:
    name: str
    suite: str
    environment: str
    python: str
    machine: str
    slurm: Dict[str, object]
    units: List[Unit] = field(default_factory=list)

    def pending(self) -> List[Unit]:
        return [u for u in self.units if not u.done()]


@dataclass
class Matrix:
    results_dir: Path
    executor: str
    timeout_min: int
    jobs: List[Job]
    benchmarks: Path


def _load(path: Path) -> dict:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError([f"{path}: {str(e).splitlines()[0]}"]) from None
    if not isinstance(config, dict):
        raise ConfigError([f"{path}: not a mapping of settings"])
    return config


def _options(options: dict) -> List[str]:
    return [f"--{k}={v}" for k, v in (options or {}).items()]


def plan(config_path) -> Matrix:
    """The jobs a config asks for, each with its units and their commands, and every problem with the config
    (unknown keys and suites, missing interpreters, data folders and suite files): ``ConfigError`` lists all."""
    config_path = Path(config_path)
    config = _load(config_path)
    known = {"results_dir", "executor", "models", "reference_models", "suites", "eval_sets", "environments", "machines",
             "suite_options", "timeout_min", "benchmarks"}
    problems = [f"{config_path}: unknown setting {k!r} (known: {', '.join(sorted(known))})" for k in config if k not in known]
    results = Path(config.get("results_dir", "results/matrix")).resolve()  # the jobs may start elsewhere
    executor = config.get("executor", "slurm")
    if executor not in ("slurm", "local"):
        problems.append(f"executor {executor!r}: slurm or local")
    models = config.get("models") or []
    references = config.get("reference_models", ["swin_tiny_patch4_window7_224"]) or []
    suites = config.get("suites") or []
    if not models or not isinstance(models, list):
        problems.append("models: give a list of models (or tags, for accuracy)")
    problems += [f"suites: {s!r} is not a suite ({', '.join(SUITES)})" for s in suites if s not in SUITES]
    if not suites:
        problems.append("suites: give at least one of " + ", ".join(SUITES))
    environments = config.get("environments") or {"current": sys.executable}
    machines = config.get("machines") or {"local": {"device": "cpu"}}
    eval_sets = config.get("eval_sets") or {}
    if "accuracy" in suites and not eval_sets:
        problems.append("accuracy needs eval_sets: {set: folder}")
    benchmarks = Path(config.get("benchmarks", "benchmarks")).resolve()
    for suite in suites:
        if suite in SUITE_FILES and not (benchmarks / SUITE_FILES[suite]).is_file():
            problems.append(f"{benchmarks / SUITE_FILES[suite]}: no such file (run from the checkout, or set benchmarks)")
    for name, python in environments.items():
        problems += _check_interpreter(name, str(python))
    for name, folder in eval_sets.items():
        if not Path(folder).exists():
            problems.append(f"eval_sets: {name}: {folder}: no such file or directory")
    existing = next(p for p in [results.resolve(), *results.resolve().parents] if p.exists())
    if not os.access(existing, os.W_OK):
        problems.append(f"results_dir {results}: {existing} cannot be written")
    if problems:
        raise ConfigError(problems)
    jobs = []
    for machine, spec in machines.items():
        spec = dict(spec or {})
        device = str(spec.pop("device", "cuda" if spec.get("gpus") else "cpu"))
        gpus = int(spec.get("gpus", 0) or 0)
        slurm = {k: v for k, v in spec.items() if k != "gpus"}
        for environment, python in environments.items():
            for suite in suites:
                for eval_set, folder in (eval_sets.items() if suite == "accuracy" else [(None, None)]):
                    name = "-".join(x for x in (suite, eval_set, environment, machine) if x)
                    job = Job(name, suite, environment, str(python), machine, dict(slurm, gpus=gpus))
                    # the op suite times the operator alone; throughput and memory time the yardsticks beside the models
                    names = (["op"] if suite == "op" else
                             list(dict.fromkeys(models + (references if suite in ("throughput", "memory") else []))))
                    for model in names:
                        unit_dir = results / "jobs" / name / model
                        job.units.append(Unit(model, str(unit_dir), _command(
                            suite, str(python), model, device, gpus, unit_dir, benchmarks, eval_set, folder,
                            _options(config.get("suite_options")))))
                    jobs.append(job)
    return Matrix(results, executor, int(config.get("timeout_min", 120)), jobs, benchmarks)


def _check_interpreter(name: str, python: str) -> List[str]:
    """An environment's interpreter: there, runnable, and able to import dinat_timm and its suites' tools."""
    if not shutil.which(python) and not Path(python).is_file():
        return [f"environments: {name}: {python}: no such interpreter"]
    probe = subprocess.run([python, "-c", "import dinat_timm, pytest, pytest_benchmark"], capture_output=True,
                           text=True, timeout=300)
    if probe.returncode != 0:
        said = probe.stderr.strip().splitlines()
        return [f"environments: {name}: {python} cannot import dinat_timm and pytest-benchmark: "
                f"{said[-1] if said else 'exit ' + str(probe.returncode)}"]
    return []


def _command(suite, python, model, device, gpus, unit_dir, benchmarks, eval_set, folder, options) -> List[str]:
    if suite == "accuracy":
        launcher = ([python, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}"] if gpus > 1 else [python])
        return [*launcher, "-m", "dinat_timm.bench.accuracy", "--model", model, "--pretrained", "--dataset", eval_set,
                "--data-dir", folder, "--split", "", "--device", device, "--results",
                str(Path(unit_dir) / "accuracy_imagenet.csv")]
    which = [] if suite == "op" else [f"--models={model}", "--reference-models="]
    if suite == "scaling":
        which = [f"--scaling-models={model}"]
    return [python, "-m", "pytest", str(benchmarks / SUITE_FILES[suite]), "--benchmark-only", "-p", "no:cacheprovider",
            "-q", *which, f"--device={device}", f"--results-dir={unit_dir}", *options]


def _die_with_parent() -> None:
    """A unit's process ends when its job's does (a preempted job must not leave a unit writing rows)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class JobRun:
    """What a scheduler runs for a job: its pending units, one at a time, each started afresh (a partial unit's
    rows removed first) and marked done only when its command ended well. Requeued by submitit on preemption."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> dict:
        import socket

        env = dict(os.environ, DINAT_TIMM_ENVIRONMENT=self.job.environment, HF_HUB_OFFLINE=os.environ.get(
            "HF_HUB_OFFLINE", "1"), DINAT_TIMM_RUN_ID=f"{self.job.name}@{socket.gethostname()}")
        ran = []
        for unit in self.job.pending():
            folder = Path(unit.folder)
            shutil.rmtree(folder, ignore_errors=True)  # a preempted run's partial rows: measured again, never twice
            folder.mkdir(parents=True)
            with open(folder / "log.txt", "w") as log:
                code = subprocess.Popen(unit.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent).wait()
            if code != 0:
                lines = (folder / "log.txt").read_text(errors="replace").strip().splitlines()
                raise RuntimeError(f"{self.job.name}: {unit.name} failed (exit {code}): " + " | ".join(lines[-5:]))
            (folder / DONE).write_text(json.dumps({"unit": unit.name, "job": self.job.name, "when": time.time()}))
            ran.append(unit.name)
        return {"job": self.job.name, "ran": ran}

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption or timeout: requeue the same job; the done units are skipped then."""
        import submitit

        return submitit.helpers.DelayedSubmission(JobRun(self.job))


def executor_for(matrix: Matrix, job: Job):
    """The submitit executor of one job: its log folder, time limit and name; on SLURM its machine's partition,
    constraint (any ``slurm_*`` setting of submitit's), GPUs, one task and CPUs for them."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(matrix.results_dir / "logs" / job.name), cluster=matrix.executor)
    params = dict(timeout_min=matrix.timeout_min, name=f"dinat-{job.name}")
    slurm = dict(job.slurm)
    gpus = int(slurm.pop("gpus", 0))
    if matrix.executor == "slurm":
        params.update(gpus_per_node=gpus, tasks_per_node=1, cpus_per_task=max(4, 8 * gpus),
                      **{f"slurm_{k}": v for k, v in slurm.items()})
    executor.update_parameters(**params)
    return executor


def run_jobs(matrix: Matrix) -> List[str]:
    """Submit every job with pending units (submitit) and wait for all; on SLURM they run side by side, with
    ``executor: local`` one after the other (timings taken beside each other on one machine would measure their
    contention). Returns a line for each job that failed, naming it with the last lines of its log."""
    failures, running = [], {}
    for job in matrix.jobs:
        if not job.pending():
            continue
        running[job.name] = executor_for(matrix, job).submit(JobRun(job))
        if matrix.executor == "local":
            failures += _wait({job.name: running.pop(job.name)})
    return failures + _wait(running)


def _wait(submitted: Dict[str, object]) -> List[str]:
    failures = []
    for name, job in submitted.items():
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 - submitit's failure, a killed job, the unit's own error
            said = [line for line in str(e).strip().splitlines() if line.strip()]
            failures.append(f"{name} failed: " + " | ".join(said[-3:]))
    return failures


def collect(matrix: Matrix) -> Dict[str, int]:
    """Every done unit's rows merged into the results folder, per CSV (the writer's checks and lock), then the
    boards, LEADERBOARD.md and timm's results files built from them. Returns {csv: rows}."""
    import pandas as pd

    from ..results.boards import BoardsRefused, build_boards
    from ..results.validate import load_checked
    from ..results.writer import write_csv_atomic

    tables: Dict[str, list] = {}
    for job in matrix.jobs:
        for unit in job.units:
            if not unit.done():
                continue
            for csv in Path(unit.folder).glob("*.csv"):
                if csv.name.startswith("leaderboard_") or csv.name == "paper.csv":
                    continue  # the unit's own boards: rebuilt from the merged rows
                table, problems = load_checked(csv)
                if problems:
                    raise ConfigError(problems)
                tables.setdefault(csv.name, []).append(table)
    counts = {}
    for name, frames in tables.items():
        merged = pd.concat(frames, ignore_index=True, sort=False)
        write_csv_atomic(merged, matrix.results_dir / name)
        counts[name] = len(merged)
    if counts:
        try:
            build_boards(matrix.results_dir)
        except BoardsRefused as e:
            raise ConfigError(e.problems) from None
        _timm_results(matrix.results_dir)
    return counts


def _timm_results(results_dir: Path) -> None:
    from ..results.boards import accuracy_rows, read_raw
    from ..results.timm_format import timm_tables, write_timm_files

    tables, problems = read_raw(results_dir)
    texts = timm_tables(accuracy_rows(tables)) if not problems else {}
    if texts:
        write_timm_files(results_dir / "timm-results", texts)


def describe(matrix: Matrix) -> List[str]:
    lines = [f"{len(matrix.jobs)} job(s) on {matrix.executor}, rows under {matrix.results_dir}/"]
    for job in matrix.jobs:
        pending = job.pending()
        state = "done" if not pending else f"{len(pending)} of {len(job.units)} unit(s) to run"
        lines.append(f"  {job.name}: {job.suite} with {job.python} on {job.machine} "
                     f"{json.dumps(job.slurm) if matrix.executor == 'slurm' else ''} [{state}]".rstrip())
        for unit in pending:
            lines.append(f"    {unit.name} -> {unit.folder}: {' '.join(unit.command)}")
    return lines


def main(argv=None) -> int:
    from ..results.cli import Parser

    parser = Parser(prog="python -m dinat_timm.bench.matrix", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["plan", "run", "collect"],
                        help="plan: list the jobs and check everything; run: submit what is not done, wait, collect; "
                             "collect: merge the done units' rows and build the boards")
    parser.add_argument("config", help="the matrix config (YAML or JSON)")
    parser.add_argument("--dry-run", action="store_true", help="with run: plan and check, submit nothing")
    args = parser.parse_args(argv)
    try:
        matrix = plan(args.config)
        if args.command == "plan" or args.dry_run:
            print("\n".join(describe(matrix)))
            return 0
        if args.command == "run":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise ConfigError(["submitit is not installed: pip install 'dinat-timm[cluster]'"]) from None
            print("\n".join(describe(matrix)), flush=True)
            failures = run_jobs(matrix)
            for line in failures:
                print(f"matrix: {line}", file=sys.stderr)
            counts = collect(matrix)
            left = sum(len(j.pending()) for j in matrix.jobs)
            print(f"matrix: {sum(counts.values())} row(s) in {matrix.results_dir}/ "
                  f"({', '.join(f'{n}: {c}' for n, c in sorted(counts.items())) or 'none'}); "
                  + (f"{left} unit(s) not done: run the same command again to resume" if left else "every unit done"))
            return 1 if failures or left else 0
        counts = collect(matrix)
        print(f"matrix: {sum(counts.values())} row(s) merged into {matrix.results_dir}/")
        return 0
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: matrix: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
