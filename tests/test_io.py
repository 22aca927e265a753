"""Video/mask reading and result writing: round trips, ordering, laziness, mask rules, every input error."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fffvdi.errors import ConfigError, InputError
from fffvdi.io import (
    MaskSource,
    VideoSource,
    VideoWriter,
    list_images,
    load_masks,
    load_video,
    natural_key,
    prepare_output_dir,
    write_video,
)


def rand_frames(n: int, h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    """Random uint8 [n, h, w, 3] frames."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def smooth_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth moving gradients: compress well, so lossy round trips stay close."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [np.stack([(x * 4 + 6 * t) % 256, y * 6, np.full_like(x, 20 * t % 256)], -1) for t in range(n)]
    return np.stack(out).astype(np.uint8)


def save_rgb(path: Path, img: np.ndarray) -> None:
    """Write an RGB (or gray) uint8 image with OpenCV (which expects BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), img)


def frames_folder(folder: Path, frames: np.ndarray, names: list[str]) -> Path:
    for f, name in zip(frames, names):
        save_rgb(folder / name, f)
    return folder


def mask_folder(folder: Path, masks: np.ndarray) -> Path:
    for i, m in enumerate(masks):
        save_rgb(folder / f"{i:05d}.png", m)
    return folder


# ---------------------------------------------------------------- ordering


def test_natural_sort_numbers_and_prefixes(tmp_path: Path):
    assert sorted(["10.png", "1.png", "100.png", "2.png"], key=natural_key) == ["1.png", "2.png", "10.png", "100.png"]
    names = ["frame_10.jpg", "frame_2.JPG", "frame_1.png", "frame_100.jpeg", "frame_20.PNG"]
    for n in names + ["notes.txt", "clip.gif"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()  # a folder, not a frame
    got = [p.name for p in list_images(tmp_path)]
    assert got == ["frame_1.png", "frame_2.JPG", "frame_10.jpg", "frame_20.PNG", "frame_100.jpeg"]


# ---------------------------------------------------------------- frames folders


def test_png_folder_roundtrip_exact(tmp_path: Path):
    frames = rand_frames(12)
    names = [f"{i}.png" for i in range(12)]  # lexicographic order would put 10, 11 after 1
    frames_folder(tmp_path / "v", frames, names[::-1])  # write order must not matter
    video = load_video(tmp_path / "v")
    assert video.names == names
    assert video.fps == 24.0 and video.size == (12, 16) and len(video) == 12
    np.testing.assert_array_equal(video.frames, frames[::-1])  # frame i was saved under names[::-1][i]
    assert load_video(tmp_path / "v", fps=10).fps == 10.0


def test_folder_slice_is_lazy(tmp_path: Path):
    frames = rand_frames(8)
    names = [f"{i:03d}.png" for i in range(8)]
    frames_folder(tmp_path / "v", frames, names)
    src = VideoSource(tmp_path / "v")
    (tmp_path / "v" / names[6]).write_bytes(b"not a png")  # broken after opening, outside the slice
    chunk = src.read(2, 5)
    assert chunk.dtype == np.uint8 and chunk.shape == (3, 12, 16, 3)
    np.testing.assert_array_equal(chunk, frames[2:5])
    with pytest.raises(InputError, match=names[6]):
        src.read(5, 8)
    with pytest.raises(IndexError):
        src.read(4, 9)


def test_folder_mixed_sizes_names_file(tmp_path: Path):
    save_rgb(tmp_path / "v" / "0.png", rand_frames(1)[0])
    save_rgb(tmp_path / "v" / "1.png", rand_frames(1, h=10)[0])
    with pytest.raises(InputError, match=r"1\.png.*10x16.*12x16"):
        load_video(tmp_path / "v")


def test_jpg_frames_keep_names(tmp_path: Path):
    frames = smooth_frames(3)
    frames_folder(tmp_path / "v", frames, ["00000.jpg", "00001.JPG", "00002.jpeg"])
    video = load_video(tmp_path / "v")
    assert video.names == ["00000.jpg", "00001.JPG", "00002.jpeg"]
    assert np.abs(video.frames.astype(int) - frames).mean() < 3  # jpeg is lossy


# ---------------------------------------------------------------- video files


def test_mp4_roundtrip_fps_count_values(tmp_path: Path):
    frames = smooth_frames(10)
    write_video(tmp_path / "a.mp4", frames, fps=12.5)
    src = VideoSource(tmp_path / "a.mp4", fps=99)  # a file keeps its own fps
    assert len(src) == 10 and src.fps == 12.5 and src.size == (32, 48)
    assert src.names[:2] == ["00000.png", "00001.png"] and src.names[-1] == "00009.png"
    full = src.read(0, 10)
    assert full.shape == frames.shape and full.dtype == np.uint8
    assert np.abs(full.astype(int) - frames).mean() < 4  # measured 1.9 at crf 17
    # windows with overlap, a backward jump (decoder restart) and a forward skip all agree with one pass
    np.testing.assert_array_equal(src.read(0, 4), full[0:4])
    np.testing.assert_array_equal(src.read(2, 7), full[2:7])
    np.testing.assert_array_equal(src.read(1, 3), full[1:3])
    np.testing.assert_array_equal(src.read(8, 10), full[8:10])
    starts = [s for s, c in src.chunks(4)]
    assert starts == [0, 4, 8]
    src.close()
    video = load_video(tmp_path / "a.mp4")
    assert len(video) == 10 and video.fps == 12.5


def test_write_video_odd_size_pads_mp4(tmp_path: Path):
    frames = smooth_frames(4, h=27, w=43)
    write_video(tmp_path / "odd.mp4", frames, fps=8)
    back = load_video(tmp_path / "odd.mp4")
    assert back.frames.shape == (4, 28, 44, 3)  # yuv420p needs even sides: one padded row/column
    assert np.abs(back.frames[:, :27, :43].astype(int) - frames).mean() < 3
    with pytest.raises(ValueError):
        write_video(tmp_path / "none.mp4", [], fps=8)


def test_corrupt_video_file_names_it(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(InputError, match="bad.mp4"):
        VideoSource(bad)


@pytest.mark.parametrize("kind", ["missing", "empty", "ext"])
def test_video_errors_name_path(tmp_path: Path, kind: str):
    path = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "ext": tmp_path / "clip.gif"}[kind]
    if kind == "empty":
        path.mkdir()
        (path / "readme.txt").write_text("no frames here")
    if kind == "ext":
        path.write_bytes(b"GIF89a")
    with pytest.raises(InputError, match=str(path)) as err:
        VideoSource(path)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- masks


def test_mask_folder_and_single_broadcast(tmp_path: Path):
    masks = np.zeros((5, 12, 16), np.uint8)
    for t in range(5):
        masks[t, 2:6, t : t + 3] = 255
    src = MaskSource(mask_folder(tmp_path / "m", masks), 5, (12, 16))
    got = src.read(1, 4)
    assert got.dtype == np.uint8 and got.shape == (3, 12, 16) and set(np.unique(got)) == {0, 1}
    np.testing.assert_array_equal(got, masks[1:4] // 255)

    save_rgb(tmp_path / "one.png", masks[2])
    single = MaskSource(tmp_path / "one.png", 7, (12, 16))
    assert len(single) == 7 and single.count == 1
    np.testing.assert_array_equal(single.read(0, 7), np.repeat(masks[2:3] // 255, 7, axis=0))
    # a folder holding a single mask broadcasts too
    one_dir = mask_folder(tmp_path / "one_dir", masks[:1])
    np.testing.assert_array_equal(MaskSource(one_dir, 4, (12, 16)).read(3, 4)[0], masks[0] // 255)


def test_gray_threshold(tmp_path: Path):
    gray = np.array([[0, 100, 127, 128, 200, 255]], np.uint8)
    save_rgb(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(load_masks(tmp_path / "g.png", 1, (1, 6))[0, 0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(load_masks(tmp_path / "g.png", 1, (1, 6), threshold=99)[0, 0], [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(load_masks(tmp_path / "g.png", 1, (1, 6), threshold=0)[0, 0], [0, 1, 1, 1, 1, 1])


def test_rgb_any_channel(tmp_path: Path):
    rgb = np.array([[[200, 0, 0], [0, 200, 0], [0, 0, 200], [100, 100, 100], [0, 0, 0], [128, 0, 0]]], np.uint8)
    save_rgb(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(load_masks(tmp_path / "c.png", 1, (1, 6))[0, 0], [1, 1, 1, 0, 0, 1])


def test_rgba_alpha_or_colour(tmp_path: Path):
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[..., :3] = 255  # white colour everywhere: the alpha must win
    rgba[0, :, 3] = [0, 255, 0, 200]
    save_rgb(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(load_masks(tmp_path / "a.png", 1, (1, 4))[0, 0], [0, 1, 0, 1])
    opaque = np.zeros((1, 4, 4), np.uint8)
    opaque[..., 3] = 255  # fully opaque alpha carries nothing: use the colour
    opaque[0, 2, 1] = 255
    save_rgb(tmp_path / "o.png", opaque)
    np.testing.assert_array_equal(load_masks(tmp_path / "o.png", 1, (1, 4))[0, 0], [0, 0, 1, 0])


@pytest.mark.parametrize("iters", [0, 1, 2, 3])
def test_dilation_of_a_dot(tmp_path: Path, iters: int):
    dot = np.zeros((11, 11), np.uint8)
    dot[5, 5] = 255
    save_rgb(tmp_path / "d.png", dot)
    got = load_masks(tmp_path / "d.png", 1, (11, 11), dilate=iters)[0]
    y, x = np.mgrid[0:11, 0:11]
    expected = (np.abs(y - 5) + np.abs(x - 5) <= iters).astype(np.uint8)  # a cross grows a diamond
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == 2 * iters * (iters + 1) + 1


def test_mask_resize_nearest_and_error(tmp_path: Path):
    small = np.zeros((3, 4), np.uint8)
    small[1, 2] = small[0, 0] = 255
    save_rgb(tmp_path / "s.png", small)
    got = load_masks(tmp_path / "s.png", 2, (6, 8))
    expected = np.repeat(np.repeat(small // 255, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(got, np.stack([expected, expected]))
    with pytest.raises(InputError, match=r"s\.png.*3x4.*6x8"):
        MaskSource(tmp_path / "s.png", 2, (6, 8), resize="error").read(0, 1)


def test_mask_video(tmp_path: Path):
    masks = np.zeros((6, 32, 48, 3), np.uint8)
    for t in range(6):
        masks[t, 8:24, 2 * t + 4 : 2 * t + 20] = 255
    write_video(tmp_path / "m.mp4", masks, fps=10)
    got = MaskSource(tmp_path / "m.mp4", 6, (32, 48)).read(0, 6)
    assert got.shape == (6, 32, 48)
    assert (got != masks[..., 0] // 255).mean() < 0.01  # lossy codec: at most a few edge pixels flip
    with pytest.raises(InputError, match=r"m\.mp4.*6 masks.*9 frames"):
        MaskSource(tmp_path / "m.mp4", 9, (32, 48))


def test_mask_count_mismatch_says_both(tmp_path: Path):
    folder = mask_folder(tmp_path / "m", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match=r"m has 3 masks but the video has 5 frames") as err:
        MaskSource(folder, 5, (4, 4))
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "empty", "ext", "corrupt"])
def test_mask_errors_name_path(tmp_path: Path, kind: str):
    path = {
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
        "ext": tmp_path / "mask.bmp",
        "corrupt": tmp_path / "broken.png",
    }[kind]
    if kind == "empty":
        path.mkdir()
    elif kind in ("ext", "corrupt"):
        path.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match=str(path)) as err:
        MaskSource(path, 3, (4, 4)).read(0, 3)
    assert "\n" not in str(err.value)


def test_mask_option_errors(tmp_path: Path):
    save_rgb(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    for kwargs in ({"threshold": 255}, {"threshold": -1}, {"dilate": -1}, {"dilate": 1.5}, {"resize": "bilinear"}):
        with pytest.raises(ConfigError):
            MaskSource(tmp_path / "m.png", 3, (4, 4), **kwargs)


def test_empty_mask_warns_naming_path(tmp_path: Path):
    folder = mask_folder(tmp_path / "m", np.full((4, 5, 6), 127, np.uint8))  # 127 is not > 127
    src = MaskSource(folder, 4, (5, 6))
    with pytest.warns(UserWarning, match=str(folder)):
        assert src.is_empty(chunk=3)
    with pytest.warns(UserWarning, match=str(folder)):
        assert load_masks(folder, 4, (5, 6)).sum() == 0
    full = np.zeros((4, 5, 6), np.uint8)
    full[3, 4, 5] = 255  # a single hole pixel in the last frame
    folder2 = mask_folder(tmp_path / "m2", full)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not MaskSource(folder2, 4, (5, 6)).is_empty(chunk=3)
        assert load_masks(folder2, 4, (5, 6)).sum() == 1


# ---------------------------------------------------------------- output


def test_prepare_output_dir(tmp_path: Path):
    out = prepare_output_dir(tmp_path / "a" / "b", overwrite=False)
    assert out.is_dir()
    assert prepare_output_dir(out, overwrite=False) == out  # empty folder is fine
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match=rf"{out} exists; pass --overwrite or choose another --output"):
        prepare_output_dir(out, overwrite=False)
    assert prepare_output_dir(out, overwrite=True) == out
    assert (out / "keep.txt").exists()  # overwrite never deletes
    with pytest.raises(InputError, match="keep.txt"):
        prepare_output_dir(out / "keep.txt", overwrite=True)


def test_writer_png_names_odd_size_and_mp4(tmp_path: Path):
    frames = rand_frames(5, h=27, w=43, seed=3)
    names = [f"{i:05d}.jpg" for i in range(12, 17)]
    with VideoWriter(tmp_path / "out", fps=15) as writer:
        writer.write(frames[:2], names[:2])
        writer.write(frames[2:], names[2:])
    assert writer.count == 5
    pngs = sorted(p.name for p in (tmp_path / "out" / "frames").iterdir())
    assert pngs == [f"{i:05d}.png" for i in range(12, 17)]
    back = load_video(tmp_path / "out" / "frames")
    np.testing.assert_array_equal(back.frames, frames)  # exact size and values
    mp4 = VideoSource(tmp_path / "out" / "output.mp4")
    assert len(mp4) == 5 and mp4.fps == 15.0 and mp4.size == (28, 44)
    with pytest.raises(RuntimeError):
        writer.write(frames[:1], names[:1])


def test_writer_flags_and_checks(tmp_path: Path):
    frames = rand_frames(2)
    with VideoWriter(tmp_path / "png_only", fps=5, write_mp4=False) as w:
        w.write(frames, ["a.png", "b.png"])
    assert sorted(p.name for p in (tmp_path / "png_only").iterdir()) == ["frames"]
    with VideoWriter(tmp_path / "mp4_only", fps=5, write_png=False, mp4_name="x.mp4") as w:
        w.write(frames, ["a.png", "b.png"])
    assert sorted(p.name for p in (tmp_path / "mp4_only").iterdir()) == ["x.mp4"]
    with VideoWriter(tmp_path / "bad", fps=5) as w:
        with pytest.raises(ValueError):
            w.write(frames.astype(np.float32), ["a", "b"])
        with pytest.raises(ValueError):
            w.write(frames, ["a"])
        w.write(frames[:1], ["a.jpg"])
        with pytest.raises(InputError, match="a.png"):
            w.write(frames[1:], ["a.png"])  # two inputs with one stem would overwrite each other
        with pytest.raises(ValueError):
            w.write(rand_frames(1, h=8), ["c.png"])


def test_writer_warns_on_stale_pngs(tmp_path: Path):
    save_rgb(tmp_path / "out" / "frames" / "00099.png", rand_frames(1)[0])
    w = VideoWriter(tmp_path / "out", fps=5, write_mp4=False)
    w.write(rand_frames(1), ["00000.png"])
    with pytest.warns(UserWarning, match="00099.png"):
        w.close()


def test_box_mode_turns_each_mask_into_its_bounding_box(tmp_path):
    from fffvdi.io import load_masks

    (tmp_path / "m").mkdir()
    for i in range(2):
        m = np.zeros((20, 30), np.uint8)
        cv2.circle(m, (10 + 5 * i, 10), 4, 255, -1)
        m[2, 25] = 255  # a stray pixel far away widens the box
        cv2.imwrite(str(tmp_path / "m" / f"{i}.png"), m)
    boxes = load_masks(tmp_path / "m", 2, (20, 30), mode="box")
    plain = load_masks(tmp_path / "m", 2, (20, 30))
    for i in range(2):
        ys, xs = np.nonzero(plain[i])
        expect = np.zeros_like(plain[i])
        expect[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
        assert np.array_equal(boxes[i], expect) and boxes[i].sum() > plain[i].sum()
    with pytest.raises(ConfigError, match="mask.mode"):
        load_masks(tmp_path / "m", 2, (20, 30), mode="ellipse")
