"""Tiny SVD folder round trip and component loading, offline."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fffvdi.errors import ConfigError, ModelLoadError
from fffvdi.models.loading import check_model_source, load_svd_components, resolve_dtype

REPO = Path(__file__).resolve().parents[1]


def test_tiny_folder_has_svd_layout_and_is_small(tiny_svd_dir):
    index = json.loads((tiny_svd_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNetSpatioTemporalConditionModel"]
    assert index["image_encoder"] == ["transformers", "CLIPVisionModelWithProjection"]
    for sub in ("unet", "vae", "image_encoder", "feature_extractor", "scheduler"):
        assert (tiny_svd_dir / sub).is_dir()
    size = sum(p.stat().st_size for p in tiny_svd_dir.rglob("*") if p.is_file())
    assert size < 20e6


def test_diffusers_own_pipeline_loads_tiny_folder_offline(tiny_svd_dir):
    from diffusers import StableVideoDiffusionPipeline

    pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_svd_dir, local_files_only=True)
    assert pipe.unet.config.in_channels == 8 and pipe.vae.config.scaling_factor == pytest.approx(0.18215)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.image_encoder.config.projection_dim == pipe.unet.config.cross_attention_dim


def test_tiny_model_is_seeded(tmp_path):
    from fffvdi.models.tiny import build_tiny_components

    a, b, c = build_tiny_components(0), build_tiny_components(0), build_tiny_components(1)
    wa, wb, wc = (m["unet"].conv_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_load_components_round_trip(tiny_svd_dir):
    from diffusers import UNetSpatioTemporalConditionModel

    comps = load_svd_components(str(tiny_svd_dir), dtype=torch.float32, device="cpu")
    plain = UNetSpatioTemporalConditionModel.from_pretrained(tiny_svd_dir, subfolder="unet")
    for (name, p), (name2, q) in zip(comps.unet.unet.state_dict().items(), plain.state_dict().items()):
        assert name == name2 and torch.equal(p, q)
    assert comps.vae_scale_factor == 8
    assert not any(p.requires_grad for p in comps.unet.parameters())  # inference components are frozen
    assert comps.feature_extractor.crop_size["height"] == 224


def test_dtype_option(tiny_svd_dir):
    comps = load_svd_components(str(tiny_svd_dir), dtype=torch.bfloat16, device="cpu")
    assert comps.vae.dtype == torch.bfloat16 and comps.unet.unet.dtype == torch.bfloat16
    assert resolve_dtype(torch.float16, torch.device("cpu")) == torch.float32


def _forbid_from_pretrained(monkeypatch):
    """Make any from_pretrained of an SVD component fail the test: the hub gate must answer first."""
    from diffusers import AutoencoderKLTemporalDecoder

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained reached: the uncached hub id was not refused up front")

    monkeypatch.setattr(AutoencoderKLTemporalDecoder, "from_pretrained", refuse)


def _assert_quiet(capfd, caplog):
    """No retry chatter: nothing printed, no log record mentioning a retry."""
    out, err = capfd.readouterr()
    assert "Retry" not in out + err and err == "", err
    assert not [r for r in caplog.records if "retry" in r.getMessage().lower()]


def test_offline_uncached_hub_id_fails_fast_in_one_line(monkeypatch, capfd, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _forbid_from_pretrained(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set and it is not in the local cache") as info:
        load_svd_components("someorg/not-cached-svd")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "\n" not in message and "hf download someorg/not-cached-svd" in message and "model.pretrained=DIR" in message
    _assert_quiet(capfd, caplog)


def test_unreachable_hub_fails_fast_without_retries(monkeypatch, capfd, caplog):
    """HF_HUB_OFFLINE unset but no network (a closed local port as the endpoint): refused by the probe, not by retries."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    _forbid_from_pretrained(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"http://127.0.0.1:9 unreachable within 3 s and it is not in the local cache"):
        load_svd_components("someorg/not-cached-svd")
    assert time.perf_counter() - start < 2.0
    _assert_quiet(capfd, caplog)


