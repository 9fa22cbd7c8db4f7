"""``python -m dinat_timm.bench.matrix``: a config becomes jobs of units; everything is checked before anything is
submitted; the jobs run through submitit's real local executor; a job killed mid-unit is resumed without a row
counted twice or lost; the merged board holds every row once, a column per machine and environment; the sbatch
lines SLURM would receive."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dinat_timm.bench.matrix import ConfigError, plan

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, **settings) -> Path:
    config = dict(results_dir=str(tmp_path / "results"), executor="local", models=["dinat_mini", "nat_mini"],
                  reference_models=[], suites=["throughput", "memory"], benchmarks=str(ROOT / "benchmarks"),
                  environments={"env_a": sys.executable}, machines={"cpu": {"device": "cpu"}},
                  suite_options={"img-size": 64, "rounds": 1, "warmup": 0, "batch-size": 2}, timeout_min=20)
    config.update(settings)
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(config))
    return path


def test_a_plan_is_jobs_of_units_each_with_its_command(tmp_path):
    matrix = plan(_config(tmp_path, environments={"env_a": sys.executable, "env_b": sys.executable},
                          reference_models=["swin_tiny_patch4_window7_224"], suites=["throughput", "op"]))
    assert [j.name for j in matrix.jobs] == ["throughput-env_a-cpu", "op-env_a-cpu", "throughput-env_b-cpu",
                                             "op-env_b-cpu"]
    throughput = matrix.jobs[0]
    assert [u.name for u in throughput.units] == ["dinat_mini", "nat_mini", "swin_tiny_patch4_window7_224"]
    assert [u.name for u in matrix.jobs[1].units] == ["op"]  # the operator alone
    command = throughput.units[0].command
    assert command[:3] == [sys.executable, "-m", "pytest"] and "--models=dinat_mini" in command
    assert f"--results-dir={tmp_path / 'results' / 'jobs' / 'throughput-env_a-cpu' / 'dinat_mini'}" in command
    assert "--img-size=64" in command and not any(u.done() for j in matrix.jobs for u in j.units)


def test_every_problem_of_a_config_is_said_before_anything_is_submitted(tmp_path, capsys):
    from dinat_timm.bench.matrix import main

    path = _config(tmp_path, suites=["throughput", "speed"], environments={"gone": str(tmp_path / "no-python")},
                   eval_sets={"imagenet": str(tmp_path / "no-data")}, colour="blue")
    with pytest.raises(ConfigError) as refused:
        plan(path)
    said = "\n".join(refused.value.problems)
    for words in ("unknown setting 'colour'", "'speed' is not a suite", "no such interpreter",
                  "imagenet: " + str(tmp_path / "no-data") + ": no such file or directory"):
        assert words in said, said
    assert main(["run", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 4 and all(line.startswith("error: matrix:") for line in err)
    assert not (tmp_path / "results").exists()


def test_an_interpreter_that_cannot_run_the_suites_is_named(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'No module named dinat_timm' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(ConfigError, match="env_b: .* cannot import dinat_timm and pytest-benchmark: No module named"):
        plan(_config(tmp_path, environments={"env_a": sys.executable, "env_b": str(broken)}))


def test_planning_needs_no_submitit(tmp_path):
    code = ("import sys; sys.modules['submitit'] = None\n"
            "from dinat_timm.bench.matrix import main\n"
            f"sys.exit(main(['plan', {str(_config(tmp_path))!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "2 job(s) on local" in run.stdout, run.stderr


def test_the_sbatch_lines_slurm_would_receive(tmp_path, monkeypatch):
    """No SLURM here: submitit needs an ``srun`` on the path to build its executor, which then renders the
    script it would submit (nothing is submitted)."""
    from dinat_timm.bench.matrix import executor_for

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    matrix = plan(_config(tmp_path, executor="slurm", models=["dinat_tiny"], suites=["throughput"],
                          environments={"natten021": sys.executable}, timeout_min=120,
                          machines={"h100": {"partition": "gpu", "constraint": "h100", "gpus": 1, "device": "cuda"}}))
    script = executor_for(matrix, matrix.jobs[0])._executor._make_submission_file_text("CMD", "UID")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --constraint=h100", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --time=120",
                 "#SBATCH --job-name=dinat-throughput-natten021-h100", "#SBATCH --signal=USR2@90"):
        assert line in script.splitlines(), script
    assert "--device=cuda" in matrix.jobs[0].units[0].command


def _job_pid(logs: Path, deadline: float) -> int:
    """The process running a job's function: the child of submitit's local controller, whose pid names the logs."""
    while time.monotonic() < deadline:
        found = [p.name.split("_")[0] for p in logs.glob("*_0_log.out")] if logs.is_dir() else []
        children = subprocess.run(["pgrep", "-P", found[0]], capture_output=True, text=True).stdout.split() if found else []
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError(f"no job started under {logs}")


@pytest.mark.full  # 4 jobs of real suites, twice: a minute and more of both cores
def test_a_killed_job_is_resumed_without_a_row_twice_or_lost_and_the_board_holds_every_row_once(tmp_path):
    venv = tmp_path / "venv_b"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    config = _config(tmp_path, environments={"env_a": sys.executable, "env_b": str(venv / "bin" / "python")})
    results = tmp_path / "results"
    command = [sys.executable, "-m", "dinat_timm.bench.matrix", "run", str(config)]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the first job (local: one job after another): killed while its second unit writes rows, as a preemption
    deadline = time.monotonic() + 300
    pid = _job_pid(results / "logs" / "throughput-env_a-cpu", deadline)
    second_unit = results / "jobs" / "throughput-env_a-cpu" / "nat_mini"
    while time.monotonic() < deadline and not any(p.stat().st_size for p in second_unit.glob("throughput.csv")):
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # the job; its unit dies with it (the parent-death signal), as in a preemption
    out, err = first.communicate(timeout=600)
    assert first.returncode == 1 and "throughput-env_a-cpu failed" in err, out[-2000:] + err[-2000:]
    assert "1 unit(s) not done: run the same command again to resume" in out
    assert (results / "jobs" / "throughput-env_a-cpu" / "dinat_mini" / "DONE.json").exists()
    assert not (second_unit / "DONE.json").exists() and (second_unit / "throughput.csv").exists()  # half its rows

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "throughput-env_a-cpu: throughput with" in again.stdout and "[1 of 2 unit(s) to run]" in again.stdout
    assert again.stdout.count("[done]") == 3  # the other jobs are not submitted again

    from dinat_timm.results import read_csv

    for name in ("throughput.csv", "memory.csv"):
        rows = read_csv(results / name)
        mode = rows["mode"] if "mode" in rows else rows["infer_samples_per_sec"].notna().map({True: "infer",
                                                                                              False: "train"})
        seen = sorted(zip(rows["environment"], rows["model"], mode))
        expected = sorted((env, model, m) for env in ("env_a", "env_b") for model in ("dinat_mini", "nat_mini")
                          for m in ("infer", "train"))
        assert seen == expected, (name, seen)  # every row once: none twice, none lost
    from dinat_timm.results.tables import unflagged

    board = (results / "LEADERBOARD.md").read_text()
    measured = set(unflagged(read_csv(results / "throughput.csv"))["environment"])
    if len(measured) == 2:  # rows flagged noisy stay out of the boards
        section = board.split("## Across machines and environments", 1)[1].split("\n## ", 1)[0]
        assert "cpu (" in section and "· env_a" in section and "· env_b" in section, board
