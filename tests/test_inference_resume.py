"""Atomic, resumable inference output: a run writes OUT.partial/, only a finished run becomes OUT, and --resume
continues an interrupted run to the same frames, bit for bit, as a run that was never interrupted."""
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import load_script
from synthetic_video import translating_frames

ROOT = Path(__file__).resolve().parents[1]
CLI = load_script("inference")


@pytest.fixture
def clip(tmp_path):
    """12 frames of a panning texture with a moving box hole, as PNG folders."""
    frames = translating_frames((2, 1), 12)
    (tmp_path / "in" / "frames").mkdir(parents=True)
    (tmp_path / "in" / "masks").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / "in" / "frames" / f"{i:05d}.png"), f[..., ::-1])
        m = np.zeros(f.shape[:2], np.uint8)
        m[20:40, 20 + 3 * i : 44 + 3 * i] = 255
        cv2.imwrite(str(tmp_path / "in" / "masks" / f"{i:05d}.png"), m)
    return ["--video", str(tmp_path / "in" / "frames"), "--mask", str(tmp_path / "in" / "masks")]


def read_pngs(folder: Path) -> dict:
    return {p.name: cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))}


def interrupt_writes(monkeypatch, after: int, error=KeyboardInterrupt) -> None:
    """The output writer raises `error` at its call number `after + 1` (a Ctrl-C or failure mid-run)."""
    from fffvdi.io.output import VideoWriter

    real, calls = VideoWriter.write, []

    def write(self, frames, names):
        calls.append(len(frames))
        if len(calls) > after:
            raise error
        real(self, frames, names)

    monkeypatch.setattr(VideoWriter, "write", write)


TELEA = ["--method", "telea", "window.num_frames=4", "window.overlap=2"]


def test_interrupted_run_leaves_only_a_partial_folder_and_resumes_bit_exact(tmp_path, clip, monkeypatch, capsys):
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "ref")]) == 0
    out, partial = tmp_path / "out", tmp_path / "out.partial"
    with monkeypatch.context() as m:
        interrupt_writes(m, after=2)  # windows [0,4) and [2,6) wrote frames 0-3; Ctrl-C in the third
        assert CLI.main([*clip, *TELEA, "--output", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; unfinished output kept in {partial}: rerun with --resume" in err
    assert not out.exists()  # nothing named OUT looks complete
    assert sorted(p.name for p in partial.iterdir()) == ["config.yaml", "frames", "progress.npz", "run.json"]
    assert sorted(read_pngs(partial / "frames")) == ["00000.png", "00001.png", "00002.png", "00003.png"]

    assert CLI.main([*clip, *TELEA, "--output", str(out)]) == 2  # never silently deleted nor reused
    err = capsys.readouterr().err.strip()
    assert str(partial) in err and "--resume" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert CLI.main([*clip, *TELEA, "--output", str(out), "--resume", "window.overlap=1"]) == 2
    assert "window.overlap=2, now 1" in capsys.readouterr().err

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert CLI.main([*clip, *TELEA, "--output", str(out), "--resume"]) == 0
    # the frames written before the interruption are this run's own, not stale PNGs of another run
    assert not [w for w in caught if "not written by this run" in str(w.message)]
    ref, got = read_pngs(tmp_path / "ref" / "frames"), read_pngs(out / "frames")
    assert sorted(got) == sorted(ref) and all(np.array_equal(ref[k], got[k]) for k in ref)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert not partial.exists()
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(out / "inpainted.mp4"))
    next(reader)
    assert sum(1 for _ in reader) == 12  # rebuilt from all PNGs, not just the resumed part


@pytest.mark.filterwarnings("ignore:no model.checkpoint")  # the base UNet
def test_resumed_diffusion_draws_the_same_noise(tmp_path, clip, monkeypatch, tiny_svd_dir):
    """The random generator's state is saved per window: a resumed run samples exactly as an uninterrupted one."""
    args = [*clip, "--config", str(ROOT / "configs" / "inference_tiny.yaml"), f"model.pretrained={tiny_svd_dir}",
            "sampling.num_steps=2", "window.height=64", "window.width=64", "window.num_frames=5", "window.overlap=1",
            "output.save_comparison=false", "output.save_masked_input=false"]
    assert CLI.main([*args, "--output", str(tmp_path / "ref")]) == 0
    with monkeypatch.context() as m:
        interrupt_writes(m, after=1)
        assert CLI.main([*args, "--output", str(tmp_path / "out")]) == 130
    assert len(read_pngs(tmp_path / "out.partial" / "frames")) == 4
    assert CLI.main([*args, "--output", str(tmp_path / "out"), "--resume"]) == 0
    ref, got = read_pngs(tmp_path / "ref" / "frames"), read_pngs(tmp_path / "out" / "frames")
    assert len(got) == 12 and all(np.array_equal(ref[k], got[k]) for k in ref)
    assert CLI.main([*args, "--output", str(tmp_path / "other"), "sampling.seed=1"]) == 0
    other = read_pngs(tmp_path / "other" / "frames")
    assert any(not np.array_equal(ref[k], other[k]) for k in ref)  # the frames do depend on the draws


def test_propagate_resume_starts_over_and_says_so(tmp_path, clip, monkeypatch, caplog):
    args = [*clip, "--method", "propagate", "--output", str(tmp_path / "out")]
    with monkeypatch.context() as m:
        interrupt_writes(m, after=3)
        assert CLI.main(args) == 130
    assert len(read_pngs(tmp_path / "out.partial" / "frames")) == 3
    assert CLI.main(args + ["--resume"]) == 0
    assert "cannot resume; starting" in caplog.text and "from frame 0" in caplog.text
    assert CLI.main([*clip, "--method", "propagate", "--output", str(tmp_path / "ref")]) == 0
    ref, got = read_pngs(tmp_path / "ref" / "frames"), read_pngs(tmp_path / "out" / "frames")
    assert len(got) == 12 and all(np.array_equal(ref[k], got[k]) for k in ref)


def test_overwrite_replaces_a_partial_folder(tmp_path, clip, monkeypatch):
    with monkeypatch.context() as m:
        interrupt_writes(m, after=1)
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 130
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "--overwrite", "window.overlap=1"]) == 0
    assert len(read_pngs(tmp_path / "out" / "frames")) == 12 and not (tmp_path / "out.partial").exists()
    assert "overlap: 1" in (tmp_path / "out" / "config.yaml").read_text()


