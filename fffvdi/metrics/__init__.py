"""Video inpainting metrics of the STTN / E2FGVI / ProPainter protocol: PSNR, SSIM, VFID, E_warp (+ optional LPIPS)."""
from fffvdi.metrics.ewarp import WarpError, motion_boundary, pair_warping_errors, warping_error
from fffvdi.metrics.fid import feature_stats, frechet_distance, vfid
from fffvdi.metrics.i3d import I3D_FEATURE_DIM, InceptionI3D, i3d_features, load_i3d
from fffvdi.metrics.lpips_metric import load_lpips, lpips_distances
from fffvdi.metrics.psnr_ssim import PSNR_CAP_DB, frame_metrics, masked_psnr, mean_psnr, psnr, ssim

__all__ = [
    "I3D_FEATURE_DIM",
    "InceptionI3D",
    "PSNR_CAP_DB",
    "WarpError",
    "feature_stats",
    "frame_metrics",
    "frechet_distance",
    "i3d_features",
    "load_i3d",
    "load_lpips",
    "lpips_distances",
    "masked_psnr",
    "mean_psnr",
    "motion_boundary",
    "pair_warping_errors",
    "psnr",
    "ssim",
    "vfid",
    "warping_error",
]
