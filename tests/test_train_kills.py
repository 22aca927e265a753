"""Training survives SIGKILL during checkpoint saves: `latest` always resumes, and the resumed run is exact.

A real process is killed (SIGKILL, nothing runs after it) at every stage of a save through the
FFFVDI_CRASH_AT hook, then at random moments while a `checkpoint-N.tmp/` exists. After each kill,
`resume_from_checkpoint=latest` must pick a complete checkpoint and continue; every loss any run
logs must equal the uninterrupted run's loss at that step, and the final weights must be identical.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import train_inputs
from fffvdi.train.checkpointing import CRASH_ENV, MARKER, checkpoint_step, list_checkpoints, resolve_resume

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 10
SCRIPTED = [  # (stage, step of the save killed, newest complete checkpoint expected afterwards)
    ("saving", 2, 1), ("staged", 2, 1), ("marked", 2, 1), ("renamed", 2, 2), ("pruning", 3, 3), ("staged", 4, 3),
]
RANDOM_KILLS = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_svd_dir):
    base = tmp_path_factory.mktemp("kills")
    return base, [*train_inputs(base, tiny_svd_dir, num_videos=2, num_frames=8), "data.num_frames=4", "optim.lr=1e-3",
                  "logging.every_steps=1", f"train.max_steps={MAX_STEPS}", "checkpoint.every_steps=1",
                  "checkpoint.total_limit=1"]


def _command(overrides: list[str], out: Path, resume: bool) -> list[str]:
    extra = ["checkpoint.resume_from_checkpoint=latest"] if resume else []
    return [sys.executable, str(ROOT / "scripts/train.py"), "--config", str(ROOT / "configs/train_tiny.yaml"),
            *overrides, f"checkpoint.output_dir={out}", *extra]


def _env(crash: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return env


def _losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "logs" / "metrics.jsonl").read_text().splitlines()
    return [(rec["step"], rec["loss"]) for rec in map(json.loads, lines)]


def _unet_state(folder: Path) -> dict:
    from fffvdi.models.unet import FFFVDIUNet

    return FFFVDIUNet.from_pretrained(folder).state_dict()


def _kill_when_saving(cmd: list[str], out: Path, rng: random.Random) -> bool:
    """Start a run, SIGKILL it a random moment after a staging folder appears; True if it was killed."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = set(p.name for p in out.glob("checkpoint-*.tmp"))
    while proc.poll() is None:
        if any(p.name not in seen for p in out.glob("checkpoint-*.tmp")):
            time.sleep(rng.uniform(0.0, 0.08))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return proc.returncode == -signal.SIGKILL
        time.sleep(0.002)
    return False


@pytest.mark.slow
def test_sigkill_during_saves_then_latest_resumes_exactly(inputs, tmp_path):
    base, overrides = inputs
    ref_out = tmp_path / "uninterrupted"
    ref = subprocess.run(_command(overrides, ref_out, False), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = dict(_losses(ref_out))
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))

    out, kills = tmp_path / "killed", 0
    for k, (stage, step, expect) in enumerate(SCRIPTED):
        proc = subprocess.run(_command(overrides, out, resume=k > 0), env=_env(f"{stage}:{step}"), cwd=ROOT,
                              capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, (stage, step, proc.stderr[-3000:])
        kills += 1
        latest = resolve_resume(out, "latest")
        assert latest is not None and latest.name == f"checkpoint-{expect}", (stage, step, latest)
        assert (latest / MARKER).is_file() and (latest / "unet" / "config.json").is_file()

    rng = random.Random(0)
    for _ in range(RANDOM_KILLS):
        before = resolve_resume(out, "latest")
        if _kill_when_saving(_command(overrides, out, resume=True), out, rng):
            kills += 1
            latest = resolve_resume(out, "latest")
            assert latest is not None and checkpoint_step(latest) >= checkpoint_step(before)
            assert all((p / MARKER).is_file() for p in list_checkpoints(out))

    final = subprocess.run(_command(overrides, out, resume=True), env=_env(), cwd=ROOT, capture_output=True,
                           text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    print(f"kills survived: {kills}")
    assert kills >= len(SCRIPTED) + 2

    # Every loss any run logged (re-done steps included) is the uninterrupted run's loss at that step.
    logged = _losses(out)
    assert {s for s, _ in logged} == set(reference)
    for step, loss in logged:
        assert loss == reference[step], (step, loss, reference[step])
    got, want = _unet_state(out / "unet"), _unet_state(ref_out / "unet")
    assert all(torch.equal(got[name], want[name]) for name in want)
    assert [p.name for p in list_checkpoints(out)] == [f"checkpoint-{MAX_STEPS}"]  # total_limit=1, nothing else
