"""Video and mask input, result output."""

from fffvdi.io.masks import MaskSource, binarize, dilate_mask, load_masks, mask_values
from fffvdi.io.output import VideoWriter, default_output_dir, encode_outputs, png_name, prepare_output_dir, write_video
from fffvdi.io.video import (
    DEFAULT_FPS,
    IMAGE_EXTS,
    RecentFrames,
    VIDEO_EXTS,
    Video,
    VideoSource,
    list_images,
    load_video,
    natural_key,
    open_video,
    read_id_list,
)

__all__ = [
    "DEFAULT_FPS",
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "MaskSource",
    "RecentFrames",
    "Video",
    "VideoSource",
    "VideoWriter",
    "binarize",
    "default_output_dir",
    "dilate_mask",
    "encode_outputs",
    "list_images",
    "load_masks",
    "load_video",
    "mask_values",
    "natural_key",
    "open_video",
    "png_name",
    "read_id_list",
    "prepare_output_dir",
    "write_video",
]
