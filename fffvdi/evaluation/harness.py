"""The evaluation harness: score a results folder, or run a method on every test video and score it; resumable.

Output folder layout: `run.json` (the settings that determine the numbers), `videos/<video>.json`
(one record per finished video: per-frame scores, E_warp, I3D features), `results/<video>/`
(method mode: the composited frames that were scored), `per_video.csv`, `per_frame.csv`,
`summary.json`.

Resume semantics: a rerun into the same `--output` with the same settings (run.json: mode,
method and its resolved config or results folder, dataset root, size, mask dilation, flow model)
skips every video whose record exists (reported as skipped) and re-scores, without re-running the
method, a video whose saved results exist but whose record is missing or lacks a metric now asked
for (LPIPS, I3D features). Records are trusted as they are: after changing a --results folder,
rerun with `overwrite=True`. Summary and CSVs are rewritten over the videos of this invocation.
Different settings, or a non-empty folder that is not an evaluation run, are refused unless
`overwrite=True`, which recomputes every selected video and replaces its files.

Several processes (`accelerate launch`, fffvdi.shards): every process checks the input,
the main process alone writes `run.json`, then video i goes to process i % N (its record names that
`rank`); after a barrier the main process reads every record back from `videos/` and writes the
CSVs and summary exactly as one process does (a run may resume with another number of processes).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from fffvdi.errors import FFFVDIError, InputError
from fffvdi.evaluation.dataset import EvalVideo, list_videos, load_eval_video, read_result_frames
from fffvdi.evaluation.report import format_table, protocol_info, write_csvs, write_summary
from fffvdi.evaluation.run_folder import check_output, init_output, read_records, usable_record, write_json
from fffvdi.evaluation.scoring import Scorer, aggregate, score_video
from fffvdi.evaluation.settings import EvalSettings, build_scorer, check_settings, fingerprint, method_config
from fffvdi.inpaint.canvas import composite
from fffvdi.inpaint.methods import build_method
from fffvdi.io import png_name
from fffvdi.shards import agree, all_gather, process_state, rank_device, shard

@dataclass
class EvalOutcome:
    """What a run produced."""

    out_dir: Path
    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    statuses: dict[str, str]  # video -> evaluated | rescored | skipped
    table: str
    is_main: bool = True  # False on the other processes of a sharded run: no metrics, records or table there

    @property
    def skipped(self) -> list[str]:
        return [v for v, s in self.statuses.items() if s == "skipped"]


def build_eval_method(cfg) -> Callable:
    """Video-level runner of `cfg.method` (see fffvdi.inpaint.methods)."""
    return build_method(cfg)


def run_method(process: Callable, video: EvalVideo, cfg) -> tuple[np.ndarray, float]:
    """Inpaint one video with a video-level runner; returns the raw output `[F, H, W, 3]` and seconds per frame."""
    masked = video.frames * (1 - video.masks[..., None])  # the hole's content is never shown to the method
    out = np.empty_like(video.frames)

    def sink(first: int, frames: np.ndarray) -> None:
        out[first : first + len(frames)] = frames

    start = time.perf_counter()
    process(lambda a, b: masked[a:b], lambda a, b: video.masks[a:b], len(masked), sink, progress=False)
    return out, (time.perf_counter() - start) / len(out)


def _save_frames(folder: Path, frames: np.ndarray, names: list[str]) -> None:
    """Write PNGs named after the ground truth into `folder` atomically (tmp folder, then rename)."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for frame, name in zip(frames, names):
        if not cv2.imwrite(str(tmp / png_name(name)), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise InputError(f"cannot write {tmp / png_name(name)}; check that --output is writable and has space")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _evaluate_one(s: EvalSettings, name: str, out: Path, scorer: Scorer, cfg, method: dict,
                  rank: int = 0) -> tuple[dict, str]:
    """Score one video (running the method when its results are not saved yet); returns (record, status).
    The record names the process (`rank`) that scored it."""
    rec_path, res_dir = out / "videos" / f"{name}.json", out / "results" / name
    rec = None if s.overwrite else usable_record(rec_path, scorer)
    if rec is not None and (s.method is None or res_dir.is_dir()):
        return rec, "skipped"
    video = load_eval_video(s.dataset_root, name, s.size, s.mask_dilate)
    sec, status = None, "evaluated"
    if s.method is None:
        comp = composite(video.frames, read_result_frames(s.results, video), video.masks)
    elif res_dir.is_dir() and not s.overwrite:  # results saved, record missing or incomplete: score only
        comp = composite(video.frames, read_result_frames(out / "results", video), video.masks)
        sec = json.loads(rec_path.read_text(encoding="utf-8")).get("sec_per_frame") if rec_path.is_file() else None
        status = "rescored"
    else:
        if "process" not in method:  # built on first need: a fully resumed run never loads the model
            method["process"] = build_eval_method(cfg)
        pred, sec = run_method(method["process"], video, cfg)
        comp = composite(video.frames, pred, video.masks)
        _save_frames(res_dir, comp, video.frame_names)
    rec = {"video": name, "frame_names": video.frame_names, "sec_per_frame": sec, "rank": rank,
           **score_video(scorer, video.frames, comp, video.masks)}
    write_json(rec_path, rec)
    return rec, status


def _rank_config(cfg, state):
    """The method config this process runs: model.device 'auto'/'cuda' become its own device when sharded (the
    fingerprint keeps the config as given, so a run may resume with another number of processes)."""
    if cfg is None or state.num_processes == 1:
        return cfg
    device = rank_device(cfg.model.device, state)
    if device == cfg.model.device:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.model.device = device
    return cfg


def run_evaluation(s: EvalSettings, state=None) -> EvalOutcome:
    """Evaluate every selected video (resuming), then write the CSVs, summary.json and the table.

    With several processes (`state`, default accelerate's PartialState; see fffvdi.shards) each
    evaluates its share of the videos; after a barrier the main process merges every video's record into
    the CSVs and summary.json, as one process does. The other processes return an outcome with their
    statuses only (`is_main` False, no metrics or table)."""
    state = state if state is not None else process_state()
    rank, nproc = state.process_index, state.num_processes
    out = Path(s.output)
    error = None
    try:  # every process checks everything before any process writes
        check_settings(s)
        videos = list_videos(s.dataset_root, s.video_list)
        for name in videos:
            if Path(name).name != name or name in (".", ".."):
                raise InputError(f"video id {name!r} must be a plain folder name; fix the video list")
        cfg = method_config(s) if s.method else None
        run_fingerprint = fingerprint(s, cfg)
        scorer, notes = build_scorer(s, rank_device(s.device, state))  # a bad model fails before --output is touched
        check_output(out, run_fingerprint, s.overwrite)
    except FFFVDIError as err:
        error = err
    agree(state, error)  # one failing process: all fail with its message
    if state.is_main_process:
        init_output(out, run_fingerprint)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)  # up front: the user learns of a skipped column before waiting
    state.wait_for_everyone()
    run_cfg, method, mine = _rank_config(cfg, state), {}, shard(videos, rank, nproc)
    statuses: dict[str, str] = {}
    desc = "videos" if nproc == 1 else f"videos (process {rank}/{nproc})"
    try:
        for name in tqdm(mine, desc=desc, unit="video", disable=not s.progress):
            _, statuses[name] = _evaluate_one(s, name, out, scorer, run_cfg, method, rank)
    except FFFVDIError as err:
        error = err
    agree(state, error)  # also the barrier: every record is written
    gathered = {v: st for part in all_gather(state, statuses) for v, st in part.items()}
    statuses = {v: gathered[v] for v in videos}
    outcome = None
    if state.is_main_process:
        try:
            outcome = _merge(s, out, videos, statuses, scorer, notes, run_fingerprint, nproc)
        except FFFVDIError as err:
            error = err
    agree(state, error)  # the others wait for the merge, and fail with it
    return outcome if outcome is not None else EvalOutcome(out, {}, [], statuses, "", is_main=False)


