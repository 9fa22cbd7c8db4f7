"""Test-wide settings, and the split between the fast loop and the full run.

``python -m pytest tests`` is the loop a contributor runs after every change: every family, backend
and entry point, each at its cheapest. ``--full`` (or ``DINAT_TIMM_FULL_TESTS=1``, which CI sets)
adds what is slow and broad: the export sweep over every registered architecture, every ONNX
family, inductor (instead of ``aot_eager``) behind the ``torch.compile`` tests, and the suite run
beside a CPU hog. Tests of the full run carry ``@pytest.mark.full``.
"""
import os

# Tests never touch the network: every "pretrained" load goes through a local cache.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU, the triton backend's kernels run in Triton's interpreter on CPU tensors (the
# variable must be set before they are first used); with one, the same tests run them on CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest_plugins = ["pytester"]

FULL_ENV = "DINAT_TIMM_FULL_TESTS"
# pytest-xdist workers share the cores: one torch thread each beats oversubscribing them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help=f"also run the slow, broad tests (marked 'full'; what CI runs) [env {FULL_ENV}=1]")


def full_run(config) -> bool:
    return config.getoption("--full") or os.environ.get(FULL_ENV, "") not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "full: slow and broad; runs with --full (CI) only")
    config.addinivalue_line("markers", "natten_legacy: runs NATTEN <= 0.17's ops (pytest -m natten_legacy: those alone)")


def pytest_collection_modifyitems(config, items):
    if full_run(config):
        return
    slow = [item for item in items if item.get_closest_marker("full")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("full")]
        config._full_only = len(slow)


def pytest_report_header(config):
    if not full_run(config):
        return [f"fast loop: tests marked 'full' are left out (--full or {FULL_ENV}=1 runs them, as CI does)"]
    return ["full run: every test, the slow and broad ones included"]


def pytest_terminal_summary(terminalreporter, config):
    left_out = getattr(config, "_full_only", 0)
    if left_out:
        terminalreporter.write_line(f"{left_out} slow, broad tests left out of this fast run; "
                                    f"--full (or {FULL_ENV}=1) runs them, as CI does")


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; without it, nothing to size
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core up to four (each loads torch; more buys little here)."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _plain_pytest_for_nested_sessions():
    """Under pytest-xdist, a worker's environment says so (``PYTEST_XDIST_WORKER``…), and pytest-benchmark
    then disables itself in every pytest run a test starts, in this process or in a child. Those nested
    runs are plain sessions: they do not see it."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PYTEST_XDIST_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def compile_backend(request):
    """``torch.compile``'s backend for the tests that check one graph and eager numerics: inductor in
    the full run; ``aot_eager`` in the fast loop (the same dynamo tracing, so the same graph breaks,
    and AOTAutograd's forward and backward graphs, without inductor's C++ code generation)."""
    return "inductor" if full_run(request.config) else "aot_eager"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh, empty Hugging Face hub cache, offline, for this test only."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def torch_hub_dir(tmp_path):
    """A fresh torch hub dir (where URL checkpoints are cached), restored afterwards."""
    old = torch.hub.get_dir()
    hub = tmp_path / "torch-hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.hub.set_dir(str(hub))
    yield hub
    torch.hub.set_dir(old)


# -- the results tests' files (tests/test_results_*.py) -------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    """A sound throughput CSV: a DiNAT row and a Swin-T row (``_results_rows._speed_rows``)."""
    from _results_rows import _speed_rows

    from dinat_timm.results import append_rows

    append_rows(tmp_path / "good.csv", _speed_rows())
    return tmp_path / "good.csv"


@pytest.fixture
def bench_json(pytester):
    """Real pytest-benchmark JSON from a real (sub-)session; ``make(scale)`` scales dinat's speed."""
    from _results_rows import BENCH_FILE

    def make(scale: float, name: str) -> Path:
        pytester.makepyfile(**{f"test_{name}": BENCH_FILE.replace("SCALE", str(scale))})
        out = pytester.path / f"{name}.json"
        result = pytester.runpytest(f"test_{name}.py", "--benchmark-only", f"--benchmark-json={out}", "-p", "no:cacheprovider",
                                   "-p", "no:xdist")  # in this process, which may be an xdist worker
        result.assert_outcomes(passed=2)
        return out

    return make
