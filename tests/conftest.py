"""Shared fixtures: offline hub, one torch thread, a session-wide tiny SVD folder, a DNA randomiser."""
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


@pytest.fixture
def randomise_dna():
    """`randomise_dna(module, seed=1)`: random weights in a DeformableNoiseAlignment's zero-initialised convs.

    At init the module is an exact identity; this makes it a real function of flows, masks and features.
    """

    def randomise(module: torch.nn.Module, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (module.fusion[-1], module.align["bwd"].offset_net[-1], module.align["fwd"].offset_net[-1]):
                conv.weight.copy_(0.05 * torch.randn(conv.weight.shape, generator=g))
                conv.bias.copy_(0.05 * torch.randn(conv.bias.shape, generator=g))

    return randomise


def load_script(name: str):
    """scripts/<name>.py as a fresh module (scripts/ is not a package): `CLI = load_script("inference")`."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
