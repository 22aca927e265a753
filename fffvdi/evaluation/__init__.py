"""Evaluation harness of the STTN / E2FGVI / ProPainter protocol (PSNR, SSIM, VFID, E_warp) on DAVIS / YouTube-VOS."""
from fffvdi.evaluation.dataset import (
    DEFAULT_DILATE, DEFAULT_SIZE, EvalVideo, list_videos, load_eval_video, parse_size, read_result_frames,
)
from fffvdi.evaluation.harness import EvalOutcome, build_eval_method, run_evaluation, run_method
from fffvdi.evaluation.scoring import Scorer, aggregate, score_video, video_summary
from fffvdi.evaluation.settings import EVAL_METHODS, EvalSettings

__all__ = [
    "DEFAULT_DILATE",
    "DEFAULT_SIZE",
    "EVAL_METHODS",
    "EvalOutcome",
    "EvalSettings",
    "EvalVideo",
    "Scorer",
    "aggregate",
    "build_eval_method",
    "list_videos",
    "load_eval_video",
    "parse_size",
    "read_result_frames",
    "run_evaluation",
    "run_method",
    "score_video",
    "video_summary",
]
