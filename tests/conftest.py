import os
from pathlib import Path

# Tests never touch the network: every "pretrained" load goes through a local cache.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name):
    return torch.load(FIXTURES / name, weights_only=True)


@pytest.fixture(scope="session")
def na2d_cases():
    return load_fixture("na2d_natten.pt")["cases"]
