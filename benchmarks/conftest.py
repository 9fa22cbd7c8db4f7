"""Options and the leaderboard recorder shared by every benchmark suite.

Every option has an environment variable twin (``--models`` / ``DINAT_BENCH_MODELS`` …) and a
small CPU-friendly default, so the bare ``pytest benchmarks --benchmark-only`` finishes in
minutes on a laptop-class CPU. Each measured row is appended to its CSV the moment it exists
(see ``dinat_timm.results.writer``); a test that fails leaves a row with ``status=failed``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dinat_timm.results.environment import environment, precision_settings, set_tf32  # noqa: E402
from dinat_timm.results.writer import append_rows  # noqa: E402

OPTIONS = {
    # name: (default, help)
    "models": ("dinat_mini,nat_mini,dinat_tiny", "comma-separated timm model names"),
    "reference-models": ("swin_tiny_patch4_window7_224", "timm models measured in the same run as yardsticks"),
    "device": ("cpu", "cpu, cuda, cuda:1 …"),
    "data-dir": ("", "ImageNet validation set (ImageFolder or anything timm.data.create_dataset reads); empty = generated tiny set"),
    "split": ("validation", "split name for create_dataset"),
    "batch-size": ("8", "batch size for throughput and memory"),
    "eval-batch-size": ("32", "batch size for accuracy"),
    "img-size": ("", "input size override (default: the model's pretrained cfg)"),
    "dtypes": ("fp32", "comma list of fp32, bf16, fp16 (bf16/fp16 run under autocast; fp16 on GPU only)"),
    "channels-last": ("0", "comma list of 0/1"),
    "compile": ("0", "comma list of 0/1: torch.compile the model"),
    "backends": ("auto", "comma list of attention backends for the models (auto, tiled, natten, natten_legacy, flex)"),
    "op-backends": ("triton,tiled,gather,natten,natten_legacy,flex", "backends timed by the operator suite"),
    "op-dtypes": ("fp32", "comma list of fp32, bf16, fp16: q/k/v dtype of the operator suite (the rpb stays fp32, as under autocast)"),
    "op-batch-size": ("8", "batch size of the operator suite"),
    "rounds": ("5", "timed rounds per benchmark"),
    "warmup": ("2", "untimed warm-up rounds per benchmark"),
    "max-samples": ("0", "stop accuracy after this many images (0 = all)"),
    "results-dir": ("results", "where the CSV leaderboards go"),
    "tf32": ("", "1/0: TF32 for matmuls and cuDNN convolutions (moves fp32 results ~1e-3 on GPUs); "
                 "empty = 0 for accuracy (reproducible), PyTorch's own default for speed and memory"),
    "pretrained": ("auto", "1 = load published weights (needs them cached), 0 = random init, auto = 1 only with --data-dir"),
}


def pytest_addoption(parser):
    group = parser.getgroup("dinat-timm benchmarks")
    for name, (default, help_text) in OPTIONS.items():
        env = "DINAT_BENCH_" + name.upper().replace("-", "_")
        group.addoption(f"--{name}", default=os.environ.get(env, default), help=f"{help_text} [env {env}; default {default!r}]")


def opt(config, name) -> str:
    return str(config.getoption(name.replace("-", "_")))


def opt_list(config, name):
    return [x.strip() for x in opt(config, name).split(",") if x.strip()]


def opt_int_list(config, name):
    return [int(x) for x in opt_list(config, name)]


def pytest_configure(config):
    config._leaderboard_rows = 0


def pytest_generate_tests(metafunc):
    """``bench_config``: every combination of the CLI's comma lists that makes sense on the device."""
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", list(dict.fromkeys(opt_list(metafunc.config, "models"))))
    if "bench_config" not in metafunc.fixturenames:
        return
    import dinat_timm  # noqa: F401  (registers the models for the name checks below)
    from dinat_timm.bench.steps import StepConfig, is_dinat_model

    config = metafunc.config
    device = opt(config, "device")
    img_size = int(opt(config, "img-size")) if opt(config, "img-size") else None
    pretrained = opt(config, "pretrained") == "1"
    configs, ids = [], []
    models = opt_list(config, "models") + opt_list(config, "reference-models")
    for model in dict.fromkeys(models):
        for batch in opt_int_list(config, "batch-size"):
            for dtype in opt_list(config, "dtypes"):
                if dtype == "fp16" and not device.startswith("cuda"):
                    continue  # fp16 autocast is a GPU configuration
                for cl in opt_int_list(config, "channels-last"):
                    for comp in opt_int_list(config, "compile"):
                        for backend in (opt_list(config, "backends") if is_dinat_model(model) else ["timm"]):
                            configs.append(StepConfig(model, batch, img_size, dtype, bool(cl), bool(comp),
                                                      "auto" if backend == "timm" else backend, device, pretrained))
                            ids.append(f"{model}-b{batch}-{dtype}{'-cl' if cl else ''}{'-compile' if comp else ''}-{backend}")
    metafunc.parametrize("bench_config", configs, ids=ids)


