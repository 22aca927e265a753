"""Training: which weights move, checkpoints and exact resume, output-dir safety, helpers, 2-process launch."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fffvdi.diffusion.conditioning import cfg_dropout
from fffvdi.errors import ConfigError, FFFVDIError, InputError
from fffvdi.train.checkpointing import (
    MARKER, incomplete_checkpoints, list_checkpoints, prepare_run_dir, prune_checkpoints, resolve_resume, staging_dir,
    write_folder,
)
from fffvdi.train.config import DEFAULT_TRAINABLE
from fffvdi.train.flows import clip_flows, flow_cache_key
from fffvdi.train.trainable import select_trainable

from conftest import reset_accelerate_state, train_inputs, train_tiny as _run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # in-process runs must not leak into each other


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_svd_dir):
    """Synthetic clips + a saved initial FFF-VDI UNet (deterministic propagation weights) + common overrides."""
    base = tmp_path_factory.mktemp("train")
    overrides = [*train_inputs(base, tiny_svd_dir, num_videos=3, num_frames=10, init_unet=True), "data.num_frames=6",
                 "optim.lr=1e-3", "optim.weight_decay=0.0"]
    return base, overrides


@pytest.fixture(scope="module")
def run_a(setup):
    """3 steps, checkpoint every 2, validation + TensorBoard at step 3."""
    base, overrides = setup
    torch.set_num_threads(1)
    result = _run(overrides, f"checkpoint.output_dir={base / 'a'}", "train.max_steps=3", "checkpoint.every_steps=2",
                  "validation.every_steps=3", "logging.report_to=tensorboard")
    reset_accelerate_state()
    return result


def _state(unet):
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_three_steps_move_exactly_the_trainable_weights(setup, run_a, tiny_svd_dir):
    from fffvdi.models.unet import FFFVDIUNet

    base, _ = setup
    assert run_a.first_step == 0 and run_a.global_step == 3 and sorted(run_a.losses) == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in run_a.losses.values())
    before, after = _state(FFFVDIUNet.from_pretrained(base / "init_unet")), _state(run_a.unet)
    assert before.keys() == after.keys()
    trainable = [k for k in before if any(p in k for p in DEFAULT_TRAINABLE)]
    frozen = [k for k in before if k not in trainable]
    assert len(trainable) > 50 and len(frozen) > 50
    unchanged = [k for k in trainable if torch.equal(before[k], after[k])]
    assert not unchanged, f"trainable weights did not move: {unchanged[:5]}"
    moved = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert not moved, f"frozen weights moved: {moved[:5]}"


def test_metrics_log_the_loss_and_the_mse_inside_and_outside_the_hole(setup, run_a):
    lines = [json.loads(line) for line in (setup[0] / "a" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line, step in zip(lines, (1, 2, 3)):
        assert line["loss"] == pytest.approx(run_a.losses[step], rel=1e-6)
        assert 0 < line["mse_hole"] < 1e3 and 0 < line["mse_known"] < 1e3 and line["mse_hole"] != line["mse_known"]


def test_step_log_means_over_micro_steps_and_logged_steps(tmp_path):
    """Two micro-steps make an optimizer step (their mean); a report averages the steps since the last one."""
    from omegaconf import OmegaConf

    from fffvdi.train.logs import StepLog

    class OneProcess:
        device, is_main_process = torch.device("cpu"), True

        def reduce(self, x, reduction):
            return x

        def log(self, logs, step):
            pass

    cfg = OmegaConf.create({"checkpoint": {"output_dir": str(tmp_path)}, "logging": {"every_steps": 2},
                            "train": {"gradient_accumulation_steps": 2, "max_steps": 3}})
    log = StepLog(OneProcess(), cfg)
    micro = [(1.0, 4.0, 1.0), (3.0, 8.0, 3.0), (2.0, 2.0, 0.0), (2.0, 4.0, 2.0), (5.0, 1.0, 1.0), (7.0, 3.0, 5.0)]
    losses = []
    for i, (loss, hole, known) in enumerate(micro):
        log.micro_step(loss, {"mse_hole": hole, "mse_known": known})
        if i % 2:
            losses.append(log.optimizer_step(i // 2 + 1, 1e-4, None))
    assert losses == [2.0, 2.0, 6.0]
    lines = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(d["step"], d["loss"], d["mse_hole"], d["mse_known"]) for d in lines] == [(2, 2.0, 4.5, 1.5), (3, 6.0, 2.0, 3.0)]


def test_run_folder_checkpoint_validation_and_final_unet(setup, run_a, tiny_svd_dir):
    from fffvdi.models.loading import load_svd_components

    out = setup[0] / "a"
    ckpt = out / "checkpoint-2"
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    for name in ("unet/config.json", "unet/propagation.safetensors", "config.yaml", "optimizer.bin", "scheduler.bin"):
        assert (ckpt / name).is_file(), name
    assert (out / "config.yaml").is_file() and "max_steps: 3" in (out / "config.yaml").read_text()
    assert (out / "validation" / "step-3.mp4").stat().st_size > 1000
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "logs").rglob("*"))
    # What scripts/inference.py --checkpoint loads equals the trained weights.
    loaded = load_svd_components(str(tiny_svd_dir), checkpoint=str(out / "unet")).unet.state_dict()
    trained = run_a.unet.state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k].cpu()) for k in trained)


def test_resume_restores_optimizer_state(setup, run_a):
    base, overrides = setup
    ckpt = base / "a" / "checkpoint-2"
    result = _run(overrides, f"checkpoint.output_dir={base / 'c'}", "train.max_steps=2",
                  f"checkpoint.resume_from_checkpoint={ckpt}")
    assert result.first_step == 2 and result.global_step == 2 and result.losses == {}
    saved = torch.load(ckpt / "optimizer.bin", weights_only=False)
    loaded = result.optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    assert saved["state"].keys() == loaded["state"].keys() and len(saved["state"]) > 50
    for idx, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(loaded["state"][idx][key].cpu(), value), (idx, key)


def test_resume_continues_at_step_3_like_the_uninterrupted_run(setup, run_a):
    base, overrides = setup
    out = base / "b"
    shutil.copytree(base / "a" / "checkpoint-2", out / "checkpoint-2")
    result = _run(overrides, f"checkpoint.output_dir={out}", "train.max_steps=3", "checkpoint.every_steps=2",
                  "checkpoint.resume_from_checkpoint=latest")
    assert result.first_step == 2 and sorted(result.losses) == [3]
    assert result.losses[3] == pytest.approx(run_a.losses[3], rel=1e-5)
    a, b = run_a.unet.state_dict(), result.unet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_ema_weights_are_saved_at_the_end(setup):
    """diffusers' EMA: decay 0 at step 1, then (1 + 1) / (10 + 1) at step 2; checkpoints hold the raw weights."""
    from fffvdi.models.unet import FFFVDIUNet

    base, overrides = setup
    out = base / "ema"
    result = _run(overrides, f"checkpoint.output_dir={out}", "train.max_steps=2", "checkpoint.every_steps=1",
                  "checkpoint.total_limit=null", "train.ema.enabled=true",
                  # also exercise the other paths: flows in the main process, filled CLIP image, hole weight, recompute
                  "flow.in_workers=false", "train.clip_source=filled", "train.mask_weight=2.0",
                  "train.gradient_checkpointing=true", "train.cond_latents=sample")
    w1, w2 = (_state(FFFVDIUNet.from_pretrained(out / f"checkpoint-{n}" / "unet")) for n in (1, 2))
    final = _state(FFFVDIUNet.from_pretrained(out / "unet"))
    d = 2.0 / 11.0
    moved = 0
    for k, v in final.items():
        assert torch.allclose(v, d * w1[k] + (1 - d) * w2[k], atol=1e-6), k
        moved += not torch.equal(w1[k], w2[k])
    assert moved > 50  # the oracle is not trivially met by unchanged weights
    assert all(torch.equal(result.unet.state_dict()[k].cpu(), final[k]) for k in final)


