"""scripts/gpu_check.py runs every code path on CPU with the tiny model, so it is ready the day a GPU is at hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def run_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_gpu_check_tiny_on_cpu_writes_every_row(tmp_path):
    proc = run_check("--device", "cpu", "--tiny", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(r["section"], r["name"]): r for r in report["rows"]}
    assert report["preset"] == "tiny" and "machine" in report and "versions" in report
    assert not [r for r in rows.values() if "error" in r]

    # DNA: both module layouts (light per memory.compile setting), the UNet with and without the module, no host sync.
    for arch, target in (("light", "none"), ("light", "module"), ("light", "unet"), ("official", "none")):
        dna = rows[("dna", f"unet_step_{arch}_128x64x4_float32_{target}")]
        assert dna["fffvdi_s"] > 0 and dna["plain_s"] > 0 and dna["module_params_m"] > 0 and dna["compile"] == target
        ratio = 100 * (dna["fffvdi_s"] / dna["plain_s"] - 1)
        assert dna["overhead_pct"] == pytest.approx(ratio, abs=0.5)  # 4-digit rounding
        assert dna["host_syncs"] == 0

    # Inference: s/step from two step counts, extrapolated to 25 steps, per memory.compile setting.
    for target in ("none", "module", "unet"):
        inf = rows[("inference", f"window_128x64x4_float32_{target}")]
        assert inf["s_per_step"] > 0 and inf["window_s_25_steps"] > inf["s_per_step"] * 20 and inf["first_run_s"] > 0
        assert inf["s_per_frame_25_steps"] == pytest.approx(inf["window_s_25_steps"] / 4, rel=1e-3)

    # Training: one row per configuration; LoRA trains fewer weights than full fine-tuning.
    full, lora = rows[("train", "full_light")], rows[("train", "lora16_light")]
    assert rows[("train", "full_official")]["s_per_step"] > 0 and full["s_per_step"] > 0 and lora["s_per_step"] > 0
    assert 0 < lora["trainable_params_m"] < full["trainable_params_m"]
    assert "CUDA" in rows[("train", "lora16_adamw8bit_light")]["skipped"]  # 8-bit kernels need a GPU

    table = (tmp_path / "gpu_check.md").read_text()
    assert table.startswith("| section | row | values |") and "lora16_light" in table


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_check("--device", "cuda", "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda but no CUDA device")
    assert not any(tmp_path.iterdir())  # nothing written


def test_gpu_check_rejects_an_unknown_section(tmp_path):
    proc = run_check("--device", "cpu", "--tiny", "--only", "dna,speed", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown section(s) ['speed']" in proc.stderr
    proc = run_check("--device", "cpu", "--tiny", "--compile", "none,graphs", "--out", str(tmp_path))
    assert proc.returncode == 2 and "unknown setting(s) ['graphs']" in proc.stderr