def test_cached_hub_id_loads_without_network(tmp_path, tiny_svd_dir):
    """A hub id in the local cache loads from it when the hub is unreachable, with no retry lines (fresh process)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--tiny-svd"
    shutil.copytree(tiny_svd_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO))
    code = ("from fffvdi.models.loading import load_svd_components; "
            "c = load_svd_components('someorg/tiny-svd'); print('loaded', c.vae_scale_factor)")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "loaded 8" in res.stdout and "Retry" not in res.stderr


def test_local_folder_errors(tmp_path, tiny_svd_dir):
    with pytest.raises(ModelLoadError, match="not found"):
        load_svd_components(str(tmp_path / "missing"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="vae"):
        load_svd_components(str(tmp_path / "half"))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_svd_components(str(tiny_svd_dir), checkpoint=str(tmp_path))


def test_bad_sources_are_refused_before_anything_loads(tmp_path, tiny_svd_dir, monkeypatch):
    """check_model_source (used by entry points before they write) and load_svd_components reject up front."""
    _forbid_from_pretrained(monkeypatch)
    check_model_source(str(tiny_svd_dir))  # a good folder passes without loading anything
    with pytest.raises(ModelLoadError, match="not found"):
        check_model_source(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=r"no FFF-VDI UNet at .*config.json missing"):
        check_model_source(str(tiny_svd_dir), checkpoint=str(tmp_path))
    with pytest.raises(ModelLoadError, match="config.json missing"):  # was raised only after VAE and CLIP loaded
        load_svd_components(str(tiny_svd_dir), checkpoint=str(tmp_path))


def test_checkpoint_unet_replaces_base(tmp_path, tiny_svd_dir):
    comps = load_svd_components(str(tiny_svd_dir))
    with torch.no_grad():
        comps.unet.propagation.fusion[-1].weight.fill_(0.01)
        comps.unet.unet.conv_in.bias.add_(1.0)
    comps.unet.save_pretrained(tmp_path / "ckpt")
    again = load_svd_components(str(tiny_svd_dir), checkpoint=str(tmp_path / "ckpt"))
    assert torch.equal(again.unet.unet.conv_in.bias, comps.unet.unet.conv_in.bias)
    assert torch.equal(again.unet.propagation.fusion[-1].weight, comps.unet.propagation.fusion[-1].weight)


def test_make_tiny_model_script_refuses_to_overwrite(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_model.py"
    (tmp_path / "x.txt").write_text("keep")
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "--overwrite" in res.stderr and (tmp_path / "x.txt").exists()


class _Shift(torch.nn.Module):
    """A toy propagation module: adds a learned per-channel shift (zero with identity_init) to every frame."""

    def __init__(self, channels: int, hidden=None, identity_init: bool = True) -> None:
        super().__init__()
        self.channels, self.identity_init = channels, identity_init
        self.shift = torch.nn.Parameter(torch.zeros(channels) if identity_init else torch.randn(channels))

    @property
    def config(self) -> dict:
        return dict(channels=self.channels, arch="shift", identity_init=self.identity_init)

    def forward(self, feats, masks, flows_fw, flows_bw):
        return feats + self.shift.view(1, 1, -1, 1, 1)


def test_a_registered_propagation_module_is_checked_built_saved_and_reloaded(tmp_path, tiny_svd_dir, monkeypatch):
    """The registry is the seam: a module added to PROPAGATION_MODULES is a valid model.propagation.arch, is what a plain
    SVD UNet gets, runs in the UNet's forward, and comes back from a saved folder."""
    from fffvdi.config import load_config
    from fffvdi.inpaint.checks import check_inference_config
    from fffvdi.inpaint.config import InferenceConfig
    from fffvdi.models.propagation import PROPAGATION_MODULES
    from fffvdi.models.unet import FFFVDIUNet

    overrides = ["method=fffvdi", "model.device=cpu", "model.propagation.arch=shift"]
    with pytest.raises(ConfigError, match="model.propagation.arch='shift' is unknown"):
        check_inference_config(load_config(InferenceConfig, None, overrides))
    monkeypatch.setitem(PROPAGATION_MODULES, "shift", _Shift)
    check_inference_config(load_config(InferenceConfig, None, overrides))  # accepted once registered
    unet = load_svd_components(str(tiny_svd_dir), propagation={"arch": "shift", "hidden": None,
                                                               "identity_init": False}).unet
    assert isinstance(unet.propagation, _Shift) and unet.propagation.shift.abs().sum() > 0
    seen = []
    unet.propagation.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    b, f, h, w = 1, 3, 4, 4
    unet(torch.randn(b, f, 8, h, w), torch.tensor([0.5]), torch.randn(b, 1, unet.config.cross_attention_dim),
         torch.tensor([[7.0, 127.0, 0.02]]), torch.zeros(b, f, 1, h, w), torch.zeros(b, f - 1, 2, h, w),
         torch.zeros(b, f - 1, 2, h, w))
    assert len(seen) == 1 and seen[0][:2] == (b, f)  # it ran on the conv_in features of every frame
    unet.save_pretrained(tmp_path / "unet")
    back = FFFVDIUNet.from_pretrained(tmp_path / "unet")
    assert isinstance(back.propagation, _Shift) and torch.equal(back.propagation.shift, unet.propagation.shift)