def test_refuses_to_overwrite_a_run_unless_asked(setup, run_a):
    base, overrides = setup
    with pytest.raises(InputError, match="already holds a run.*overwrite=true"):
        _run(overrides, f"checkpoint.output_dir={base / 'a'}")
    # Helper level: overwrite clears old checkpoints (no model load needed).
    d = base / "scratch"
    (d / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(InputError):
        prepare_run_dir(d, resuming=False, overwrite=False)
    prepare_run_dir(d, resuming=True, overwrite=False)
    assert (d / "checkpoint-5").is_dir()
    prepare_run_dir(d, resuming=False, overwrite=True)
    assert list_checkpoints(d) == []


def test_bad_config_values_fail_before_training(setup):
    base, overrides = setup
    with pytest.raises(ConfigError, match="drop_both"):
        _run(overrides, f"checkpoint.output_dir={base / 'bad'}", "train.drop_both=0.9")
    with pytest.raises(ConfigError, match="clip_source"):
        _run(overrides, f"checkpoint.output_dir={base / 'bad'}", "train.clip_source=first")
    with pytest.raises(ConfigError, match="multiples of 64"):
        _run(overrides, f"checkpoint.output_dir={base / 'bad'}", "data.size=[60,64]")
    assert not (base / "bad").exists()


def test_bad_paths_and_ranges_fail_before_anything_is_written(setup, tmp_path, monkeypatch):
    import fffvdi.train.setup as train_setup

    base, overrides = setup
    out = tmp_path / "never"
    monkeypatch.setattr(train_setup, "load_svd_components", lambda *a, **k: pytest.fail("model loaded before the checks"))
    cases = [("data.root=/nonexistent/ytvos", r"data.root='/nonexistent/ytvos': not found.*\(set on the command line\)"),
             ("checkpoint.total_limit=0", "total_limit"), ("train.vae_chunk_size=0", "vae_chunk_size"),
             ("optim.lr_scheduler=cosinee", "lr_scheduler"), ("validation.mask=/nope", "validation.video and"),
             ("flow.method=farneback", "flow.method"), ("model.checkpoint=/nope/unet", "model.checkpoint"),
             ("data.samples_per_epoch=0", "samples_per_epoch")]
    for override, message in cases:
        with pytest.raises(FFFVDIError, match=message):
            _run(overrides, f"checkpoint.output_dir={out}", override)
        assert not out.exists(), override
    with pytest.raises(InputError, match="fewer than train.batch_size"):
        _run(overrides, f"checkpoint.output_dir={out}", "train.batch_size=64")
    assert not out.exists()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if not os.access(locked, os.W_OK):  # root ignores permissions
        with pytest.raises(ConfigError, match="not a writable folder"):
            _run(overrides, f"checkpoint.output_dir={locked / 'run'}")


def test_a_damaged_checkpoint_is_named_not_a_traceback(setup, run_a, tmp_path):
    base, overrides = setup
    out = tmp_path / "damaged"
    shutil.copytree(base / "a" / "checkpoint-2", out / "checkpoint-2")
    (out / "checkpoint-2" / "optimizer.bin").write_bytes(b"")  # a kill mid-write under the old, non-atomic save
    with pytest.raises(InputError, match=r"cannot load checkpoint .*checkpoint-2.*damaged"):
        _run(overrides, f"checkpoint.output_dir={out}", "checkpoint.resume_from_checkpoint=latest",
             "train.max_steps=3")


def test_8bit_adam_without_bitsandbytes_is_a_config_error():
    from omegaconf import OmegaConf

    from fffvdi.train.setup import build_optimizer

    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    o = OmegaConf.create(dict(name="adamw8bit", lr=1e-5, betas=[0.9, 0.999], weight_decay=0.0, eps=1e-8))
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], o)
    with pytest.raises(ConfigError, match="optim.name=adamw8bit"):  # the old key names its replacement
        build_optimizer([torch.nn.Parameter(torch.zeros(2))], OmegaConf.merge(o, {"name": "adamw",
                                                                                  "use_8bit_adam": True}))


