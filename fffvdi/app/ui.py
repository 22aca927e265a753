"""The Gradio page: upload, scrub, box or brush, tracked-mask preview, method and knobs, run/cancel, result."""
import hashlib
import time
from typing import Any, Optional

import cv2
import gradio as gr
import numpy as np

from fffvdi.app.commands import (
    METHODS, RunSettings, box_annotation, box_from_clicks, brush_annotation, clicked_pixel, inference_step,
    save_annotation, tracking_step, zip_frames,
)
from fffvdi.app.jobs import DONE, FINISHED, JobQueue
from fffvdi.app.session import UPLOAD_EXTS, Session, SessionStore
from fffvdi.errors import FFFVDIError, InputError
from fffvdi.io import write_video
from fffvdi.tracking.save import PREVIEW_NAME

POLL_S = 0.5  # how often a running job's progress is refreshed in the page
BOX_COLOUR = (255, 64, 64)
# Gradio's select index is round(position / scale), the nearest pixel *corner*, from whole CSS pixels: on a frame
# shown smaller than its size a click inside pixel 345 comes back as 344 or 346. The page keeps the frame pixel
# under the pointer (fractional pointer position, floor) and the click handler takes that one.
POINTER_JS = """() => { if (window.fffvdiPointerHook) return; window.fffvdiPointerHook = true;
  document.addEventListener('pointerdown', (e) => {
    const box = document.querySelector('#frame-image'); const img = box && box.querySelector('img');
    if (!img || !box.contains(e.target) || !img.naturalWidth) return;
    const r = img.getBoundingClientRect(), s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const x = (e.clientX - r.left - (r.width - img.naturalWidth * s) / 2) / s;
    const y = (e.clientY - r.top - (r.height - img.naturalHeight * s) / 2) / s;
    window.fffvdiPointer = `${Math.floor(x)},${Math.floor(y)}`; }, true); }"""
TAKE_POINTER_JS = "(index, unused) => { const p = window.fffvdiPointer || ''; window.fffvdiPointer = ''; return [index, p]; }"


def _annotated(frame: np.ndarray, box: Optional[tuple], click: Optional[tuple]) -> np.ndarray:
    """The frame with the current box drawn and a pending first click marked."""
    out = frame.copy()
    t = max(1, min(out.shape[:2]) // 120)  # line width that stays visible on large frames
    if box is not None and box[2] > 0 and box[3] > 0:
        x, y, w, h = (int(v) for v in box)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOUR, t)
    if click is not None:
        cv2.drawMarker(out, (int(click[0]), int(click[1])), BOX_COLOUR, cv2.MARKER_CROSS, 6 * t, t)
    return out


def _box(x: Any, y: Any, w: Any, h: Any) -> Optional[tuple[int, int, int, int]]:
    """The four box fields as ints, None while one is empty."""
    vals = [x, y, w, h]
    return None if any(v is None for v in vals) else tuple(int(v) for v in vals)


def painted(editor: Optional[dict]) -> bool:
    """Whether anything is brushed on the editor's layers (then the brush, not the box, is the annotation)."""
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or []]
    return any(layer.ndim == 3 and layer.shape[2] == 4 and layer[..., 3].any() for layer in layers)


