"""scripts/make_masks.py: files in the input's names, the preview, refusals and one-line errors (exit 2)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_script
from tracking_scene import blob_scene



CLI = load_script("make_masks")
N = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 frames 96x144 as `shot_<i>.jpg` (names that are not plain numbers) and the hidden object masks."""
    frames, objects = blob_scene(n_frames=N, size=(96, 144), start=(40.0, 40.0), speed=(2.0, 0.5), growth=1.2)
    folder = tmp_path_factory.mktemp("clip") / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"shot_{i}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder, objects


def _box_arg(obj: np.ndarray, pad: int = 3) -> str:
    ys, xs = np.nonzero(obj)
    return f"{xs.min() - pad},{ys.min() - pad},{xs.max() - xs.min() + 1 + 2 * pad},{ys.max() - ys.min() + 1 + 2 * pad}"


def _count_frames(mp4: Path) -> int:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(mp4))
    next(reader)  # metadata
    return sum(1 for _ in reader)


def test_box_on_a_frames_folder_writes_masks_in_the_input_names_and_a_preview(clip, tmp_path, capsys):
    folder, objects = clip
    out = tmp_path / "masks"
    assert CLI.main(["--video", str(folder), "--box", _box_arg(objects[3]), "--frame", "3", "--output", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"shot_{i}.png" for i in range(N))
    assert _count_frames(out / "masks_preview.mp4") == N
    for i in range(N):
        m = cv2.imread(str(out / f"shot_{i}.png"), cv2.IMREAD_UNCHANGED)
        assert m.shape == (96, 144) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
        hole = m == 255
        assert (hole & objects[i]).sum() >= 0.97 * objects[i].sum() and hole.sum() <= 1.5 * objects[i].sum()
    assert "done:" in capsys.readouterr().out


def test_refuses_a_non_empty_output_unless_overwrite(clip, tmp_path, capsys):
    folder, objects = clip
    out = tmp_path / "masks"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--video", str(folder), "--box", _box_arg(objects[0]), "--output", str(out)]
    assert CLI.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: output folder") and "--overwrite" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing written
    assert CLI.main(args + ["--overwrite"]) == 0
    assert len(list(out.glob("*.png"))) == N and (out / "keep.txt").read_text() == "mine"


def test_mask_image_on_a_video_file(clip, tmp_path):
    from fffvdi.io import load_video, write_video

    folder, objects = clip
    video = tmp_path / "clip.mp4"
    write_video(video, load_video(folder).frames, fps=10)
    ann = tmp_path / "object.png"
    cv2.imwrite(str(ann), np.kron(objects[5].astype(np.uint8) * 255, np.ones((2, 2), np.uint8)))  # drawn at 2x size
    out = tmp_path / "masks"
    assert CLI.main(["--video", str(video), "--mask-image", str(ann), "--frame", "5", "--output", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(N)]
    assert _count_frames(out / "masks_preview.mp4") == N
    hole = cv2.imread(str(out / "00005.png"), cv2.IMREAD_GRAYSCALE) == 255
    assert (hole & objects[5]).sum() == objects[5].sum()  # the drawn mask (plus a margin) on its own frame
    from fffvdi.tracking.flow_tracker import cover

    assert np.array_equal(hole, cover(objects[5]))  # exactly: --frame 5 is the frame the drawing belongs to


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "500,10,20,20"], "error: box 500,10,20,20 lies outside the 144x96"),
        (["--box", "10,10,20"], "error: --box '10,10,20' is not x,y,w,h"),
        (["--box", "10,10,20,20", "--frame", "8"], "error: --frame 8 is out of range"),
        (["--mask-image", "EMPTY"], "is empty"),
        (["--mask-image", "MISSING"], "does not exist"),
        (["--box", "10,10,20,20", "--tracker", "sam2", "--sam2", "NOWHERE"], "does not exist"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(clip, tmp_path, capsys, extra, message):
    folder, _ = clip
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((96, 144), np.uint8))
    subst = {"EMPTY": str(tmp_path / "empty.png"), "MISSING": str(tmp_path / "missing.png"), "NOWHERE": str(tmp_path / "no_sam2")}
    extra = [subst.get(a, a) for a in extra]
    out = tmp_path / "masks"
    assert CLI.main(["--video", str(folder), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_masks_empty_on_every_frame_are_refused(clip, tmp_path, capsys, monkeypatch):
    import fffvdi.tracking

    folder, _ = clip
    monkeypatch.setattr(fffvdi.tracking, "track_masks", lambda frames, *a, **k: np.zeros(frames.shape[:3], bool))
    out = tmp_path / "masks"
    assert CLI.main(["--video", str(folder), "--box", "10,10,20,20", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "tracking lost the object on every frame" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_sam2_tracker_from_the_command_line(clip, tmp_path):
    from fffvdi.tracking.tiny_sam2 import save_tiny_sam2

    folder, objects = clip
    model = save_tiny_sam2(tmp_path / "sam2")
    out = tmp_path / "masks"
    args = ["--video", str(folder), "--mask-image", "ANN", "--frame", "2", "--output", str(out), "--tracker", "sam2", "--sam2", str(model)]
    cv2.imwrite(str(tmp_path / "a.png"), objects[2].astype(np.uint8) * 255)
    assert CLI.main([str(tmp_path / "a.png") if a == "ANN" else a for a in args]) == 0
    assert len(list(out.glob("shot_*.png"))) == N and _count_frames(out / "masks_preview.mp4") == N


def test_save_masks_api(tmp_path):
    from fffvdi.errors import InputError
    from fffvdi.tracking import save_masks

    masks = np.zeros((3, 10, 12), bool)
    masks[1, 2:5, 3:7] = True
    frames = np.full((3, 10, 12, 3), 90, np.uint8)
    out = save_masks(masks, ["a.jpg", "b.jpg", "c.jpg"], tmp_path / "m", frames=frames, fps=5)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "masks_preview.mp4"]
    assert np.array_equal(cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED), masks[1].astype(np.uint8) * 255)
    assert _count_frames(out / "masks_preview.mp4") == 3
    with pytest.raises(InputError, match="--overwrite"):
        save_masks(masks, ["a.jpg", "b.jpg", "c.jpg"], out)
    with pytest.warns(UserWarning, match="1 PNGs of an earlier run"):
        save_masks(masks[:2], ["a.jpg", "b.jpg"], out, overwrite=True)
    with pytest.raises(InputError, match="stems differ"):
        save_masks(masks[:2], ["x.jpg", "x.png"], tmp_path / "dup")
    with pytest.raises(InputError, match="3 masks but 2 frame names"):
        save_masks(masks, ["a.jpg", "b.jpg"], tmp_path / "few")