def test_failed_start_leaves_nothing_behind(tmp_path, clip, monkeypatch, capsys):
    import fffvdi.inpaint.methods
    from fffvdi.errors import ModelLoadError

    def broken(cfg):
        raise ModelLoadError("cannot load the model from /nowhere; check model.pretrained")

    with monkeypatch.context() as m:
        m.setattr(fffvdi.inpaint.methods, "build_method", broken)
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "--resume" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 0  # no stub blocks the rerun


def test_corrupt_frame_mid_run_keeps_the_partial_output_for_resume(tmp_path, clip, capsys):
    frames_dir = Path(clip[1])
    good = (frames_dir / "00009.png").read_bytes()
    (frames_dir / "00009.png").write_bytes(good[: len(good) // 2])  # header intact: found when decoded
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot read image") and "00009.png" in err and "--resume" in err
    assert len(read_pngs(tmp_path / "out.partial" / "frames")) >= 4
    (frames_dir / "00009.png").write_bytes(good)
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "--resume"]) == 0
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "ref")]) == 0
    ref, got = read_pngs(tmp_path / "ref" / "frames"), read_pngs(tmp_path / "out" / "frames")
    assert len(got) == 12 and all(np.array_equal(ref[k], got[k]) for k in ref)


def test_full_disk_is_one_line_and_resumable(tmp_path, clip, monkeypatch, capsys):
    import fffvdi.io.output as output

    real, calls = output.cv2.imwrite, []

    def imwrite(path, img, *a):
        calls.append(path)
        return len(calls) <= 5 and real(path, img, *a)  # the 6th PNG finds the disk full

    with monkeypatch.context() as m:
        m.setattr(output.cv2, "imwrite", imwrite)
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot write") and "space" in err and "--resume" in err
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "--resume"]) == 0
    assert len(read_pngs(tmp_path / "out" / "frames")) == 12


def test_missing_finished_frame_refuses_resume(tmp_path, clip, monkeypatch, capsys):
    with monkeypatch.context() as m:
        interrupt_writes(m, after=2)
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 130
    (tmp_path / "out.partial" / "frames" / "00001.png").unlink()
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "--resume"]) == 2
    assert "lacks 00001.png" in capsys.readouterr().err


def test_unwritable_output_is_refused_before_work(tmp_path, clip, monkeypatch, capsys):
    import fffvdi.inpaint.partial as partial

    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out")]) == 0
    before = read_pngs(tmp_path / "out" / "frames")
    monkeypatch.setattr(partial.os, "access", lambda path, mode: False)  # as if read-only (root ignores modes)
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "--overwrite"]) == 2
    assert f"output folder {tmp_path / 'out'} is read-only" in capsys.readouterr().err
    assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "new" / "out")]) == 2
    assert f"cannot write output {tmp_path / 'new' / 'out'}: {tmp_path} is read-only" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and read_pngs(tmp_path / "out" / "frames").keys() == before.keys()


def test_failure_while_encoding_resumes_without_recomputing(tmp_path, clip, monkeypatch, capsys):
    import fffvdi.io.output as output
    import fffvdi.inpaint.methods

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out.partial" / "comparison.mp4"))

    with monkeypatch.context() as m:
        m.setattr(output, "encode_outputs", no_space)
        m.setattr("fffvdi.io.encode_outputs", no_space)
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "output.save_frames=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot write" in err and "comparison.mp4" in err and "No space left on device" in err
    assert len(read_pngs(tmp_path / "out.partial" / "frames")) == 12
    with monkeypatch.context() as m:
        m.setattr(fffvdi.inpaint.methods, "build_method", lambda cfg: pytest.fail("the frames were done: no method needed"))
        assert CLI.main([*clip, *TELEA, "--output", str(tmp_path / "out"), "output.save_frames=false", "--resume"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "comparison.mp4", "config.yaml", "inpainted.mp4", "masked_input.mp4"]  # save_frames=false: PNGs only meanwhile