def config_columns(cfg, model=None) -> dict:
    """The columns every speed/memory row shares, incl. the backend ``auto`` resolved to."""
    from dinat_timm.bench.steps import is_dinat_model

    chosen = "timm"  # the reference model's own attention
    if is_dinat_model(cfg.model):
        chosen = cfg.backend
        if cfg.backend == "auto":
            from dinat_timm.ops import choose_backend

            probe = torch.empty(1, 1, 7, 7, 8, device=cfg.device)
            chosen = "auto:" + choose_backend(probe, torch.empty(1, 13, 13, device=cfg.device), needs_grad=False)
    return dict(model=cfg.model, dtype=cfg.dtype, channels_last=int(cfg.channels_last), compile=int(cfg.compile),
                backend=chosen, pretrained=int(cfg.pretrained))


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def run_benchmark(benchmark, fn, device: str, config, rounds=None, warmup=None, between=None):
    """pytest-benchmark's pedantic mode with a device sync inside the timed call.

    ``between`` (untimed by pytest-benchmark) runs before every round, warm-up included: a
    yardstick timed there alternates with ``fn`` round by round, so a ratio of the two is
    immune to the machine's drift during the test.
    """

    def timed():
        fn()
        sync(device)

    def setup():
        if between is not None:
            sync(device)
            between()
            sync(device)

    rounds = int(opt(config, "rounds")) if rounds is None else rounds
    warmup = int(opt(config, "warmup")) if warmup is None else warmup
    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return benchmark.stats.stats.median


@pytest.fixture(autouse=True)
def tf32_setting(request):
    """Applies ``--tf32`` for one test (accuracy defaults to off) and restores PyTorch's settings;
    every row records what ran (``tf32_matmul``, ``tf32_cudnn``, ``float32_matmul_precision``)."""
    before = precision_settings()
    wanted = opt(request.config, "tf32")
    if wanted == "" and request.node.module.__name__.endswith("test_accuracy"):
        wanted = "0"
    if wanted not in ("", "0", "1"):
        raise pytest.UsageError(f"--tf32 takes 0 or 1, got {wanted!r}")
    if wanted:
        set_tf32(wanted == "1")
    yield
    torch.backends.cuda.matmul.allow_tf32 = bool(before["tf32_matmul"])
    torch.backends.cudnn.allow_tf32 = bool(before["tf32_cudnn"])


@pytest.fixture
def leaderboard(request):
    """``record(csv_name, **columns)`` appends one row (plus the environment) right away.

    Call ``leaderboard.context(csv_name, **columns)`` before measuring, so that a failure of the
    test still leaves a row saying what was being measured and why it failed.
    """
    config = request.config
    results_dir = Path(opt(config, "results-dir"))
    device = opt(config, "device")

    class Recorder:
        def context(self, csv_name, **columns):
            request.node._leaderboard = (results_dir / csv_name, dict(columns), device)

        def record(self, csv_name, **columns):
            row = {**columns, **environment(device)}
            row.setdefault("status", "ok")
            row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            append_rows(results_dir / csv_name, [row])
            request.node._leaderboard_written = True
            config._leaderboard_rows += 1
            return row

    return Recorder()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    ctx = getattr(item, "_leaderboard", None)
    if report.when == "call" and report.failed and ctx is not None and not getattr(item, "_leaderboard_written", False):
        path, columns, device = ctx
        error = call.excinfo.exconly() if call.excinfo else "failed"
        oom = "out of memory" in error.lower() or isinstance(getattr(call.excinfo, "value", None), MemoryError)
        row = {**columns, **environment(device), "status": "oom" if oom else "failed", "error": error[:500]}
        row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        append_rows(path, [row])
        item.config._leaderboard_rows += 1


def pytest_sessionfinish(session, exitstatus):
    """Rebuild the leaderboards and the plot from everything under --results-dir."""
    config = session.config
    if getattr(config, "_leaderboard_rows", 0) == 0 or hasattr(config, "workerinput"):
        return
    from dinat_timm.results.boards import build_boards

    written = build_boards(opt(config, "results-dir"))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write_line("leaderboards: " + ", ".join(str(p) for p in written.values()))
