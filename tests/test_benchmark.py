"""Smoke tests of the benchmark: helpers count runs and see memory, the smallest sections write the JSON schema."""
import json
import time

import numpy as np
import pytest
import torch

from conftest import load_script
from fffvdi.bench import measure as bm
from fffvdi.bench import presets



@pytest.fixture(scope="module")
def bench():
    """scripts/benchmark.py imported as a module."""
    return load_script("benchmark")


def test_time_interleaved_counts_warmup_and_repeats():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
            time.sleep(0.002)
        return fn

    out = bm.time_interleaved({"a": make("a"), "b": make("b")}, repeats=3, warmup=2)
    assert calls == {"a": 5, "b": 5}  # warm-up runs happen but are not timed
    assert [len(t.runs_s) for t in out.values()] == [3, 3]
    assert all(t.min_s >= 0.002 and t.min_s <= t.median_s for t in out.values())
    with pytest.raises(ValueError):
        bm.time_fn(lambda: None, repeats=0)


def test_rss_sampler_sees_an_allocation():
    with bm.RSSSampler(interval_s=0.005) as rss:
        base = bm.current_rss_mb()
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, pages touched by the fill
        time.sleep(0.05)
        del block
    assert rss.peak_mb >= base + 48
    assert bm.process_peak_rss_mb() >= rss.peak_mb * 0.9


def test_synthetic_video_is_lazy_and_consistent():
    video = presets.SyntheticVideo(200, 32, 48, seed=3)
    frames, masks = video.read_frames(10, 14), video.read_masks(10, 14)
    assert frames.shape == (4, 32, 48, 3) and frames.dtype == np.uint8
    assert masks.shape == (4, 32, 48) and set(np.unique(masks)) == {0, 1}
    np.testing.assert_array_equal(video.read_frames(12, 13)[0], frames[2])  # same frame whatever the window
    assert masks[0].sum() == (32 // 4) * (48 // 4)  # a quarter of each side
    assert not np.array_equal(masks[0], masks[1])  # it moves


def test_parse_args_rejects_bad_input(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "unet_step,nope"])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--cases", "25x64"])
    args = bench.parse_args(["--preset", "svd-xt"])
    assert args.sections == ["unet_step"] and args.frames == 4  # the CPU default stays a single small step


def test_smallest_sections_write_json(bench, tmp_path):
    out = tmp_path / "bench.json"
    rc = bench.main([
        "--only", "unet_step,data_loader", "--frames", "2", "--clip-frames", "2", "--height", "64", "--width", "64",
        "--data-clips", "2", "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    assert {"settings", "machine", "versions", "git", "results", "notes"} <= set(data)
    assert data["machine"]["logical_cores"] >= 1 and data["versions"]["torch"] == torch.__version__
    unet = data["results"]["unet_step"]
    for name in ("fffvdi_unet", "plain_svd_unet", "dna_module_alone"):
        assert unet[name]["unit"] == "ms" and unet[name]["value"] > 0 and unet[name]["runs"] == 1
    assert unet["propagation_overhead"]["unit"] == "%" and isinstance(unet["propagation_overhead"]["value"], float)
    assert unet["dna_params"]["value"] > 0
    loader = data["results"]["data_loader"]["clips_per_s"]
    assert loader["unit"] == "clips/s" and loader["value"] > 0 and loader["frames"] == 2


def test_inference_case_runs_windows_and_reports_memory(bench):
    spec = dict(preset="tiny", device="cpu", dtype="float32", total=8, height=64, width=64, window=5, overlap=4,
                chunk=4, steps=1, repeats=1, input_size=None)
    res = bench.run_case(spec)
    assert res["windows"] == 4 and res["runs"] == 1  # windows [0,5) [1,6) [2,7) [3,8)
    assert res["s_per_frame"] > 0 and res["peak_rss_process_mb"] >= res["peak_rss_run_mb"] * 0.9 > 0
    assert res["cuda_peak_mb"] is None


def test_crop_section_compares_regions(bench, tmp_path):
    out = tmp_path / "crop.json"
    rc = bench.main(["--only", "crop", "--crop-case", "6x64x64", "--crop-input", "216x384", "--steps", "1",
                     "--window", "5", "--threads", "1", "--out", str(out)])
    assert rc == 0
    crop = json.loads(out.read_text())["results"]["crop"]
    assert crop["full_time"]["value"] > 0 and crop["crop_time"]["value"] > 0
    assert crop["crop_time"]["input"] == "216x384" and crop["crop_peak"]["value"] > 0
    assert crop["full_pipeline_input"]["hw"] == [216, 384]  # full: whole frames; crop: the masks' region only
    assert crop["crop_pipeline_input"]["value"] < crop["full_pipeline_input"]["value"]
    assert crop["crop_speedup"]["value"] == pytest.approx(crop["full_time"]["value"] / crop["crop_time"]["value"], rel=0.01)


def test_train_step_updates_exactly_the_trainable_weights():
    from fffvdi.bench.model import train_step
    from fffvdi.train.config import DEFAULT_TRAINABLE
    from fffvdi.train.trainable import select_trainable

    unet = presets.build_components("tiny", torch.device("cpu"), torch.float32, parts=("unet",)).unet
    params = select_trainable(unet, DEFAULT_TRAINABLE)
    unet.train()
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    train_step(unet, torch.optim.AdamW(params, lr=1e-3), 2, 8, 8, torch.device("cpu"))()
    moved = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert moved and moved <= trainable and any(n.startswith("propagation.") for n in moved)
