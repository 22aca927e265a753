"""The real-footage benchmark's case builders and scoring, on synthetic frames (the opencv-doc clips are not needed)."""
import numpy as np
import pytest

import fffvdi.bench.footage as footage
from fffvdi.bench.footage import FootageCase, box_masks, paste_object
from fffvdi.bench.footage_score import score_case
from fffvdi.errors import InputError


@pytest.mark.parametrize("kind, speed", [("cross2", 2), ("cross6", 6), ("fixed", 0)])
def test_box_masks_move_at_their_speed(kind, speed):
    masks = box_masks(kind, 10, (60, 128))
    cols = [np.flatnonzero(m.any(0)) for m in masks]
    assert all(len(c) == 128 // 8 for c in cols)  # 1/8 of the width
    assert [c[0] - cols[0][0] for c in cols] == [speed * t for t in range(10)]


def test_pasted_object_has_its_soft_edge_outside_the_mask():
    clip = np.zeros((5, 60, 100, 3), np.uint8)
    alpha = np.zeros((20, 12), np.float32)
    alpha[4:16, 4:8] = 1.0
    alpha[3, 4:8] = 0.3  # the soft edge
    out, masks = paste_object(clip, np.full((20, 12, 3), 200, np.uint8), alpha)
    assert masks.sum(axis=(1, 2)).tolist() == [48] * 5
    assert ((out > 0).any(-1) & ~masks).any()  # halo pixels outside the mask, as a real segmentation leaves them
    assert len({tuple(np.argwhere(m)[0]) for m in masks}) == 5  # it moves


def test_score_case_reports_every_column_on_the_users_mask():
    rng = np.random.default_rng(0)
    truth = np.repeat(rng.integers(0, 255, (1, 48, 96, 3), dtype=np.uint8), 6, 0)
    masks = box_masks("cross6", 6, (48, 96))
    case = FootageCase("still-cross6-48x96", np.where(masks[..., None], 0, truth), truth, masks)
    row = score_case(case)
    assert set(row) >= {"propagate", "dilate0", "telea", "ceiling", "s_per_frame"}
    assert row["ceiling"] > row["telea"] + 5 and row["propagate"] > row["telea"] + 5  # a still scene: all revealed


def test_missing_footage_without_apt_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(footage, "DOC", tmp_path / "nowhere")
    monkeypatch.setattr(footage.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="opencv-doc"):
        footage.find_footage(tmp_path / "cache")
