"""Masks from one annotation: a box or mask on one frame tracked through the video (optical flow, or SAM 2)."""

from fffvdi.tracking.annotation import box_mask, parse_box, read_annotation
from fffvdi.tracking.save import PREVIEW_NAME, save_masks
from fffvdi.tracking.track import DEFAULT_SAM2, TRACKERS, track_masks

__all__ = ["DEFAULT_SAM2", "PREVIEW_NAME", "TRACKERS", "box_mask", "parse_box", "read_annotation", "save_masks", "track_masks"]