def _merge(s: EvalSettings, out: Path, videos: list[str], statuses: dict[str, str], scorer: Scorer, notes: list[str],
           fingerprint: dict[str, Any], nproc: int) -> EvalOutcome:
    """Read every video's record back from `out/videos/` and write the CSVs, summary.json and the table."""
    records = read_records(out, videos)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = aggregate(records, want_vfid=scorer.i3d is not None)
    for w in caught:
        notes.append(str(w.message))
        warnings.warn(str(w.message), UserWarning, stacklevel=3)
    write_csvs(out, records, statuses)
    counts = {k: sum(v == k for v in statuses.values()) for k in ("evaluated", "rescored", "skipped")}
    title = (f"{s.method or f'results {s.results}'}: {metrics['videos']} videos, {metrics['frames']} frames | "
             f"PSNR/SSIM on composited frames | E_warp x1e-3 (flow {s.flow} on "
             f"{'ground truth' if s.ewarp_flow_source == 'gt' else 'output'}) | {counts['evaluated']} evaluated, "
             f"{counts['rescored']} rescored, {counts['skipped']} skipped (resume)")
    table = format_table(title, records, metrics, notes)
    protocol = protocol_info(s.size, s.mask_dilate, s.flow, s.ewarp_flow_source)
    extra = {"run_counts": counts, "videos": videos, "processes": nproc, "notes": notes, "protocol": protocol}
    write_summary(out, metrics, {"settings": asdict(s), "run": fingerprint}, extra)
    return EvalOutcome(out, metrics, records, statuses, table)
