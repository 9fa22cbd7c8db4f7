"""Wires pytest to the benchmark machinery in ``dinat_timm.bench``: options, parametrization, fixtures, hooks.

What the suites measure and how rows are written, flagged and reported lives in
``dinat_timm.bench.session`` (one ``BenchSession`` per run) and ``dinat_timm.bench.options`` (the
option table, with ``--preset quick`` by default, about four minutes on 2 idle CPU cores). Rows go to
a directory of their own per run, ``results/runs/<host>-<date>`` unless ``--results-dir`` says
otherwise, so a run never edits the committed CSVs.
"""
from __future__ import annotations

import os
import socket
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dinat_timm.bench.options import OPTIONS, BenchOptions, OptionError, env_name  # noqa: E402
from dinat_timm.bench.session import RESULTS, BenchSession  # noqa: E402
from dinat_timm.bench.environment import precision_settings, set_tf32  # noqa: E402

_SUITE_OF = {"test_throughput": "throughput", "test_memory": "memory", "test_accuracy": "accuracy",
             "test_op_speed": "op", "test_scaling": "scaling"}


def pytest_addoption(parser):
    group = parser.getgroup("dinat-timm benchmarks")
    for name, (default, help_text) in OPTIONS.items():
        group.addoption(f"--{name}", default=None, help=f"{help_text} [env {env_name(name)}; default {default!r}]")


def session_of(config) -> BenchSession:
    return config.stash[_SESSION_KEY]


_SESSION_KEY = pytest.StashKey[BenchSession]()
_NARROWED_KEY = pytest.StashKey[bool]()  # pytest-benchmark's table narrowed to median and rounds


def pytest_configure(config):
    options = BenchOptions(config)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # a matrix job's units share their job's run (bench.matrix): its models and yardsticks are read side by side
    run_id = os.environ.get("DINAT_TIMM_RUN_ID") or f"{socket.gethostname()}-{stamp}"
    options.run_results_dir = str(RESULTS / "runs" / run_id)
    config.stash[_SESSION_KEY] = BenchSession(options, run_id)
    if getattr(config.option, "help", False):
        return
    try:
        options.check()
    except OptionError as e:
        pytest.exit(f"benchmark options: {e}", returncode=2)
    # pytest-benchmark's own table repeats what the progress lines and CSVs say; keep it narrow, one
    # table per suite (its default is ten columns wide, with ratios that read "(inf)" for single-round
    # tests), unless the command line asks for its own columns or grouping
    asked = " ".join(config.invocation_params.args)
    if hasattr(config.option, "benchmark_columns") and "--benchmark-columns" not in asked:
        config.option.benchmark_columns = ["median", "rounds"]
        config.stash[_NARROWED_KEY] = True
    if hasattr(config.option, "benchmark_group_by") and "--benchmark-group-by" not in asked:
        config.option.benchmark_group_by = "func"


def _params(item) -> dict:
    return getattr(getattr(item, "callspec", None), "params", {})


def _group(item) -> tuple:
    """The tests whose times predict each other: same suite, same model (or backend and shape), same mode."""
    params = _params(item)
    suite = _SUITE_OF.get(item.module.__name__.rsplit(".", 1)[-1], item.module.__name__)
    cfg = params.get("bench_config")
    subject = (cfg.model if cfg is not None else None) or params.get("model_name") or params.get("scaling_model") \
        or params.get("backend")
    return suite, str(subject), str(params.get("mode", ""))


@pytest.hookimpl(trylast=True)  # after -k and -m: the counts in the summary are of what was asked for
def pytest_collection_modifyitems(session, config, items):
    """Drop the operator suite's combinations the options do not ask for, and those the device cannot
    run (counted, with the reason, in the end-of-run summary), so the progress count and the time
    estimate are about what will run."""
    from dinat_timm.bench.steps import DTYPES, unsupported_dtype
    from dinat_timm.ops.chooser import why_not

    bench = session_of(config)
    options = bench.options
    try:
        backends, dtypes = set(options.list("op-backends")) | {"windowed_sdpa"}, set(options.list("op-dtypes"))
    except OptionError as e:
        pytest.exit(f"benchmark options: {e}", returncode=2)
    device = options.get("device")
    keep, drop, reasons = [], [], {}
    no_eval_sets = not options.list("eval-sets")
    for item in items:
        params = _params(item)
        if no_eval_sets and getattr(item, "originalname", "") == "test_accuracy_on_an_eval_set":
            drop.append(item)  # none asked for (--eval-sets): not a benchmark that did not run
            continue
        if not ("backend" in params and "shape" in params):
            keep.append(item)
            continue
        backend, dtype, backward = params["backend"], params.get("dtype"), params.get("mode") == "fwd_bwd"
        if backend not in backends or dtype not in dtypes:
            drop.append(item)
            continue
        stage, size, heads, dilation = params["shape"]
        why = unsupported_dtype(device, dtype)
        if not why and backend == "window" and size != 7 * dilation:
            why = "window layout serves only maps whose dilation sub-grids are 7x7 (56² d8, 28² d4, 14² d2, 7²)"
        if not why and backend not in ("windowed_sdpa", "window"):
            key = (backend, dtype, backward)
            if key not in reasons:
                probe = torch.empty(1, 1, 14, 14, 32, dtype=DTYPES[dtype], device=device)
                rpb = torch.empty(1, 13, 13, device=device)
                reasons[key] = why_not(backend, probe, rpb, backward) and why_not(backend, probe, None, backward)
            why = reasons[key]
        if why:
            bench.left_out[(f"op benchmarks of backend {backend!r}", why)] += 1
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session):
    session_of(session.config).to_run = [_group(item) for item in session.items]  # after -k / deselection