def build_ui(store: SessionStore, jobs: JobQueue):
    """The Blocks of the app, its handlers bound to one session store and one job queue."""

    def session(request: gr.Request) -> Session:
        """This page's session (Gradio's server-side session id, never a browser-given name)."""
        return store.get(request.session_hash)

    def on_upload(file: Optional[str], request: gr.Request):
        """Import the upload under generated names; show it, size the slider, show frame 0."""
        if not file:
            return gr.update(), gr.update(), gr.update(), gr.update(), "upload a video or a zip of frames"
        s = session(request)
        try:
            s.import_video(file)  # the server's stored name: its extension is the browser's, the rest is ignored
        except FFFVDIError as err:
            return None, gr.update(value=0), None, None, f"error: {err}"
        s.masks_dir, s.masks_key, s.job_id = None, None, None
        frame = s.frame(0)
        clip = store_preview(s)
        h, w = s.size
        return (clip, gr.update(maximum=max(s.num_frames - 1, 1), value=0), frame,
                {"background": frame, "layers": [], "composite": None},
                f"loaded {s.num_frames} frames of {w}x{h} at {s.fps:g} fps; click two corners of a box (or brush) on a frame")

    def store_preview(s: Session) -> str:
        """An mp4 of the uploaded frames for the input player."""
        return str(write_video(s.new_path("input", ".mp4"), (s.frame(i) for i in range(s.num_frames)), s.fps))

    def on_frame(index, x, y, w, h, request: gr.Request):
        """Scrubbing: show the frame with the box, and as the brush background."""
        s = session(request)
        if s.frames_dir is None:
            return gr.update(), gr.update()
        s.click = None
        frame = s.frame(int(index))
        return _annotated(frame, _box(x, y, w, h), None), {"background": frame, "layers": [], "composite": None}

    def on_click(index, pointer, evt: gr.SelectData, request: gr.Request):
        """First click marks a corner, the second one closes the box (both pixels inside) and fills x, y, w, h."""
        s = session(request)
        if s.frames_dir is None:
            return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        frame = s.frame(int(index))
        point = clicked_pixel(pointer, evt.index, frame.shape[:2])
        if s.click is None:
            s.click = point
            return _annotated(frame, None, point), gr.update(), gr.update(), gr.update(), gr.update()
        box = box_from_clicks(s.click, point)
        s.click = None
        return (_annotated(frame, box, None), *box)

    def on_box_fields(index, x, y, w, h, request: gr.Request):
        """Typed box numbers: redraw the frame with that box."""
        s = session(request)
        if s.frames_dir is None:
            return gr.update()
        return _annotated(s.frame(int(index)), _box(x, y, w, h), None)

    def annotation(s: Session, index, x, y, w, h, editor) -> tuple:
        """(annotation PNG, frame, key): the key tells whether masks tracked before still fit."""
        if s.frames_dir is None:
            raise InputError("no video yet; upload a video or a zip of frames first")
        if painted(editor):
            mask = brush_annotation(editor, s.size)
        else:
            box = _box(x, y, w, h)
            if box is None:
                raise InputError("no box yet; click two corners on the frame or fill x, y, w, h")
            mask = box_annotation(box, s.size)
        key = (str(s.frames_dir), int(index), hashlib.sha1(mask.tobytes()).hexdigest())
        return save_annotation(mask, s.new_path("annotation", ".png")), int(index), key

    def submit(request: gr.Request, index, x, y, w, h, editor, settings: Optional[RunSettings]):
        """Queue tracking (when the annotation changed) and, with settings, inference; returns the job."""
        s = session(request)
        if s.job_id is not None and jobs.get(s.job_id).state not in FINISHED:
            raise InputError("a job of this page is still running; wait for it or cancel it")
        if settings is not None:
            settings.check()
        ann, frame, key = annotation(s, index, x, y, w, h, editor)
        steps, masks_dir = [], s.masks_dir
        if key != s.masks_key or masks_dir is None:
            masks_dir = s.new_path("masks")
            steps.append(tracking_step(s.frames_dir, ann, frame, masks_dir, s.fps, s.num_frames))
        out = None
        if settings is not None:
            out = s.new_path("result")
            steps.append(inference_step(s.frames_dir, masks_dir, out, s.fps, s.num_frames, settings))
        job = jobs.submit(steps, s.new_dir("log"), output=out)
        s.job_id, s.pending_masks = job.id, (masks_dir, key)
        return job

    def watch(s: Session, job, progress):
        """Yield status lines while the job runs; the last yield carries its outputs."""
        while job.state not in FINISHED:
            ahead = jobs.ahead(job.id)
            text = f"queued: {ahead} job(s) ahead" if ahead else job.describe()
            progress(job.progress(), desc=text)
            yield text, None
            time.sleep(POLL_S)
        if job.state == DONE:
            s.masks_dir, s.masks_key = s.pending_masks
        yield (job.describe() if job.state != DONE else "done"), job

    def preview_masks(index, x, y, w, h, editor, request: gr.Request, progress=gr.Progress()):
        """Track the annotation only and show the overlay video (reused by Run if the annotation stays)."""
        s = session(request)
        try:
            job = submit(request, index, x, y, w, h, editor, None)
        except FFFVDIError as err:
            yield f"error: {err}", gr.update()
            return
        if not job.steps:  # masks for this annotation exist already
            yield "masks already tracked for this annotation", str(s.masks_dir / PREVIEW_NAME)
            return
        for text, finished in watch(s, job, progress):
            preview = str(s.masks_dir / PREVIEW_NAME) if finished is not None and finished.state == DONE else None
            yield text, preview if preview else gr.update()

    def run(index, x, y, w, h, editor, method, checkpoint, pretrained, steps, seed, dilation, window,
            request: gr.Request, progress=gr.Progress()):
        """Queue tracking (if needed) and inference, then show the result and offer the downloads."""
        s = session(request)
        settings = RunSettings(method, checkpoint or "", pretrained or "", steps, seed, dilation, window)
        try:
            job = submit(request, index, x, y, w, h, editor, settings)
        except FFFVDIError as err:
            yield f"error: {err}", gr.update(), gr.update(), gr.update()
            return
        for text, finished in watch(s, job, progress):
            if finished is None or finished.state != DONE:
                yield text, gr.update(), gr.update(), gr.update()
                continue
            out = finished.output
            files = [str(out / "inpainted.mp4")]
            try:
                files.append(str(zip_frames(out / "frames", s.new_dir("download") / "inpainted_frames.zip")))
            except FFFVDIError as err:
                text = f"done; {err}"
            yield text, files[0], files, str(s.masks_dir / PREVIEW_NAME)

    def cancel(request: gr.Request):
        """Stop this page's queued or running job."""
        s = session(request)
        if s.job_id is None or not jobs.cancel(s.job_id):
            return "nothing to cancel"
        return "cancelling..."

    def on_unload(request: gr.Request):
        """Tab closed or reloaded: stop its job and delete its folder."""
        key = request.session_hash
        if key in store:
            s = store.get(key)
            if s.job_id is not None:
                jobs.cancel(s.job_id)
            store.close(key)

    with gr.Blocks(title="fffvdi: video inpainting", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## fffvdi video inpainting\nUpload a clip, mark the object on any frame (box: click two "
                    "corners; or brush), preview the tracked masks, run, download.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Video (mp4/mov/avi) or zip of frames", file_types=list(UPLOAD_EXTS),
                                 type="filepath", elem_id="upload", height=120)
                slider = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="frame-slider")
                with gr.Row():
                    with gr.Column(min_width=200):
                        image = gr.Image(label="Box: click two corners", interactive=False, type="numpy",
                                         elem_id="frame-image")
                        pointer = gr.Textbox(visible=False)  # the frame pixel under the last click (POINTER_JS)
                        with gr.Row():
                            bx = gr.Number(None, label="x", precision=0, elem_id="box-x", min_width=80)
                            by = gr.Number(None, label="y", precision=0, elem_id="box-y", min_width=80)
                        with gr.Row():
                            bw = gr.Number(None, label="w", precision=0, elem_id="box-w", min_width=80)
                            bh = gr.Number(None, label="h", precision=0, elem_id="box-h", min_width=80)
                    with gr.Column(min_width=200):  # beside the box, not in a tab: a hidden editor draws nothing
                        editor = gr.ImageEditor(label="Or brush over the object (used instead of the box)",
                                                type="numpy", sources=(), format="png", layers=False, transforms=(),
                                                elem_id="brush", interactive=True,
                                                brush=gr.Brush(colors=["#ff4040"], color_mode="fixed"))
                track_btn = gr.Button("Preview tracked masks", elem_id="track")
            with gr.Column():
                method = gr.Radio(list(METHODS), value="propagate", label="Method", elem_id="method")
                with gr.Row():
                    checkpoint = gr.Textbox(label="fffvdi checkpoint (fine-tuned UNet folder)", elem_id="checkpoint")
                    pretrained = gr.Textbox(label="fffvdi base model (hub id or folder; empty = SVD-XT)")
                with gr.Row():
                    steps = gr.Number(25, label="Steps", precision=0, minimum=1, min_width=80)
                    seed = gr.Number(42, label="Seed", precision=0, minimum=0, min_width=80)
                    dilation = gr.Number(4, label="Mask dilation", precision=0, minimum=0, min_width=80)
                    window = gr.Number(25, label="Window frames", precision=0, minimum=2, min_width=80)
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                downloads = gr.File(label="Downloads: result mp4 and PNG frames zip", file_count="multiple",
                                    interactive=False, elem_id="downloads", height=120)
        with gr.Row():
            input_video = gr.Video(label="Input", interactive=False, elem_id="input-video")
            masks_video = gr.Video(label="Tracked masks", interactive=False, elem_id="masks-video")
            result_video = gr.Video(label="Result", interactive=False, elem_id="result-video")

        upload.change(on_upload, upload, [input_video, slider, image, editor, status], concurrency_limit=2)
        slider.release(on_frame, [slider, bx, by, bw, bh], [image, editor], concurrency_limit=None)
        slider.input(on_frame, [slider, bx, by, bw, bh], [image, editor], concurrency_limit=None,
                     trigger_mode="always_last")
        image.select(on_click, [slider, pointer], [image, bx, by, bw, bh], js=TAKE_POINTER_JS, concurrency_limit=None)
        for field in (bx, by, bw, bh):
            field.submit(on_box_fields, [slider, bx, by, bw, bh], image, concurrency_limit=None)
        ann_inputs = [slider, bx, by, bw, bh, editor]
        # The progress bar goes over the video it fills, not over the status line and downloads: they stay readable.
        track_btn.click(preview_masks, ann_inputs, [status, masks_video], concurrency_limit=None,
                        show_progress_on=masks_video)
        run_btn.click(run, [*ann_inputs, method, checkpoint, pretrained, steps, seed, dilation, window],
                      [status, result_video, downloads, masks_video], concurrency_limit=None,
                      show_progress_on=result_video)
        cancel_btn.click(cancel, None, status, concurrency_limit=None)
        demo.load(None, js=POINTER_JS)
        demo.unload(on_unload)
    return demo
