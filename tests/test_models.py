"""Tiny SVD folder round trip and component loading, offline."""
import json

import pytest
import torch

from fffvdi.errors import ModelLoadError
from fffvdi.models.loading import load_svd_components, resolve_dtype


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


def test_hub_unreachable_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="model.pretrained=DIR"):
        load_svd_components("someorg/not-cached-svd")


def test_local_folder_errors(tmp_path, tiny_svd_dir):
    with pytest.raises(ModelLoadError, match="not found"):
        load_svd_components(str(tmp_path / "missing"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="vae"):
        load_svd_components(str(tmp_path / "half"))
    with pytest.raises(ModelLoadError, match="config.json"):
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
