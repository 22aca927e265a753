"""Weight-free mask tracking: every pixel near the object is traced along optical flow to the annotated frame.

For a frame t, the pixels of a region around the object's last known position step frame by
frame toward the annotated frame K, the flow sampled bilinearly at their current float position
(`cv2.remap`) and composed, never resampling a mask: chained mask warps blur and drift, a traced
position only carries the flow's own error. At K each trajectory reads the annotation once.
A trajectory is rejected (its pixel does not count as object) when the reverse flow at a step's
landing disagrees (forward-backward check, the tolerance of `fffvdi.flow.trace`) or when
its landing on K shows other colours than its start. Where tracing loses much of the object
(textureless inside, or too fast for the flow), the previous frame's object, moved by its median
flow or a template search, completes it. The result is cleaned (closing, specks, holes),
re-fitted to the frame with seeded GrabCut (`refine.refit`) and dilated by a margin so that it
hides all of the object. Flows are OpenCV DIS at its finest scale, at a working size of at most
`WORK_SIDE` (larger frames are traced small and the masks upscaled).
"""
from __future__ import annotations

import cv2
import numpy as np
from tqdm.auto import tqdm

from fffvdi.flow.trace import FB_ALPHA, FB_BETA
from fffvdi.tracking.annotation import is_box
from fffvdi.tracking.refine import box_slices, clean, dilate, object_in_box, object_radius, refit

WORK_SIDE = 640  # longest side for flow and tracing; larger videos are traced at this size and upscaled
LOST_FRAC = 0.85  # a traced mask under this fraction of the previous frame's object is completed (_recover)
ROI_PAD = 12  # pixels around the object's previous box (plus the largest motion there) that are traced
ANCHOR_TOL = 36.0  # mean |RGB difference| (blurred frames) between a pixel and its landing on the annotated frame
MARGIN_FRAC, MARGIN_MIN = 0.06, 2  # dilation of the final mask: a fraction of the object's radius, at least 2 px


