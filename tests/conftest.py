import os

# Tests never touch the network: every "pretrained" load goes through a local cache.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU, the triton backend's kernels run in Triton's interpreter on CPU tensors (the
# variable must be set before they are first used); with one, the same tests run them on CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest_plugins = ["pytester"]


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
