"""Input checks made before any work: truncated videos, every frame's header and size, mask aspect, all-hole clips."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fffvdi.errors import InputError
from fffvdi.io import MaskSource, VideoSource, load_video
from test_io import frames_folder, mask_folder, rand_frames, save_rgb


def test_truncated_mp4_warns_with_decoded_and_header_counts(tmp_path: Path):
    import imageio_ffmpeg

    frames = rand_frames(60, h=32, w=48)  # noise: every frame costs about as many bytes
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "full.mp4"), (48, 32), fps=10, codec="libx264",
                                         pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                                         output_params=["-movflags", "+faststart"])  # header first, as cameras do
    writer.send(None)
    for f in frames:
        writer.send(f.tobytes())
    writer.close()
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"cut\.mp4: its header says 60 frames .* but only \d+ decode") as rec:
        src = VideoSource(tmp_path / "cut.mp4")
    assert 10 < len(src) < 50 and f"only {len(src)} decode" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(VideoSource(tmp_path / "full.mp4")) == 60  # a whole file: no warning


def test_every_frame_header_is_checked_when_opening(tmp_path: Path):
    frames_folder(tmp_path / "v", rand_frames(5), [f"{i}.png" for i in range(5)])
    (tmp_path / "v" / "3b.jpg").write_text("not an image at all")
    with pytest.raises(InputError, match=r"cannot read image .*3b\.jpg: not an image"):
        VideoSource(tmp_path / "v")
    (tmp_path / "v" / "3b.jpg").unlink()
    save_rgb(tmp_path / "v" / "4.png", rand_frames(1, h=10)[0])
    with pytest.raises(InputError, match=r"4\.png is 10x16"):
        VideoSource(tmp_path / "v")  # found at opening, not when frame 4 is read


def test_exif_rotated_jpeg_size_matches_what_is_decoded(tmp_path: Path):
    from PIL import Image

    folder = tmp_path / "v"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: cv2.imread returns it upright (W x H swapped)
    for i in range(2):
        Image.fromarray(rand_frames(1, h=12, w=16)[0]).save(folder / f"{i}.jpg", exif=exif.tobytes())
    video = load_video(folder)
    assert video.size == (16, 12)


def test_mask_of_another_aspect_needs_stretch(tmp_path: Path):
    save_rgb(tmp_path / "sq.png", np.full((10, 10), 255, np.uint8))
    with pytest.raises(InputError, match=r"sq\.png is 10x10 .* 12x24, another aspect ratio.*mask\.resize=stretch"):
        MaskSource(tmp_path / "sq.png", 2, (12, 24)).read(0, 1)
    got = MaskSource(tmp_path / "sq.png", 2, (12, 24), resize="stretch").read(0, 2)
    assert got.shape == (2, 12, 24) and got.all()
    save_rgb(tmp_path / "odd.png", np.full((27, 43), 255, np.uint8))  # frames padded to even sides by an mp4
    assert MaskSource(tmp_path / "odd.png", 1, (28, 44)).read(0, 1).all()  # within a pixel: the same aspect


def test_mask_check_refuses_an_all_hole_clip_only(tmp_path: Path):
    full = np.full((3, 4, 5), 255, np.uint8)
    with pytest.raises(InputError, match=r"m covers every pixel of every frame"):
        MaskSource(mask_folder(tmp_path / "m", full), 3, (4, 5)).check()
    full[1, 0, 0] = 0  # one visible pixel in one frame: a legitimate clip
    MaskSource(mask_folder(tmp_path / "m2", full), 3, (4, 5), dilate=0).check()
    with pytest.raises(InputError, match="lower mask.dilate"):  # dilation can hide that pixel too
        MaskSource(tmp_path / "m2", 3, (4, 5), dilate=1).check()