def estimate_flows(frames: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[T, H, W, 3]` -> `(fw, bw)` float32 `[T-1, H, W, 2]`: fw[t] maps t -> t+1, bw[t] maps t+1 -> t (x, y).

    OpenCV DIS as in `fffvdi.flow.estimators.DISFlow`, but down to the finest scale: the preset's
    half-resolution flow errs ~0.45 px per frame on a moving textured object, which tracing over
    tens of frames turns into a lagging mask (~0.17 px at full resolution).
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    n, h, w = len(frames), frames.shape[1], frames.shape[2]
    fw, bw = np.empty((n - 1, h, w, 2), np.float32), np.empty((n - 1, h, w, 2), np.float32)
    for t in tqdm(range(n - 1), desc="optical flow", unit="pair", disable=not progress):
        fw[t] = dis.calc(gray[t], gray[t + 1], None)  # prev(p) ~ next(p + flow(p)), fffvdi's convention
        bw[t] = dis.calc(gray[t + 1], gray[t], None)
    return fw, bw


def _sample(flow: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear (u, v) of `flow [H, W, 2]` at float positions (edge values beyond the border)."""
    uv = cv2.remap(flow, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return uv[..., 0], uv[..., 1]


def trace_to(fw: np.ndarray, bw: np.ndarray, t: int, k: int, x: np.ndarray, y: np.ndarray):
    """Trace positions `(x, y)` float32 of frame t to frame k; returns `(x, y, ok)`, ok False once a step's reverse flow
    disagrees at its landing (occlusion, forward-backward check). A position that leaves the frame reads nothing at k."""
    x, y = x.astype(np.float32), y.astype(np.float32)
    ok = np.ones(x.shape, bool)
    step = 1 if k > t else -1
    for i in range(t, k, step):
        flow, back = (fw[i], bw[i]) if step > 0 else (bw[i - 1], fw[i - 1])  # i -> i+step, and back
        u, v = _sample(flow, x, y)
        x2, y2 = x + u, y + v
        bu, bv = _sample(back, x2, y2)
        err = (u + bu) ** 2 + (v + bv) ** 2
        ok &= err < FB_ALPHA * (u**2 + v**2 + bu**2 + bv**2) + FB_BETA
        x, y = x2, y2
    return x, y, ok


def _roi(prev: np.ndarray, flow: np.ndarray) -> tuple[slice, slice]:
    """Region of the next frame to trace: the previous mask's box grown by ROI_PAD and its largest motion."""
    if not prev.any():
        return slice(0, prev.shape[0]), slice(0, prev.shape[1])  # object lost: search the whole frame
    motion = float(np.abs(flow[box_slices(prev)]).max()) if flow is not None else 0.0
    return box_slices(prev, ROI_PAD + int(np.ceil(2 * motion)))


def propagate(fw, bw, images, t: int, k: int, object_k: np.ndarray, roi: tuple[slice, slice]) -> np.ndarray:
    """Object pixels of frame t, bool [H, W], traced from the object mask of frame k within `roi`.

    A trajectory is also rejected when its landing shows other colours than its start (`images`
    float32 [T, H, W, 3], blurred): DIS spreads an object's motion into the background it uncovers,
    consistently in both directions, so the forward-backward check passes and only colour tells them apart.
    """
    h, w = object_k.shape
    sy, sx = roi
    ys, xs = np.mgrid[sy, sx].astype(np.float32)  # [h_r, w_r] pixel centres of the region
    x, y, ok = trace_to(fw, bw, t, k, xs, ys)
    soft = cv2.remap(object_k.astype(np.float32), x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    seen = cv2.remap(images[k], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # what the landing shows
    ok &= np.abs(seen - images[t][sy, sx]).mean(-1) < ANCHOR_TOL
    obj = np.zeros((h, w), bool)
    obj[sy, sx] = ok & (soft > 0.5)
    return obj


def _shift(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """bool mask translated by (dx, dy) pixels (nearest)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(mask.astype(np.uint8), m, mask.shape[::-1], flags=cv2.INTER_NEAREST).astype(bool)


def _match(prev: np.ndarray, prev_image: np.ndarray, image: np.ndarray, guess: tuple[float, float]) -> tuple[float, float]:
    """The translation (dx, dy) of the previous object into this frame: where its pixels match best (masked template
    search) within reach of the flow's `guess`, which alone is too short when the motion outruns the flow."""
    h, w = prev.shape
    sy, sx = box_slices(prev)
    y0, y1, x0, x1 = sy.start, sy.stop, sx.start, sx.stop
    reach = int(max(2 * ROI_PAD, object_radius(prev)))
    gx, gy = int(round(guess[0])), int(round(guess[1]))
    wy0, wy1 = max(y0 + gy - reach, 0), min(y1 + gy + reach, h)
    wx0, wx1 = max(x0 + gx - reach, 0), min(x1 + gx + reach, w)
    if wy1 - wy0 < y1 - y0 or wx1 - wx0 < x1 - x0:
        return guess  # the object has left the frame's search window
    template = np.ascontiguousarray(prev_image[y0:y1, x0:x1])
    mask = np.repeat(prev[y0:y1, x0:x1, None], 3, axis=2).astype(np.float32)  # only the object's pixels count
    cost = cv2.matchTemplate(np.ascontiguousarray(image[wy0:wy1, wx0:wx1]), template, cv2.TM_SQDIFF, mask=mask)
    iy, ix = np.unravel_index(int(np.argmin(np.nan_to_num(cost, nan=np.inf))), cost.shape)
    return float(wx0 + ix - x0), float(wy0 + iy - y0)


def _recover(seed: np.ndarray, prev: np.ndarray, flow: np.ndarray, prev_image: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The traced seed, completed by the previous frame's object moved into this frame when tracing lost much of it.

    Inside a textureless object the flow is guesswork and the colour checks cannot vouch for it, so traced
    pixels thin out frame after frame; the object's bulk motion (median flow, or a template search when the
    object moves too fast for the flow) is still right, and the re-fit that follows decides which moved pixels
    are object.
    """
    if not prev.any() or seed.sum() >= LOST_FRAC * prev.sum():
        return seed
    u, v = np.median(flow[prev], axis=0)  # flow [H, W, 2] from prev's frame to this one
    dx, dy = _match(prev, prev_image, image, (float(u), float(v)))
    return seed | _shift(prev, dx, dy)


def cover(mask: np.ndarray) -> np.ndarray:
    """The covering margin: a mask must hide every pixel of the object, anti-aliased edge included."""
    return dilate(mask, max(MARGIN_MIN, int(round(MARGIN_FRAC * object_radius(mask)))))


def track_flow(frames: np.ndarray, annotation: np.ndarray, frame: int, progress: bool = False) -> np.ndarray:
    """Track the object annotated on `frame` through `frames` uint8 [T, H, W, 3]; bool masks [T, H, W]."""
    n, h, w = frames.shape[:3]
    scale = min(1.0, WORK_SIDE / max(h, w))
    size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))  # cv2 (W, H)
    work = frames if scale == 1.0 else np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    annotated = object_in_box(frames[frame], annotation) if is_box(annotation) else annotation  # full size [H, W]
    objects = np.zeros(work.shape[:3], bool)  # [T, h, w] object masks before the margin
    objects[frame] = annotated if scale == 1.0 else cv2.resize(annotated.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    if n > 1:
        fw, bw = estimate_flows(work, progress)
        images = np.stack([cv2.GaussianBlur(f.astype(np.float32), (5, 5), 1.0) for f in work])  # [T, h, w, 3]
        order = [(t, t - 1) for t in range(frame + 1, n)] + [(t, t + 1) for t in range(frame - 1, -1, -1)]
        for t, prev in tqdm(order, desc="tracking", unit="frame", disable=not progress):
            flow = bw[t - 1] if t > prev else fw[t]  # motion from t toward prev, to size the search region
            obj = propagate(fw, bw, images, t, frame, objects[frame], _roi(objects[prev], flow))
            seed = _recover(clean(obj), objects[prev], fw[prev] if t > prev else bw[t], images[prev], images[t])
            objects[t] = refit(work[t], seed)
    out = np.zeros((n, h, w), bool)
    for t in range(n):
        if t == frame or scale == 1.0:
            m = annotated if t == frame else objects[t]
        else:
            m = cv2.resize(objects[t].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        out[t] = cover(m) if m.any() else m
    return out
