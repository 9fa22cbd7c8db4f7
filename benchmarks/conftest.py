"""Options and the leaderboard recorder shared by every benchmark suite.

Every option has an environment variable twin (``--models`` / ``DINAT_BENCH_MODELS`` …). The
default ``--preset quick`` measures what matters most (DiNAT/NAT mini and tiny against Swin-T,
the fused and the pure-PyTorch operator) in about three minutes on 2 idle CPU cores; ``--preset
full`` is the whole matrix (every model, every backend). An explicit option beats the preset.

Rows go to a directory of their own per run, ``results/runs/<host>-<date>`` unless
``--results-dir`` says otherwise, so a run never edits the committed CSVs; a pull request can add
the directory as it is (``python -m dinat_timm.results boards`` builds the boards from all runs).
Each row is appended the moment it is measured (see ``dinat_timm.results.writer``); a test that
fails leaves a row with ``status=failed``. Rows measured on a busy machine, or whose rounds
scatter, or that cannot be true, carry a ``flag`` (``dinat_timm.bench.guard``) and stay out of
the boards; the run ends with a warning listing them.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dinat_timm.bench import guard  # noqa: E402
from dinat_timm.results.boards import unflagged  # noqa: E402
from dinat_timm.results.compare import label_of  # noqa: E402
from dinat_timm.results.environment import environment, precision_settings, set_tf32  # noqa: E402
from dinat_timm.results.writer import append_rows, read_csv, write_csv_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results"  # rows of earlier runs, for the reference-model check

OPTIONS = {
    # name: (default under --preset quick, help)
    "preset": ("quick", "quick: the models and shapes that matter most (~3 min on 2 idle CPU cores); full: every "
                        "model and backend (an explicit option beats the preset)"),
    "models": ("dinat_mini,nat_mini,dinat_tiny", "comma-separated timm model names ('all' = every registered one)"),
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
    "backends": ("auto", "comma list of attention backends for the models (auto, triton, tiled, natten, natten_legacy, flex)"),
    "op-backends": ("triton,tiled,natten_legacy", "backends timed by the operator suite (full: also gather, natten, flex)"),
    "op-dtypes": ("fp32", "comma list of fp32, bf16, fp16: q/k/v dtype of the operator suite (the rpb stays fp32, as under autocast)"),
    "op-batch-size": ("8", "batch size of the operator suite"),
    "rounds": ("5", "timed rounds per benchmark"),
    "warmup": ("2", "untimed warm-up rounds per benchmark"),
    "max-samples": ("0", "stop accuracy after this many images (0 = all)"),
    "results-dir": ("", "where this run's CSVs and boards go; empty = results/runs/<host>-<date>"),
    "tf32": ("", "1/0: TF32 for matmuls and cuDNN convolutions (moves fp32 results ~1e-3 on GPUs); "
                 "empty = 0 for accuracy (reproducible), PyTorch's own default for speed and memory"),
    "pretrained": ("auto", "1 = load published weights (needs them cached), 0 = random init, auto = 1 only with --data-dir"),
}

PRESETS = {
    "quick": {},
    "full": {
        "models": "all",
        "reference-models": "swin_tiny_patch4_window7_224,vit_small_patch16_224,convnext_tiny",
        "op-backends": "triton,tiled,gather,natten,natten_legacy,flex",
    },
}


def pytest_addoption(parser):
    group = parser.getgroup("dinat-timm benchmarks")
    for name, (default, help_text) in OPTIONS.items():
        env = "DINAT_BENCH_" + name.upper().replace("-", "_")
        group.addoption(f"--{name}", default=None, help=f"{help_text} [env {env}; default {default!r}]")


def opt(config, name) -> str:
    """The option's value: given on the command line, else its environment variable, else the preset's."""
    value = config.getoption(name.replace("-", "_"))
    if value is None:
        value = os.environ.get("DINAT_BENCH_" + name.upper().replace("-", "_"))
    if value is None and name != "preset":
        preset = opt(config, "preset")
        if preset not in PRESETS:
            raise pytest.UsageError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
        value = PRESETS[preset].get(name)
    if value is None:
        value = OPTIONS[name][0]
    if name == "models" and value == "all":
        import dinat_timm  # noqa: F401
        from dinat_timm.bench.steps import is_dinat_model
        import timm

        value = ",".join(sorted(n for n in timm.list_models() if is_dinat_model(n)))
    if name == "results-dir" and not value:
        value = config._run_results_dir
    return str(value)


def opt_list(config, name):
    return [x.strip() for x in opt(config, name).split(",") if x.strip()]


def opt_int_list(config, name):
    return [int(x) for x in opt_list(config, name)]


def pytest_configure(config):
    config._leaderboard_rows = 0
    config._flagged = []
    config._throughput_seen = {}
    config._started = time.perf_counter()
    config._to_run = 0
    config._done = 0
    config._pending_progress = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config._run_results_dir = str(COMMITTED / "runs" / f"{socket.gethostname()}-{stamp}")
    _SESSION["config"] = config


def pytest_collection_modifyitems(session, config, items):
    """Drop the operator suite's combinations the options do not ask for (rather than skip them one
    by one), so the progress count and the time estimate are about what will run."""
    backends, dtypes = set(opt_list(config, "op-backends")) | {"windowed_sdpa"}, set(opt_list(config, "op-dtypes"))
    on_gpu = opt(config, "device").startswith("cuda")
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        unwanted = "backend" in params and "shape" in params and (
            params["backend"] not in backends or params.get("dtype") not in dtypes
            or (params.get("dtype") == "fp16" and not on_gpu))
        (drop if unwanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_collection_finish(session):
    session.config._to_run = len(session.items)  # after -k / deselection


_SESSION = {}


def pytest_runtest_logreport(report):
    config = _SESSION.get("config")
    if report.when == "teardown" and config is not None:  # every test, run or skipped, ends here once
        config._done += 1
        # printed here, not inside the test, where pytest's output capture would swallow it
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for line in config._pending_progress:
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(line)
        config._pending_progress = []


def _progress(config, row: dict, figure: str) -> None:
    """Queue one readable line per measured row: what, the figure, elapsed, an estimate of what is left."""
    done = config._done + 1
    elapsed = time.perf_counter() - config._started
    left = max(0, config._to_run - done) * elapsed / done
    what = " ".join(str(row[k]) for k in ("suite", "model", "backend", "mode", "dtype") if row.get(k) not in (None, ""))
    shape = f" {row['map_size']}² d{row['dilation']}" if "map_size" in row else ""
    flag = f"  [{row['flag']}]" if row.get("flag") else ""
    config._pending_progress.append(f"[{done}/{config._to_run}] {what}{shape}: {figure}{flag}  "
                                    f"({_clock(elapsed)} elapsed, ~{_clock(left)} left)")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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
    with guard.LoadMeter() as meter:
        benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    reading, spread = meter.reading, guard.spread(benchmark.stats.stats.data)
    config._last_guard = dict(
        outside_load=None if reading.outside_load is None else round(reading.outside_load, 3),
        steal=None if reading.steal is None else round(reading.steal, 3),
        spread=None if spread is None else round(spread, 3),
        flag=guard.noise_flag(reading, spread),
    )
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
            measured = getattr(config, "_last_guard", None) or {}
            config._last_guard = None
            flags = [measured.pop("flag", "")]
            row.update(measured)
            if row.get("suite") == "throughput":
                flags += _throughput_flags(config, results_dir / csv_name, row)
            row["flag"] = "; ".join(f for f in flags if f)
            append_rows(results_dir / csv_name, [row])
            request.node._leaderboard_written = True
            config._leaderboard_rows += 1
            if row["flag"]:
                config._flagged.append(f"{csv_name}: {label_of(row)}: {row['flag']}")
            _progress(config, row, _figure(row))
            return row

    config._last_guard = None
    return Recorder()


def _figure(row) -> str:
    for column, fmt in (("infer_samples_per_sec", "{:.4g} img/s"), ("train_samples_per_sec", "{:.4g} img/s (train)"),
                        ("peak_mem_mb", "{:.1f} MB"), ("top1", "top-1 {:.2f}%")):
        if row.get(column) is not None:
            return fmt.format(row[column])
    if row.get("median_ms") is not None:
        return f"{row['median_ms']:.3g} ms ({row.get('ratio_vs_windowed', float('nan')):.2f}x window attention)"
    return "done"


_SAME_CONFIG = ("model", "dtype", "channels_last", "compile", "backend", "pretrained")


def _throughput_flags(config, path: Path, row: dict) -> list:
    """A training step faster than inference of the same configuration (both rows get the flag), and a
    reference model far from its committed rows on this device and settings."""
    mode = "infer" if row.get("infer_samples_per_sec") is not None else "train"
    other = "train" if mode == "infer" else "infer"
    sps = row[f"{mode}_samples_per_sec"]
    key = tuple(row.get(k) for k in _SAME_CONFIG) + (row.get(f"{mode}_batch_size"), row.get(f"{mode}_img_size"))
    seen = config._throughput_seen.setdefault(key, {})
    seen[mode] = (sps, row["timestamp"])
    flags = []
    if other in seen:
        impossible = guard.impossible_flag(mode, sps, seen[other][0])
        if impossible:
            flags.append(impossible)
            _flag_earlier_row(path, row["model"], f"{other}_samples_per_sec", seen[other][1], impossible)
    from dinat_timm.bench.steps import is_dinat_model

    if not is_dinat_model(row["model"]):
        flags.append(guard.reference_flag(sps, _committed_speeds(row, mode)))
    return flags


def _flag_earlier_row(path: Path, model: str, column: str, timestamp: str, flag: str) -> None:
    table = read_csv(path)
    if table.empty or column not in table:
        return
    match = (table["model"] == model) & (table["timestamp"] == timestamp) & table[column].notna()
    if "flag" not in table:
        table["flag"] = ""
    table["flag"] = table["flag"].astype(object)
    table.loc[match, "flag"] = flag
    write_csv_atomic(table, path)


def _committed_speeds(row: dict, mode: str) -> list:
    """This configuration's images/s in the committed rows (not this run's), same device, unflagged."""
    table = read_csv(COMMITTED / "throughput.csv")
    column = f"{mode}_samples_per_sec"
    if table.empty or column not in table:
        return []
    table = unflagged(table)
    match = table[column].notna() & (table["device"] == row["device"]) & (table["status"].fillna("ok") == "ok")
    for key in ("model", "dtype", "channels_last", "compile", f"{mode}_batch_size", f"{mode}_img_size"):
        if key in table and row.get(key) is not None:
            match &= table[key] == row[key]
    return table.loc[match, column].tolist()


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
        reporter.write_line(f"rows and leaderboards of this run: {opt(config, 'results-dir')} "
                            f"({len(written)} boards, plot {written.get('plot', 'none')})")
        if config._flagged:
            reporter.write_sep("!", f"WARNING: {len(config._flagged)} row(s) flagged, left out of the boards", yellow=True)
            for line in config._flagged:
                reporter.write_line("  " + line, yellow=True)
            reporter.write_line("  A busy or noisy machine makes DiNAT rows read several times too slow: re-run on an "
                                f"idle one (thresholds: outside load {guard.OUTSIDE_LOAD_LIMIT}, spread {guard.SPREAD_LIMIT}).",
                                yellow=True)