def test_select_trainable_by_name_pattern():
    net = torch.nn.ModuleDict({"propagation": torch.nn.Linear(2, 2), "spatial": torch.nn.Linear(2, 2)})
    params = select_trainable(net, ["propagation."])
    assert params == list(net["propagation"].parameters())
    assert all(not p.requires_grad for p in net["spatial"].parameters())
    with pytest.raises(ConfigError, match="temporal_typo"):
        select_trainable(net, ["propagation.", "temporal_typo"])


def test_cfg_dropout_exclusive_events():
    u = (torch.arange(1000) + 0.5) / 1000  # evenly spread draws in [0, 1)
    drop_e, drop_l = cfg_dropout(u, p_embeds=0.15, p_latents=0.05, p_both=0.1)
    assert (drop_e & drop_l).float().mean() == pytest.approx(0.10)
    assert drop_e.float().mean() == pytest.approx(0.25)
    assert drop_l.float().mean() == pytest.approx(0.15)
    assert (drop_e | drop_l).float().mean() == pytest.approx(0.30)


def test_checkpoint_pruning_and_latest(tmp_path):
    for n in (10, 2, 30, 40):
        (tmp_path / f"checkpoint-{n}").mkdir()
        if n != 40:
            (tmp_path / f"checkpoint-{n}" / MARKER).write_text("{}")
    (tmp_path / "checkpoint-50.tmp").mkdir()  # an interrupted save
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name: ignored
    assert resolve_resume(tmp_path, "latest").name == "checkpoint-30"  # newest *complete*
    assert [p.name for p in incomplete_checkpoints(tmp_path)] == ["checkpoint-40", "checkpoint-50.tmp"]
    assert resolve_resume(tmp_path / "empty", "latest") is None
    with pytest.raises(InputError, match="checkpoint-40 is incomplete"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-40"))
    removed = prune_checkpoints(tmp_path, total_limit=2, keep=tmp_path / "checkpoint-30")
    assert [p.name for p in removed] == ["checkpoint-2"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10", "checkpoint-30"]
    # The checkpoint just saved stays even when older-numbered: a run resumed from an early checkpoint.
    removed = prune_checkpoints(tmp_path, total_limit=1, keep=tmp_path / "checkpoint-10")
    assert [p.name for p in removed] == ["checkpoint-30"]
    assert (tmp_path / "checkpoint-40").is_dir() and (tmp_path / "checkpoint-50.tmp").is_dir()  # never touched
    with pytest.raises(InputError, match="not a checkpoint folder"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-x"))


def test_flow_cache_reads_back_and_separates_flipped_clips(tmp_path):
    calls = []

    def estimator(frames):  # [1, F, 3, H, W] in [0, 1]: a known "flow" = mean colour per pair
        calls.append(1)
        f = frames.shape[1]
        fw = frames[:, 1:, :2] - frames[:, :-1, :2]
        return fw, -fw[:, :f - 1]

    frames = torch.rand(4, 3, 8, 8) * 2 - 1
    key = flow_cache_key(frames, "vid", 3, 1)
    fw, bw = clip_flows(frames, key, estimator, str(tmp_path))
    fw2, bw2 = clip_flows(frames, key, estimator, str(tmp_path))
    assert len(calls) == 1 and (tmp_path / f"{key}.pt").is_file()
    assert torch.allclose(fw2, fw, atol=2e-3) and torch.allclose(bw2, bw, atol=2e-3)  # stored as float16
    assert flow_cache_key(frames.flip(-1), "vid", 3, 1) != key
    assert flow_cache_key(frames.flip(0), "vid", 3, 1) != key


@pytest.mark.slow
def test_two_process_ddp_on_cpu(setup, tmp_path):
    """Real 2-process DDP over gloo through accelerate. accelerate 1.15's `launch --cpu` starts one process unless
    mpirun is set up; `launch --multi_gpu` on a machine without GPUs starts N CPU processes (MULTI_CPU)."""
    base, overrides = setup
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531",
           str(ROOT / "scripts/train.py"), "--config", str(ROOT / "configs/train_tiny.yaml"), *overrides,
           f"checkpoint.output_dir={out}", "train.max_steps=2", "checkpoint.every_steps=2", "validation.every_steps=2",
           "data.samples_per_epoch=4"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr, proc.stderr[-4000:]
    assert "weights agree across 2 processes" in proc.stderr, proc.stderr[-4000:]  # the gradient all-reduce works
    assert (out / "unet" / "propagation.safetensors").is_file()
    assert (out / "checkpoint-2" / "unet" / "config.json").is_file()
    assert (out / "validation" / "step-2.mp4").is_file()
    # Same batches in one process accumulating 2 micro-steps per step: the same weights (DDP averages gradients).
    from fffvdi.models.unet import FFFVDIUNet

    single = _run(overrides, f"checkpoint.output_dir={tmp_path / 'single'}", "train.max_steps=2",
                  "train.gradient_accumulation_steps=2", "checkpoint.every_steps=0", "data.samples_per_epoch=4")
    ddp = _state(FFFVDIUNet.from_pretrained(out / "unet"))
    one = _state(single.unet)
    init = _state(FFFVDIUNet.from_pretrained(base / "init_unet"))
    moved = [k for k in ddp if not torch.equal(ddp[k], init[k])]
    assert moved
    for k in moved:
        torch.testing.assert_close(ddp[k], one[k], atol=1e-5, rtol=1e-4)


def test_write_folder_replaces_the_old_folder_and_a_stale_staging_one(tmp_path):
    dst = tmp_path / "unet"
    dst.mkdir()
    (dst / "old.bin").write_text("old")
    (tmp_path / "unet.tmp").mkdir()
    (tmp_path / "unet.tmp" / "stale.bin").write_text("stale")  # left by a killed write

    def write(folder):
        folder.mkdir()
        (folder / "new.bin").write_text("new")

    assert write_folder(dst, write) == dst
    assert sorted(p.name for p in dst.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet"]


def test_staging_dir_clears_a_stale_save_of_the_same_step_on_the_main_process_only(tmp_path):
    stale = tmp_path / "checkpoint-4.tmp"
    stale.mkdir()
    (stale / "half.bin").write_text("x")  # left by a save killed halfway
    assert staging_dir(tmp_path, 4, clear=False) == stale and (stale / "half.bin").exists()
    assert staging_dir(tmp_path, 4) == stale and not stale.exists()
