"""Shared fixtures: offline hub, a session-wide tiny SVD folder."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: threading overhead outweighs the gain on 2 cores


@pytest.fixture(scope="session")
def tiny_svd_dir(tmp_path_factory):
    """A tiny random SVD saved in diffusers layout (built once per test session)."""
    from fffvdi.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_svd"), seed=0)
