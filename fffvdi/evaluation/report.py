"""Evaluation output: per_video.csv, per_frame.csv, summary.json (metrics, config, commit, environment) and a table."""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy
import scipy
import skimage
import torch
import torchvision

from fffvdi.evaluation.scoring import EWARP_SCALE, video_summary

VIDEO_COLUMNS = ("video", "frames", "psnr", "ssim", "masked_psnr", "mask_ratio", "ewarp_x1e-3", "ewarp_gt_x1e-3",
                 "lpips", "sec_per_frame", "status")
FRAME_COLUMNS = ("video", "index", "frame", "psnr", "ssim", "masked_psnr", "mask_ratio", "lpips")


def _fmt(v: Any) -> Any:
    """CSV cell: floats with 6 significant digits, 'inf'/'nan' spelled out."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")
    return v


def write_csvs(out_dir: Path, records: list[dict[str, Any]], statuses: dict[str, str]) -> None:
    """Write `per_video.csv` and `per_frame.csv` (columns absent from every record are dropped)."""
    have_lpips = any("lpips" in r["per_frame"] for r in records)
    have_time = any(r.get("sec_per_frame") is not None for r in records)
    vcols = [c for c in VIDEO_COLUMNS if (c != "lpips" or have_lpips) and (c != "sec_per_frame" or have_time)]
    fcols = [c for c in FRAME_COLUMNS if c != "lpips" or have_lpips]
    with open(out_dir / "per_video.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, vcols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            row = {"video": r["video"], "status": statuses.get(r["video"], ""), **video_summary(r)}
            w.writerow({k: _fmt(v) for k, v in row.items()})
    with open(out_dir / "per_frame.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fcols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            pf = r["per_frame"]
            for i, name in enumerate(r["frame_names"]):
                row = {"video": r["video"], "index": i, "frame": name, **{k: v[i] for k, v in pf.items()}}
                w.writerow({k: _fmt(v) for k, v in row.items()})


def git_commit(repo: Path | None = None) -> str | None:
    """`git rev-parse HEAD` of the fffvdi checkout, or None (not a checkout, git missing)."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Python, platform and library versions, and the accelerator if any."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "scikit_image": skimage.__version__,
        "scipy": scipy.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(),
    }
    try:
        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return env


def _json_safe(obj: Any) -> Any:
    """Replace inf/nan floats by None so summary.json is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_summary(out_dir: Path, metrics: dict[str, Any], config: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write `summary.json`: metrics, the run's config, git commit, environment, date, plus `extra`."""
    summary = {
        "metrics": metrics,
        "config": config,
        "git_commit": git_commit(),
        "environment": environment(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    path = out_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def protocol_info(size: tuple[int, int] | None, dilate: int, flow: str, flow_source: str) -> dict[str, Any]:
    """How the numbers were computed, for summary.json."""
    return {
        "size_wh": list(size) if size else "native",
        "frame_resize": "cv2.INTER_LINEAR on RGB (ProPainter TestDataset)",
        "masks": f"nearest resize, > 0, 3x3 cross dilation x{dilate}",
        "composite": "prediction inside the dilated mask, ground truth outside",
        "psnr_ssim_average": "pooled over all frames of all videos (per-video means also given)",
        "ssim": "skimage structural_similarity, win_size 65, data_range 255, RGB",
        "ewarp_unit": f"x{1 / EWARP_SCALE:g}",
        "ewarp_flow": flow,
        "ewarp_flow_source": flow_source,
    }


def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(title: str, records: list[dict[str, Any]], metrics: dict[str, Any], notes: list[str]) -> str:
    """Plain-text table: one row per video, then the pooled and per-video-mean rows, then notes."""
    cols = [("frames", 0), ("psnr", 2), ("ssim", 4), ("masked_psnr", 2), ("ewarp_x1e-3", 3), ("ewarp_gt_x1e-3", 3)]
    if "lpips" in metrics:
        cols.append(("lpips", 4))
    if "sec_per_frame" in metrics:
        cols.append(("sec_per_frame", 3))
    heads = {"psnr": "PSNR", "ssim": "SSIM", "masked_psnr": "mPSNR", "ewarp_x1e-3": "Ewarp(x1e-3)",
             "ewarp_gt_x1e-3": "EwarpGT(x1e-3)", "lpips": "LPIPS", "sec_per_frame": "s/frame", "frames": "frames"}
    width = max([len(r["video"]) for r in records] + [16])
    lines = [title, f"{'video':<{width}}" + "".join(f"{heads[c]:>16}" for c, _ in cols)]
    for r in records:
        s = video_summary(r)
        lines.append(f"{r['video']:<{width}}" + "".join(f"{_cell(s.get(c), d):>16}" for c, d in cols))
    lines.append(f"{'ALL (frames)':<{width}}" + "".join(f"{_cell(metrics.get(c), d):>16}" for c, d in cols))
    means = {**metrics, "psnr": metrics.get("psnr_video_mean"), "ssim": metrics.get("ssim_video_mean"),
             "frames": None, "masked_psnr": None, "lpips": None}
    lines.append(f"{'mean of videos':<{width}}" + "".join(f"{_cell(means.get(c), d):>16}" for c, d in cols))
    vf = metrics.get("vfid")
    lines.append(f"VFID: {vf:.4f}" if vf is not None and not math.isnan(vf) else "VFID: skipped")
    lines.extend(notes)
    return "\n".join(lines)
