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


def reset_accelerate_state() -> None:
    """Clear accelerate's singletons so the next in-process training run starts fresh."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Reset accelerate's singletons after the test: in-process training runs must not leak into each other."""
    yield
    reset_accelerate_state()


def train_tiny(overrides: list, *extra: str, config: str = "train_tiny.yaml"):
    """scripts/train.py's main on configs/`config` with `overrides` + `extra`, in this process; returns its TrainResult."""
    import importlib
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if str(root / "scripts") not in sys.path:  # imported, not load_script: its dataclasses need a sys.modules entry
        sys.path.insert(0, str(root / "scripts"))
    return importlib.import_module("train").main(["--config", str(root / "configs" / config), *overrides, *extra])


def train_inputs(base, tiny_svd_dir, num_videos: int, num_frames: int, seed: int = 0, init_unet: bool = False) -> list:
    """Synthetic clips in `base/data` (+ with `init_unet`, the tiny FFF-VDI UNet saved as `base/init_unet`, seeded so
    its propagation weights are fixed) and the overrides every tiny training run shares."""
    from fffvdi.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(base / "data", num_videos=num_videos, num_frames=num_frames, size=(64, 64), seed=seed,
                           num_short=0)
    overrides = [f"model.pretrained={tiny_svd_dir}", f"data.root={base / 'data'}", "logging.report_to=none",
                 "validation.every_steps=0"]
    if init_unet:
        from fffvdi.models.unet import FFFVDIUNet

        torch.manual_seed(0)
        FFFVDIUNet.from_pretrained(tiny_svd_dir, subfolder="unet").save_pretrained(base / "init_unet")
        overrides.append(f"model.checkpoint={base / 'init_unet'}")
    return overrides
