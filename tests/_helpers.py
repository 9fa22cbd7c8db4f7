"""Helpers shared by the tests: the reference fixtures, and putting checkpoints where a user's caches hold them."""
import hashlib
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name):
    return torch.load(FIXTURES / name, weights_only=True)


def put_in_hf_cache(cache_dir: Path, repo_id: str, filename: str, payload: bytes) -> Path:
    """Lay a file out the way huggingface_hub's cache stores a download (blobs, snapshots, refs)."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    blob = repo / "blobs" / hashlib.sha256(payload).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def serialized(state_dict) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def results_cli(*args):
    """``python -m dinat_timm.results ARGS`` in this process (what a subprocess would print, and its
    exit status), for the tests of what the command says; one test per entry point runs it for real."""
    import contextlib
    import io
    import types

    from dinat_timm.results.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def expected_natten():
    """The NATTEN version this environment is named for (tox, CI): '0.15', '0.17', '0.21', 'none' or ''."""
    import os

    return os.environ.get("DINAT_TIMM_EXPECT_NATTEN", "")


def skip_unusable(backend: str, reason):
    """Skip a test whose backend cannot run here, but fail it in an environment named for the NATTEN
    version that backend needs when the backend itself is unusable there (a skip would be a check that
    cannot fail); a call the usable backend declines (a bias for NATTEN >= 0.20, half precision for the
    legacy CPU kernels) is still skipped."""
    import pytest

    from dinat_timm.ops.backends import BACKENDS

    if reason is None:
        return
    expected = expected_natten()
    if expected not in ("", "none"):
        legacy = tuple(int(x) for x in expected.split(".")) < (0, 18)
        unusable = BACKENDS[backend].available()
        if backend == ("natten_legacy" if legacy else "natten") and unusable is not None:
            pytest.fail(f"NATTEN {expected} environment, but backend {backend!r} cannot run: {unusable}")
    pytest.skip(reason)