def pytest_generate_tests(metafunc):
    """``bench_config``: every combination of the CLI's comma lists that makes sense on the device."""
    options = session_of(metafunc.config).options
    try:
        if "model_name" in metafunc.fixturenames:
            metafunc.parametrize("model_name", list(dict.fromkeys(options.list("models"))))
        if "eval_set" in metafunc.fixturenames:
            sets = options.eval_sets()
            metafunc.parametrize("eval_set", sets, ids=[name for name, _ in sets])
        if "scaling_model" in metafunc.fixturenames:
            from dinat_timm.bench.scaling import scaling_sizes

            metafunc.parametrize("scaling_model", list(dict.fromkeys(options.list("scaling-models"))))
            metafunc.parametrize("img_size", scaling_sizes(options))
        if "bench_config" in metafunc.fixturenames:
            configs, ids = _step_configs(options)
            metafunc.parametrize("bench_config", configs, ids=ids)
    except OptionError as e:
        pytest.exit(f"benchmark options: {e}", returncode=2)


def _step_configs(options):
    import dinat_timm  # noqa: F401  (registers the models for the name checks below)
    from dinat_timm.bench.steps import StepConfig, is_dinat_model

    device = options.get("device")
    img_size = options.int("img-size", minimum=32) if options.get("img-size") else None
    pretrained = options.pretrained(has_data=bool(options.get("data-dir")))
    configs, ids = [], []
    models = options.list("models") + options.list("reference-models")
    for model in dict.fromkeys(models):
        for batch in options.ints("batch-size", minimum=1):
            for dtype in options.dtypes():
                if dtype == "fp16" and not device.startswith("cuda"):
                    continue  # fp16 autocast is a GPU configuration
                for cl in options.flags("channels-last"):
                    for comp in options.flags("compile"):
                        for backend in (options.list("backends") if is_dinat_model(model) else ["timm"]):
                            configs.append(StepConfig(model, batch, img_size, dtype, bool(cl), bool(comp),
                                                      "auto" if backend == "timm" else backend, device, pretrained))
                            ids.append(f"{model}-b{batch}-{dtype}{'-cl' if cl else ''}{'-compile' if comp else ''}-{backend}")
    return configs, ids


@pytest.fixture
def bench_options(request) -> BenchOptions:
    return session_of(request.config).options


@pytest.fixture(autouse=True)
def tf32_setting(request):
    """Applies ``--tf32`` for one test (accuracy defaults to off) and restores PyTorch's settings;
    every row records what ran (``tf32_matmul``, ``tf32_cudnn``, ``float32_matmul_precision``)."""
    before = precision_settings()
    wanted = session_of(request.config).options.tf32()  # checked before the run: yes/no or empty
    if wanted is None and request.node.module.__name__.endswith("test_accuracy"):
        wanted = False
    if wanted is not None:
        set_tf32(wanted)
    yield
    torch.backends.cuda.matmul.allow_tf32 = bool(before["tf32_matmul"])
    torch.backends.cudnn.allow_tf32 = bool(before["tf32_cudnn"])


@pytest.fixture
def leaderboard(request):
    """``record(csv_name, measured=None, flag="", **columns)`` appends one row (plus the environment)
    right away. Call ``leaderboard.context(csv_name, **columns)`` before measuring, so that a failure
    of the test still leaves a row saying what was being measured and why it failed."""
    bench = session_of(request.config)

    class Recorder:
        def context(self, csv_name, **columns):
            request.node._leaderboard = (csv_name, dict(columns))

        def record(self, csv_name, measured=None, flag="", **columns):
            row = bench.record(csv_name, columns, measured, flag)
            request.node._leaderboard_written = True
            return row

        def record_detail(self, csv_name, rows):
            bench.record_detail(csv_name, rows)

    return Recorder()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Per phase of each test: a failure row for a failed measurement, the reason of a skip, and at
    the end of the test its time (for the estimate) and its progress line (printed here, outside
    pytest's output capture of the test itself)."""
    outcome = yield
    report = outcome.get_result()
    bench = session_of(item.config)
    if report.skipped and not getattr(item, "_bench_skipped", False):
        item._bench_skipped = True
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        bench.left_out[(f"{_group(item)[0]} benchmark(s)", reason.removeprefix("Skipped: "))] += 1
    if report.when == "call":
        item._bench_seconds = report.duration
        ctx = getattr(item, "_leaderboard", None)
        if report.failed and ctx is not None and not getattr(item, "_leaderboard_written", False):
            csv_name, columns = ctx
            error = call.excinfo.exconly() if call.excinfo else "failed"
            oom = "out of memory" in error.lower() or isinstance(getattr(call.excinfo, "value", None), MemoryError)
            bench.record_failure(csv_name, columns, error, oom)
    if report.when == "teardown":
        bench.test_done(_group(item), getattr(item, "_bench_seconds", 0.0), ran=not getattr(item, "_bench_skipped", False))
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        for line in bench.take_progress():
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    """Rebuild the leaderboards and the plot from everything under the run's results directory."""
    if not hasattr(session.config, "workerinput"):
        session_of(session.config).build_boards()


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables: the last thing a person reads
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = session_of(config).summary()
    if lines and config.stash.get(_NARROWED_KEY, False) and session_of(config).rows_written:
        # pytest-benchmark prints its legend whatever columns it shows
        lines.insert(0, ("The tables above show each benchmark's median and rounds (the legend's Outliers and OPS "
                         "columns are left out; --benchmark-columns brings any back).", ""))
    if lines:
        terminalreporter.write_sep("-", "dinat-timm benchmarks")
        for line, colour in lines:
            terminalreporter.write_line(line, **({colour: True} if colour else {}))
