"""SAM 2 tracker through transformers' video classes (`Sam2VideoModel`, `Sam2VideoProcessor`), hub id or local folder.

The annotation is the prompt on its frame (a box annotation as a box prompt, any other mask as a
mask prompt); SAM 2 propagates it forward to the end and backward to the start. Masks get the same
covering margin as the flow tracker's.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache
from tqdm.auto import tqdm

from fffvdi.errors import InputError
from fffvdi.models.hub import PROBE_TIMEOUT_S, env_offline, hub_reachable, is_local
from fffvdi.tracking.annotation import is_box, mask_box
from fffvdi.tracking.flow_tracker import cover

logger = logging.getLogger(__name__)
FILES = ("config.json", "model.safetensors")  # what a SAM 2 folder must hold (the processor config too, one of PROCESSOR_FILES)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def _fix(source: str) -> str:
    return (f"download it where there is internet (huggingface-cli download {source} --local-dir DIR) "
            "and pass --sam2 DIR, or use --tracker flow (no weights)")


def check_sam2_source(source: str) -> tuple[str, bool]:
    """`(source, local_only)` for from_pretrained, or InputError in about a second when the model cannot load."""
    path = Path(source).expanduser()
    if is_local(source):
        missing = [f for f in FILES if not (path / f).is_file()]
        if not any((path / f).is_file() for f in PROCESSOR_FILES):
            missing.append(PROCESSOR_FILES[0])
        if not path.is_dir():
            raise InputError(f"SAM 2 folder {path} does not exist; pass --sam2 with a hub id (e.g. "
                             f"facebook/sam2.1-hiera-tiny) or a folder saved by save_pretrained")
        if missing:
            raise InputError(f"{path} is not a SAM 2 folder (missing {', '.join(missing)}); pass a folder saved by "
                             f"Sam2VideoModel/Sam2VideoProcessor.save_pretrained or {_fix('facebook/sam2.1-hiera-tiny')}")
        return str(path), True
    if env_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif hub_reachable():
        return source, False
    else:
        reason = f"the hub is unreachable within {PROBE_TIMEOUT_S:g} s"
    if not all(isinstance(try_to_load_from_cache(source, f), str) for f in FILES):
        raise InputError(f"SAM 2 model '{source}' is not available: {reason} and it is not in the local cache; {_fix(source)}")
    return source, True


def load_sam2(source: str, device: torch.device):
    """(model, processor) from a hub id or local folder; InputError with the fix when it cannot load."""
    from transformers import Sam2VideoModel, Sam2VideoProcessor

    name, local_only = check_sam2_source(source)
    try:
        model = Sam2VideoModel.from_pretrained(name, local_files_only=local_only or None)
        processor = Sam2VideoProcessor.from_pretrained(name, local_files_only=local_only or None)
    except (OSError, ValueError) as err:
        raise InputError(f"could not load SAM 2 from '{source}': {str(err).splitlines()[0]}; {_fix(source)}") from err
    return model.to(device).eval(), processor


@torch.no_grad()
def track_sam2(frames: np.ndarray, annotation: np.ndarray, frame: int, source: str, progress: bool = False) -> np.ndarray:
    """Masks bool [T, H, W] of the object annotated on `frame`, tracked by SAM 2 (`source`: hub id or folder)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_sam2(source, device)
    n, h, w = frames.shape[:3]
    session = processor.init_video_session(video=list(frames), inference_device=device, video_storage_device="cpu")
    if is_box(annotation):
        x, y, bw, bh = mask_box(annotation)
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=1,
                                                  input_boxes=[[[x, y, x + bw - 1, y + bh - 1]]])
    else:
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=1, input_masks=annotation)
    out = np.zeros((n, h, w), bool)
    bar = tqdm(total=n, desc="SAM 2", unit="frame", disable=not progress)
    for reverse in (False, True):
        if reverse and frame == 0:
            break  # nothing before the first frame (the iterator would re-run frame 0)
        for result in model.propagate_in_video_iterator(session, start_frame_idx=frame, reverse=reverse):
            if reverse and result.frame_idx == frame:
                continue  # the prompt frame again: already taken from the forward pass
            masks = processor.post_process_masks([result.pred_masks], original_sizes=[[h, w]], binarize=True)[0]
            out[result.frame_idx] = masks[0, 0].cpu().numpy()  # [objects, 1, H, W]: our one object
            bar.update(1)
    bar.close()
    return np.stack([cover(m) if m.any() else m for m in out])
