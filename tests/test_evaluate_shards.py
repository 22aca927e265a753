"""scripts/evaluate.py over several processes (accelerate launch): videos sharded by rank, merged by the main process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fffvdi.errors import FFFVDIError, InputError
from fffvdi.shards import agree, all_gather, rank_device, shard
from test_evaluate import _cli_main, _csv  # the same CLI loader and CSV reader

ROOT = Path(__file__).resolve().parents[1]
H, W, F, VIDEOS = 72, 128, 6, 4  # SSIM's 65-pixel window needs sides >= 65


@pytest.fixture(autouse=True)
def _fresh_partial_state():
    """run_evaluation creates accelerate's PartialState singleton: reset it so it never leaks into other tests."""
    from accelerate import PartialState

    yield
    PartialState._reset_state()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 scripts/evaluate.py ARGS`: 2 CPU processes over gloo."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(ROOT / "scripts" / "evaluate.py"), *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def _errors(stderr: str) -> list[str]:
    """The `error: ...` lines the processes printed (the launcher's own log lines are not of this form)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from fffvdi.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("shards") / "ds"
    make_synthetic_dataset(root, VIDEOS, F, (H, W), seed=5, num_short=0, layout="eval")
    return root


def test_shard_and_devices():
    videos = [f"v{i}" for i in range(5)]
    parts = [shard(videos, r, 2) for r in range(2)]
    assert parts == [["v0", "v2", "v4"], ["v1", "v3"]]  # video i -> process i % N, listing order kept
    assert shard(videos, 0, 1) == videos
    one = SimpleNamespace(num_processes=1, device=torch.device("cpu"))
    two = SimpleNamespace(num_processes=2, device=torch.device("cuda", 1))
    assert rank_device("cpu", two) == "cpu" and rank_device("cuda:0", two) == "cuda:0"  # explicit: as given
    assert rank_device("auto", two) == "cuda:1" and rank_device("cuda", two) == "cuda:1"  # this process's own GPU
    assert rank_device("auto", one) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all_gather(one, {"a": 1}) == [{"a": 1}]
    from fffvdi.config import load_config
    from fffvdi.evaluation.harness import _rank_config
    from fffvdi.inpaint.config import InferenceConfig

    cfg = load_config(InferenceConfig, None, ["method=fffvdi", "model.device=auto"])
    assert _rank_config(cfg, one) is cfg
    mine = _rank_config(cfg, two)  # the method's model goes to this process's GPU; the fingerprint's config is kept
    assert mine.model.device == "cuda:1" and cfg.model.device == "auto"
    agree(one, None)
    err = InputError("bad")
    with pytest.raises(InputError) as info:  # one process: exactly the error it caught
        agree(one, err)
    assert info.value is err


@pytest.mark.slow
def test_two_processes_match_one_process(dataset, tmp_path, capsys):
    """2 CPU processes (gloo) split the 4 videos 2 + 2 and the merge gives the 1-process numbers."""
    common = ["--dataset-root", str(dataset), "--size", "native", "--method", "telea", "--no-lpips", "--no-progress"]
    two, one = tmp_path / "two", tmp_path / "one"
    proc = _launch(*common, "--output", str(two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("4 evaluated, 0 rescored, 0 skipped") == 1, proc.stdout  # only the main process reports
    assert proc.stderr.count("warning: LPIPS skipped") == 1, proc.stderr[-3000:]
    assert _cli_main()([*common, "--output", str(one)]) == 0
    capsys.readouterr()

    videos = [f"synth_{i:03d}" for i in range(VIDEOS)]
    for i, video in enumerate(videos):  # each video scored once, by process i % 2
        assert json.loads((two / "videos" / f"{video}.json").read_text())["rank"] == i % 2
        assert json.loads((one / "videos" / f"{video}.json").read_text())["rank"] == 0
        assert len(list((two / "results" / video).glob("*.png"))) == F
    rows2, rows1 = _csv(two / "per_video.csv"), _csv(one / "per_video.csv")
    assert [r["video"] for r in rows2] == videos and all(r["status"] == "evaluated" for r in rows2)
    timing = {"sec_per_frame"}  # wall-clock, the only column that may differ
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows2] == \
           [{k: v for k, v in r.items() if k not in timing} for r in rows1]
    assert _csv(two / "per_frame.csv") == _csv(one / "per_frame.csv")
    s2, s1 = (json.loads((d / "summary.json").read_text()) for d in (two, one))
    m2, m1 = ({k: v for k, v in s["metrics"].items() if k not in timing} for s in (s2, s1))
    assert m2 == m1 and m2["videos"] == VIDEOS and m2["frames"] == VIDEOS * F
    assert s2["run_counts"] == s1["run_counts"] == {"evaluated": VIDEOS, "rescored": 0, "skipped": 0}
    assert s2["processes"] == 2 and s1["processes"] == 1 and s2["videos"] == s1["videos"] == videos
    assert s2["config"]["run"] == s1["config"]["run"]
    assert json.loads((two / "run.json").read_text()) == json.loads((one / "run.json").read_text())

    # One process resumes the 2-process run: every video skipped, same numbers.
    assert _cli_main()([*common, "--output", str(two)]) == 0
    assert "0 evaluated, 0 rescored, 4 skipped" in capsys.readouterr().out
    again = json.loads((two / "summary.json").read_text())
    assert {k: v for k, v in again["metrics"].items()} == s2["metrics"]


@pytest.mark.slow
def test_two_processes_fail_alike_before_writing(dataset, tmp_path):
    """Bad input: both processes print the same one-line error and nothing is written."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    proc = _launch("--dataset-root", str(dataset), "--size", "native", "--method", "telea", "--no-lpips",
                   "--no-progress", "--output", str(busy))
    assert proc.returncode != 0
    lines = _errors(proc.stderr)
    assert len(lines) == 2 and lines[0] == lines[1], proc.stderr[-3000:]
    assert "is not empty and holds no evaluation run" in lines[0]
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


def test_error_on_one_process_reaches_all(monkeypatch):
    """`agree` with several processes: the lowest failing rank's message is raised everywhere, marked collective."""
    two = SimpleNamespace(num_processes=2)
    gathered = [None, "bad on rank 1"]
    monkeypatch.setattr(torch.distributed, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), gathered))
    with pytest.raises(FFFVDIError, match="^bad on rank 1$") as info:
        agree(two, None)
    assert info.value.collective
    gathered = ["bad on rank 0", "bad on rank 1"]
    mine = InputError("bad on rank 0")
    with pytest.raises(InputError) as info:  # the failing rank whose message wins raises its own error
        agree(two, mine)
    assert info.value is mine and mine.collective
    gathered = [None, None]
    agree(two, None)


@pytest.mark.slow
def test_a_video_failing_on_one_process_fails_all(dataset, tmp_path):
    """A video error on process 1 (its results are missing) reaches process 0 at the barrier: both report it,
    no summary is written, and the videos that finished keep their records for a resume."""
    import shutil

    results = tmp_path / "res"
    for video in ("synth_000", "synth_002", "synth_003"):  # synth_001 (process 1) has none
        shutil.copytree(dataset / "JPEGImages" / video, results / video)
    out = tmp_path / "out"
    proc = _launch("--dataset-root", str(dataset), "--size", "native", "--results", str(results), "--no-lpips",
                   "--no-progress", "--output", str(out))
    assert proc.returncode != 0
    lines = _errors(proc.stderr)
    assert len(lines) == 2 and lines[0] == lines[1] and "no results for video 'synth_001'" in lines[0], proc.stderr[-3000:]
    assert not (out / "summary.json").exists()
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["synth_000.json", "synth_002.json"]
